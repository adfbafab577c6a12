"""The one numpy <-> torch boundary.

Device resolution, the dtype policy, seeded generators and conversions live here and
nowhere else, so every estimator converts data the same way.
"""

import contextlib

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = [
    "DEVICE_MEMORY_FRACTION",
    "device_rows",
    "resolve_device",
    "is_half",
    "serial_if_small",
    "state_to_cpu",
    "state_to_numpy",
    "state_to_torch",
    "torch_dtype",
    "numpy_dtype",
    "make_generator",
    "to_tensor",
    "to_numpy",
]

_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}


def resolve_device(device="auto"):
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a :class:`torch.device`.

    ``"auto"`` means CUDA when available, else CPU. Asking for CUDA on a machine without
    it raises a ``ValueError`` that says so.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        ) from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine; use device='cpu' or device='auto'."
        )
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} was requested but only "
            f"{torch.cuda.device_count()} CUDA device(s) are available."
        )
    return resolved


def is_half(dtype):
    """Whether ``dtype`` is a 16-bit float: numpy's float16 or ml_dtypes' bfloat16."""
    dtype = np.dtype(dtype)
    return (dtype.kind == "f" and dtype.itemsize == 2) or dtype.name == "bfloat16"


def numpy_dtype(dtype):
    """The dtype data of numpy ``dtype`` is computed (and returned) in.

    float32 stays float32, and 16-bit floats (float16, bfloat16: activation sets are
    often stored so) are computed in float32 -- float64 would move and multiply four
    times their bytes for precision they never had. Everything else (float64, ints,
    bools) is computed in float64, scikit-learn's rule.
    """
    dtype = np.dtype(dtype)
    # Compare kind and size, not dtype equality, so big-endian float32 stays float32.
    if (dtype.kind == "f" and dtype.itemsize == 4) or is_half(dtype):
        return np.float32
    return np.float64


def torch_dtype(dtype):
    """The torch dtype used to compute on data of numpy ``dtype``."""
    return _DTYPES[np.dtype(numpy_dtype(dtype))]


def make_generator(random_state):
    """A CPU :class:`torch.Generator` seeded from a scikit-learn ``random_state``.

    Random draws are made on the CPU and then moved, so a given seed gives the same
    initialisation whatever the device.
    """
    try:
        random_state = check_random_state(random_state)
    except ValueError as exc:
        raise ValueError(f"random_state: {exc}") from exc
    seed = random_state.randint(np.iinfo(np.int32).max)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator


def to_tensor(array, *, device, dtype=None):
    """Copy a numpy array (read-only or not) into a new tensor on ``device``.

    Always copies, so the caller's array is never modified through the tensor.
    """
    array = np.asarray(array)
    if dtype is None:
        dtype = torch_dtype(array.dtype)
    elif not isinstance(dtype, torch.dtype):
        dtype = torch_dtype(dtype)
    # One fresh, writable, C-ordered, native-byte-order copy in the target dtype: torch
    # cannot wrap negative strides (``X[::-1]``) or non-native byte order, and the
    # caller's array must never share memory with the tensor.
    try:
        target = torch.empty((), dtype=dtype).numpy().dtype
    except TypeError:  # a torch dtype without a numpy twin (bfloat16): cast in torch
        copy = np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)
        return torch.from_numpy(copy).to(device=device, dtype=dtype)
    copy = np.array(array, dtype=target, order="C", copy=True)
    return torch.from_numpy(copy).to(device)


def to_numpy(tensor):
    """A detached CPU numpy copy of ``tensor``."""
    return tensor.detach().to("cpu").numpy().copy()


# The fraction of a CUDA device's free memory one block of work may take (the rows of X
# and the arrays computed from them): the rest is left to the weights, the allocator's
# cache and whatever else runs on the device. Lower it when sharing a GPU.
DEVICE_MEMORY_FRACTION = 0.25


def device_rows(device, bytes_per_row, *, free_bytes=None):
    """How many rows of ``bytes_per_row`` a block may hold on ``device``.

    On CUDA, as many as fit in ``DEVICE_MEMORY_FRACTION`` of ``free_bytes`` (default:
    the device's free memory now), at least one. None on the CPU, where an in-memory
    array is already in host memory and is computed on whole (as before).

    Parameters
    ----------
    device : str or torch.device
    bytes_per_row : int
        The bytes one row takes on the device, its input and the arrays computed from it.
    free_bytes : int, default=None
        The free memory to size from (None: ``torch.cuda.mem_get_info``).

    Returns
    -------
    rows : int or None

    Examples
    --------
    >>> from sklearn_sparsegap._torch_utils import device_rows
    >>> device_rows("cpu", 4096) is None
    True
    >>> device_rows("cuda", 1000, free_bytes=10**6)
    250
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return max(1, int(DEVICE_MEMORY_FRACTION * free_bytes) // max(1, int(bytes_per_row)))


# Below this many FLOPs per iteration a loop runs on one CPU thread (as scikit-learn's
# k-means limits BLAS threads for small blocks): work this small gains nothing from a
# second thread, and waking a thread team for it costs milliseconds when the other core
# is busy.
MIN_PARALLEL_FLOPS = 2**24


@contextlib.contextmanager
def serial_if_small(device, iteration_flops):
    """Run the enclosed loop on one CPU thread when one iteration is too small to share.

    The previous thread count is restored on exit. No effect on CUDA devices.
    """
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads == 1 or iteration_flops >= MIN_PARALLEL_FLOPS:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def state_to_cpu(state):
    """A (nested: dicts, lists, tuples) state with every tensor copied to the CPU.

    What a checkpoint saves, so that it loads on any machine and resumes on any device:
    the loader moves each tensor back to the device of the fit (``copy_``,
    ``load_state_dict``). Tensors already on the CPU are cloned all the same, so the
    saved state never aliases live training state.
    """
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        copy = {key: state_to_cpu(value) for key, value in state.items()}
        if hasattr(state, "_metadata"):  # a module's state_dict: keep its versions
            copy = type(state)(copy)
            copy._metadata = state._metadata
        return copy
    if type(state) in (list, tuple):
        return type(state)(state_to_cpu(value) for value in state)
    return state


def state_to_numpy(state):
    """A (nested) optimizer state with tensors replaced by CPU numpy arrays.

    Keeps fitted estimators picklable and loadable on machines without the device.
    """
    if isinstance(state, torch.Tensor):
        return to_numpy(state)
    if isinstance(state, dict):
        return {key: state_to_numpy(value) for key, value in state.items()}
    if isinstance(state, list):
        return [state_to_numpy(value) for value in state]
    return state


def state_to_torch(state, device):
    """Inverse of :func:`state_to_numpy`: arrays become tensors on ``device``."""
    if isinstance(state, np.ndarray):
        return torch.tensor(state, device=device)
    if isinstance(state, dict):
        return {key: state_to_torch(value, device) for key, value in state.items()}
    if isinstance(state, list):
        return [state_to_torch(value, device) for value in state]
    return state
