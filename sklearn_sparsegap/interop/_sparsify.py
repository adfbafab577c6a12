"""EleutherAI sparsify checkpoints: one folder per hookpoint with ``cfg.json`` +
``sae.safetensors``.

Tensors: ``encoder.weight (num_latents, d_in)``, ``encoder.bias (num_latents)``,
``W_dec (num_latents, d_in)``, ``b_dec (d_in)``, optionally ``W_skip (d_in, d_in)``;
often stored in bfloat16. sparsify encodes ``topk(relu(encoder(x - b_dec)), k)`` (``x``
as it is when ``transcode``) and decodes ``sum(top_acts * W_dec[top_indices]) + b_dec``,
plus ``x @ W_skip.T`` with ``skip_connection``. Its outputs have the input's width
``d_in``, transcoders included.
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
    """The :class:`SAEWeights` of the sparsify checkpoint in ``folder``: a TopK SAE, or a
    transcoder for ``transcode=True`` or ``skip_connection=True``."""
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
    if config.get("signed", False):
        raise ValueError(
            f"{config_path}: signed=True is not supported (signed TopK keeps negative "
            "activations)."
        )
    transcode, skip = bool(config.get("transcode", False)), bool(config.get("skip_connection", False))
    d_in = config_int(config, "d_in", config_path)
    n_latents = config.get("num_latents") or d_in * config_int(
        config, "expansion_factor", config_path, default=32
    )
    k = config_int(config, "k", config_path, default=32)
    names = ["encoder.weight", "encoder.bias", "W_dec", "b_dec"]
    check_tensor_names(tensors, names + ["W_skip"] * skip, [], weights_path)
    check_finite(tensors, weights_path)
    check_shape(tensors["encoder.weight"], (n_latents, d_in), "encoder.weight", weights_path)
    check_shape(tensors["encoder.bias"], (n_latents,), "encoder.bias", weights_path)
    check_shape(tensors["b_dec"], (d_in,), "b_dec", weights_path)
    if skip:
        check_shape(tensors["W_skip"], (d_in, d_in), "W_skip", weights_path)
    decoder = tensors["W_dec"]
    # sparsify stores (num_latents, d_in); converted copies are often transposed
    # (SAELens's own sparsify loader does so): decide by the shape.
    if decoder.shape == (d_in, n_latents) and d_in != n_latents:
        decoder = decoder.T
    check_shape(decoder, (n_latents, d_in), "W_dec", weights_path)
    encoder_bias = tensors["encoder.bias"]
    if skip and not transcode:
        # An autoencoder with a skip: our transcoder (which reads x as it is) of Y = X,
        # with the subtracted b_dec moved into the encoder bias.
        encoder_bias = encoder_bias - tensors["encoder.weight"] @ tensors["b_dec"]
    return SAEWeights(
        encoder_weight=tensors["encoder.weight"],
        encoder_bias=encoder_bias,
        decoder_weight=np.array(decoder),
        decoder_bias=tensors["b_dec"],
        activation="topk",
        k=k,
        transcoder=transcode or skip,
        skip_weight=tensors.get("W_skip"),
    )


def write(weights, folder):
    """Write a TopK ``weights`` (an SAE, or a transcoder whose outputs have the input's
    width) as a sparsify checkpoint in ``folder``."""
    kind = "TopK transcoders" if weights.transcoder else "TopK SAEs"
    if weights.activation != "topk":
        raise ValueError(
            f"sparsify stores {kind} only; this estimator has "
            f"activation={weights.activation!r}."
        )
    n_components, n_features = weights.encoder_weight.shape
    n_outputs = weights.decoder_weight.shape[1]
    if n_outputs != n_features:
        raise ValueError(
            f"sparsify's transcoders predict an output of their input's width (d_in), but "
            f"this transcoder has n_outputs={n_outputs} for n_features={n_features}; save "
            "it in the SAELens format (which has d_out) instead."
        )
    folder = Path(folder)
    norms = np.linalg.norm(weights.decoder_weight, axis=1)
    config = {
        "activation": "topk",
        "expansion_factor": max(1, n_components // n_features),
        "normalize_decoder": bool(np.allclose(norms, 1.0, atol=1e-5)),
        "num_latents": n_components,
        "k": int(weights.k),
        "multi_topk": False,
        "skip_connection": weights.skip_weight is not None,
        "transcode": weights.transcoder,
        "d_in": n_features,
    }
    tensors = {
        "encoder.weight": weights.encoder_weight,
        "encoder.bias": weights.encoder_bias,
        "W_dec": weights.decoder_weight,
        "b_dec": weights.decoder_bias,
    }
    if weights.skip_weight is not None:
        tensors["W_skip"] = weights.skip_weight
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(tensors, folder / WEIGHTS_FILE)
    write_json(config, folder / CONFIG_FILE)
