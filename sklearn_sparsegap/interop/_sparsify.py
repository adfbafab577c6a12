"""EleutherAI sparsify checkpoints: one folder per hookpoint with ``cfg.json`` +
``sae.safetensors``.

Tensors: ``encoder.weight (num_latents, d_in)``, ``encoder.bias (num_latents)``,
``W_dec (num_latents, d_in)``, ``b_dec (d_in)``, optionally ``W_skip (d_in, d_in)``;
often stored in bfloat16. sparsify encodes ``topk(relu(encoder(x - b_dec)), k)`` and
decodes ``sum(top_acts * W_dec[top_indices]) + b_dec``.
"""

from pathlib import Path

import numpy as np

from ._build import SAEWeights
from ._io import (
    check_finite,
    check_shape,
    check_tensor_names,
    config_int,
    read_json,
    read_safetensors,
    write_json,
    write_safetensors,
)

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def read(folder):
    """The :class:`SAEWeights` of the sparsify checkpoint in ``folder``."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    config = read_json(config_path)
    tensors = read_safetensors(weights_path)
    activation = config.get("activation", "topk")
    if activation != "topk":
        raise ValueError(
            f"{config_path}: activation={activation!r} is not supported (sparsify's "
            "'groupmax' keeps the largest latent of each group, which no TopK, ReLU or "
            "JumpReLU encoder represents); only 'topk' is."
        )
    for flag, why in (
        ("transcode", "a transcoder predicts another activation, it is not an autoencoder"),
        ("skip_connection", "its linear skip connection W_skip has no equivalent"),
        ("signed", "signed TopK keeps negative activations"),
    ):
        if config.get(flag, False):
            raise ValueError(f"{config_path}: {flag}=True is not supported ({why}).")
    d_in = config_int(config, "d_in", config_path)
    n_latents = config.get("num_latents") or d_in * config_int(
        config, "expansion_factor", config_path, default=32
    )
    k = config_int(config, "k", config_path, default=32)
    check_tensor_names(tensors, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], [], weights_path)
    check_finite(tensors, weights_path)
    check_shape(tensors["encoder.weight"], (n_latents, d_in), "encoder.weight", weights_path)
    check_shape(tensors["encoder.bias"], (n_latents,), "encoder.bias", weights_path)
    check_shape(tensors["b_dec"], (d_in,), "b_dec", weights_path)
    decoder = tensors["W_dec"]
    # sparsify stores (num_latents, d_in); converted copies are often transposed
    # (SAELens's own sparsify loader does so): decide by the shape.
    if decoder.shape == (d_in, n_latents) and d_in != n_latents:
        decoder = decoder.T
    check_shape(decoder, (n_latents, d_in), "W_dec", weights_path)
    return SAEWeights(
        encoder_weight=tensors["encoder.weight"],
        encoder_bias=tensors["encoder.bias"],
        decoder_weight=np.array(decoder),
        decoder_bias=tensors["b_dec"],
        activation="topk",
        k=k,
    )


def write(weights, folder):
    """Write a TopK ``weights`` as a sparsify checkpoint in ``folder``."""
    if weights.activation != "topk":
        raise ValueError(
            f"sparsify stores TopK SAEs only; this estimator has "
            f"activation={weights.activation!r}."
        )
    folder = Path(folder)
    n_components, n_features = weights.decoder_weight.shape
    norms = np.linalg.norm(weights.decoder_weight, axis=1)
    config = {
        "activation": "topk",
        "expansion_factor": max(1, n_components // n_features),
        "normalize_decoder": bool(np.allclose(norms, 1.0, atol=1e-5)),
        "num_latents": n_components,
        "k": int(weights.k),
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": n_features,
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(
        {
            "encoder.weight": weights.encoder_weight,
            "encoder.bias": weights.encoder_bias,
            "W_dec": weights.decoder_weight,
            "b_dec": weights.decoder_bias,
        },
        folder / WEIGHTS_FILE,
    )
    write_json(config, folder / CONFIG_FILE)
