"""dictionary_learning (saprmarks) checkpoints: ``ae.pt`` (a ``torch.save``-d state dict)
+ ``config.json`` (``{"trainer": {"dict_class": ..., "activation_dim": ...,
"dict_size": ..., "k": ...}, "buffer": {...}}``).

The state dict depends on ``dict_class`` (``nn.Linear`` weights are ``(out, in)``):

- ``AutoEncoder``: ``bias``, ``encoder.weight``, ``encoder.bias``, ``decoder.weight``;
  ``relu(encoder(x - bias))``, ``decoder(f) + bias``.
- ``AutoEncoderNew``: ``encoder.weight/bias``, ``decoder.weight/bias``; no input shift.
- ``GatedAutoEncoder``: ``decoder_bias``, ``encoder.weight``, ``r_mag``, ``gate_bias``,
  ``mag_bias``, ``decoder.weight``.
- ``AutoEncoderTopK`` / ``BatchTopKSAE``: ``encoder.weight/bias``, ``decoder.weight``,
  ``b_dec``, buffers ``k`` and ``threshold``.
- ``MatryoshkaBatchTopKSAE``: ``W_enc (d_in, dict)``, ``b_enc``, ``W_dec (dict, d_in)``,
  ``b_dec``, ``k``, ``threshold``, ``group_sizes``.
- ``JumpReluAutoEncoder``: ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, ``threshold``;
  ``b_dec`` is not subtracted from the input.

The training loop folds its activation normalisation into the biases before saving
(``scale_biases``), so the saved model works on raw activations.
"""

from pathlib import Path

import numpy as np
import torch

from ._build import SAEWeights
from ._io import (
    check_finite,
    check_shape,
    check_tensor_names,
    read_json,
    read_torch_state_dict,
    tensor_to_numpy,
    write_json,
)

WEIGHTS_FILE = "ae.pt"
CONFIG_FILE = "config.json"

_TENSORS = {
    "AutoEncoder": ["bias", "encoder.weight", "encoder.bias", "decoder.weight"],
    "AutoEncoderNew": ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"],
    "GatedAutoEncoder": [
        "decoder_bias", "encoder.weight", "r_mag", "gate_bias", "mag_bias", "decoder.weight",
    ],
    "AutoEncoderTopK": ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"],
    "BatchTopKSAE": ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"],
    "MatryoshkaBatchTopKSAE": ["W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"],
    "JumpReluAutoEncoder": ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"],
}


def _scalar(value, name, path):
    if np.size(value) != 1:
        raise ValueError(f"{path}: tensor {name!r} must hold one number, has shape {np.shape(value)}.")
    return np.asarray(value).reshape(-1)[0].item()


def _linear_parts(tensors, dict_class):
    """(encoder rows (dict, d_in), encoder bias, decoder rows (dict, d_in)) in our form."""
    if "W_enc" in tensors:
        return tensors["W_enc"].T.copy(), tensors["b_enc"].copy(), tensors["W_dec"].copy()
    bias = tensors["encoder.bias"].copy() if "encoder.bias" in tensors else None
    return tensors["encoder.weight"].copy(), bias, tensors["decoder.weight"].T.copy()


def read(folder):
    """The :class:`SAEWeights` of the dictionary_learning checkpoint in ``folder``.

    ``AutoEncoder`` decoders are renormalised to unit-norm atoms (the encoder rescaled
    to keep every reconstruction), as the library's own ``load_dictionary`` does.
    """
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    trainer = _read_trainer(config_path)
    dict_class = trainer["dict_class"]
    tensors = _read_tensors(weights_path, dict_class)
    encoder, bias, decoder = _linear_parts(tensors, dict_class)
    n_latents, d_in = encoder.shape
    for key, expected in (("activation_dim", d_in), ("dict_size", n_latents)):
        if key in trainer and trainer[key] != expected:
            raise ValueError(
                f"{config_path}: {key}={trainer[key]} but {weights_path} holds an SAE with "
                f"{d_in} input features and {n_latents} latents."
            )
    check_shape(decoder, (n_latents, d_in), "decoder", weights_path)
    if dict_class == "AutoEncoderTopK" and "k" in trainer and trainer["k"] != int(tensors["k"]):
        raise ValueError(
            f"{config_path}: k={trainer['k']} but {weights_path} has k={int(tensors['k'])}."
        )
    return _dict_class_weights(dict_class, tensors, encoder, bias, decoder, weights_path)


