"""File reading shared by the format modules: JSON configs, safetensors (never pickle)
and ``torch.load(weights_only=True)``, each failure a ``ValueError`` naming the file."""

import json
from pathlib import Path

import numpy as np
import torch


def read_json(path):
    """The JSON object in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found.")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}.")
    return value


def write_json(value, path):
    Path(path).write_text(json.dumps(value, indent=2) + "\n")


def read_safetensors(path):
    """The tensors of a safetensors file as float64 numpy arrays (bfloat16 included).

    Read with the ``safetensors`` package, which parses a JSON header and raw buffers
    and never executes anything from the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found.")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: not a readable safetensors file ({exc}); pickle checkpoints are "
            "never loaded in its place."
        ) from exc
    return {name: tensor_to_numpy(tensor, name, path) for name, tensor in tensors.items()}


def write_safetensors(tensors, path, dtype=torch.float32):
    """Write numpy arrays (cast to ``dtype``) as a safetensors file."""
    from safetensors.torch import save_file

    save_file(
        {
            name: torch.as_tensor(np.array(value)).to(dtype).contiguous()
            if np.issubdtype(np.asarray(value).dtype, np.floating)
            else torch.as_tensor(np.array(value)).contiguous()
            for name, value in tensors.items()
        },
        str(path),
    )


def read_torch_state_dict(path):
    """A ``torch.save``-d dict of tensors, loaded with ``weights_only=True`` (PyTorch's
    restricted unpickler: tensors, containers and numbers only, no arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found.")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the restricted unpickler raises several types
        raise ValueError(
            f"{path}: could not be read with torch.load(weights_only=True) ({exc}); "
            "only plain state dicts of tensors are loaded."
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}.")
    return state


def tensor_to_numpy(tensor, name, path):
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor.")
    if tensor.is_floating_point():
        return tensor.detach().to(torch.float64).numpy()
    return tensor.detach().numpy()


def check_tensor_names(tensors, required, optional, path):
    """Raise on a missing or an unexpected tensor, naming the file and the tensor."""
    missing = [name for name in required if name not in tensors]
    if missing:
        raise ValueError(
            f"{path}: missing tensor(s) {missing}; found {sorted(tensors)}."
        )
    extra = sorted(set(tensors) - set(required) - set(optional))
    if extra:
        raise ValueError(
            f"{path}: unexpected tensor(s) {extra} for this architecture "
            f"(expected {sorted(required)}"
            + (f", optionally {sorted(optional)}" if optional else "")
            + ")."
        )


def check_shape(array, shape, name, path):
    if array.shape != tuple(shape):
        raise ValueError(
            f"{path}: tensor {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}."
        )


def check_finite(tensors, path):
    for name, value in tensors.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ValueError(f"{path}: tensor {name!r} has NaN or infinite values.")


def config_int(config, key, path, default=None):
    value = config.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or (
        int(value) != value
    ):
        raise ValueError(f"{path}: field {key!r} must be an integer, got {value!r}.")
    return int(value)