def _read_trainer(config_path):
    """The config's ``trainer`` object, with a supported ``dict_class``."""
    trainer = read_json(config_path).get("trainer")
    if not isinstance(trainer, dict) or "dict_class" not in trainer:
        raise ValueError(f"{config_path}: expected a 'trainer' object with a 'dict_class'.")
    if trainer["dict_class"] not in _TENSORS:
        raise ValueError(
            f"{config_path}: dict_class={trainer['dict_class']!r} is not supported (supported: "
            f"{sorted(_TENSORS)})."
        )
    return trainer


def _read_tensors(weights_path, dict_class):
    """The state dict as numpy arrays: the names of ``dict_class``, all finite."""
    state = read_torch_state_dict(weights_path)
    if "ae" in state and "optimizer" in state:
        raise ValueError(
            f"{weights_path}: this is a training backup (keys 'step', 'ae', 'optimizer'), "
            "written during training with the weights still in normalised units; use the "
            "final ae.pt or a checkpoints/ae_<step>.pt file."
        )
    tensors = {name: tensor_to_numpy(value, name, weights_path) for name, value in state.items()}
    check_tensor_names(tensors, _TENSORS[dict_class], [], weights_path)
    check_finite(tensors, weights_path)
    return tensors


def _dict_class_weights(dict_class, tensors, encoder, bias, decoder, weights_path):
    """The :class:`SAEWeights` that encode and decode as ``dict_class`` does."""
    n_latents, d_in = encoder.shape
    activation, k, threshold, prefixes = "relu", None, None, None
    magnitude = (None, None)
    if dict_class == "AutoEncoder":
        b_dec = tensors["bias"]
        norms = np.linalg.norm(decoder, axis=1)
        if np.all(norms > 0):
            decoder /= norms[:, None]
            encoder *= norms[:, None]
            bias *= norms
    elif dict_class == "AutoEncoderNew":
        # relu(W x + b): the decoder bias is not subtracted, so it joins the encoder bias.
        b_dec = tensors["decoder.bias"]
        bias = bias + encoder @ b_dec
    elif dict_class == "GatedAutoEncoder":
        # gate [u + gate_bias > 0], magnitude relu(exp(r_mag) u + mag_bias), u = W (x - b):
        # our gated SAE, parameter for parameter.
        b_dec = tensors["decoder_bias"]
        bias = tensors["gate_bias"].copy()
        magnitude = (tensors["r_mag"].copy(), tensors["mag_bias"].copy())
        activation = "gated"
    elif dict_class == "AutoEncoderTopK":
        b_dec = tensors["b_dec"]
        activation, k = "topk", int(tensors["k"])
    elif dict_class == "JumpReluAutoEncoder":
        b_dec = tensors["b_dec"]
        bias = bias + encoder @ b_dec  # its encoder does not subtract b_dec
        threshold = tensors["threshold"]
        activation = "jumprelu"
    else:  # BatchTopKSAE, MatryoshkaBatchTopKSAE
        b_dec = tensors["b_dec"]
        # Their encode (use_threshold=True, the default) keeps relu(pre) > threshold: a
        # JumpReLU at one global threshold, our BatchTopK at inference; before one is
        # learned (-1) their encode is a plain ReLU, and so is ours.
        global_threshold = _scalar(tensors["threshold"], "threshold", weights_path)
        if global_threshold >= 0:
            activation, k = "batchtopk", int(_scalar(tensors["k"], "k", weights_path))
            threshold = np.full(n_latents, global_threshold)
            if "group_sizes" in tensors:
                prefixes = _group_prefixes(tensors["group_sizes"], n_latents, weights_path)
    check_shape(bias, (n_latents,), "encoder bias", weights_path)
    check_shape(b_dec, (d_in,), "decoder bias", weights_path)
    return SAEWeights(
        encoder_weight=encoder,
        encoder_bias=bias,
        decoder_weight=decoder,
        decoder_bias=np.array(b_dec),
        activation=activation,
        k=k,
        threshold=threshold,
        prefixes=prefixes,
        magnitude_log_scale=magnitude[0],
        magnitude_bias=magnitude[1],
    )


def _group_prefixes(group_sizes, n_latents, path):
    """A Matryoshka SAE's nested widths: the cumulative sums of its ``group_sizes``."""
    sizes = np.asarray(group_sizes).reshape(-1).astype(np.int64)
    if sizes.size == 0 or np.any(sizes <= 0) or sizes.sum() != n_latents:
        raise ValueError(
            f"{path}: group_sizes={sizes.tolist()} must be positive and sum to the "
            f"{n_latents} latents."
        )
    return tuple(int(width) for width in np.cumsum(sizes))


def write(weights, folder):
    """Write ``weights`` as a dictionary_learning checkpoint in ``folder``."""
    if weights.transcoder:
        raise ValueError(
            "dictionary_learning has no transcoders (every dict_class reconstructs its "
            "own input), so an SAETranscoder cannot be saved in its format; use the "
            "SAELens or sparsify format."
        )
    folder = Path(folder)
    n_components, n_features = weights.decoder_weight.shape

    def tensor(value):
        return torch.as_tensor(np.ascontiguousarray(value), dtype=torch.float32)

    trainer = {"activation_dim": n_features, "dict_size": n_components}
    if weights.activation == "relu":
        trainer.update(dict_class="AutoEncoder", trainer_class="StandardTrainer")
        state = {
            "bias": tensor(weights.decoder_bias),
            "encoder.weight": tensor(weights.encoder_weight),
            "encoder.bias": tensor(weights.encoder_bias),
            "decoder.weight": tensor(weights.decoder_weight.T),
        }
    elif weights.activation == "topk":
        trainer.update(dict_class="AutoEncoderTopK", trainer_class="TopKTrainer", k=int(weights.k))
        state = {
            "k": torch.tensor(int(weights.k), dtype=torch.int),
            "threshold": torch.tensor(-1.0, dtype=torch.float32),
            "decoder.weight": tensor(weights.decoder_weight.T),
            "encoder.weight": tensor(weights.encoder_weight),
            "encoder.bias": tensor(weights.encoder_bias),
            "b_dec": tensor(weights.decoder_bias),
        }
    elif weights.activation == "batchtopk" and weights.prefixes is not None:
        prefixes = (0, *weights.prefixes)
        trainer.update(dict_class="MatryoshkaBatchTopKSAE",
                       trainer_class="MatryoshkaBatchTopKTrainer", k=int(weights.k))
        state = {
            "k": torch.tensor(int(weights.k), dtype=torch.int),
            "threshold": torch.tensor(float(weights.threshold[0]), dtype=torch.float32),
            "group_sizes": torch.tensor(np.diff(prefixes), dtype=torch.int64),
            "W_enc": tensor(weights.encoder_weight.T),
            "b_enc": tensor(weights.encoder_bias),
            "W_dec": tensor(weights.decoder_weight),
            "b_dec": tensor(weights.decoder_bias),
        }
    elif weights.activation == "batchtopk":
        trainer.update(dict_class="BatchTopKSAE", trainer_class="BatchTopKTrainer",
                       k=int(weights.k))
        state = {
            "k": torch.tensor(int(weights.k), dtype=torch.int),
            "threshold": torch.tensor(float(weights.threshold[0]), dtype=torch.float32),
            "decoder.weight": tensor(weights.decoder_weight.T),
            "encoder.weight": tensor(weights.encoder_weight),
            "encoder.bias": tensor(weights.encoder_bias),
            "b_dec": tensor(weights.decoder_bias),
        }
    elif weights.activation == "gated":
        trainer.update(dict_class="GatedAutoEncoder", trainer_class="GatedSAETrainer")
        state = {
            "decoder_bias": tensor(weights.decoder_bias),
            "encoder.weight": tensor(weights.encoder_weight),
            "r_mag": tensor(weights.magnitude_log_scale),
            "gate_bias": tensor(weights.encoder_bias),
            "mag_bias": tensor(weights.magnitude_bias),
            "decoder.weight": tensor(weights.decoder_weight.T),
        }
    else:
        trainer.update(dict_class="JumpReluAutoEncoder", trainer_class="JumpReluTrainer")
        # Its encoder does not subtract b_dec: move that shift into b_enc.
        state = {
            "W_enc": tensor(weights.encoder_weight.T),
            "b_enc": tensor(weights.encoder_bias - weights.encoder_weight @ weights.decoder_bias),
            "W_dec": tensor(weights.decoder_weight),
            "b_dec": tensor(weights.decoder_bias),
            "threshold": tensor(weights.threshold),
        }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / WEIGHTS_FILE)
    write_json({"trainer": trainer, "buffer": {}}, folder / CONFIG_FILE)
