"""SAELens checkpoints: ``cfg.json`` + ``sae_weights.safetensors`` (+ ``activation_scaler.json``).

Tensors (SAELens orientation): ``W_enc (d_in, d_sae)``, ``b_enc (d_sae)``,
``W_dec (d_sae, d_in)``, ``b_dec (d_in)``; JumpReLU adds ``threshold`` (a training
checkpoint stores ``log_threshold``); gated SAEs have ``b_gate``, ``b_mag``, ``r_mag``
instead of ``b_enc``; a BatchTopK training checkpoint stores a scalar ``topk_threshold``.
SAELens encodes ``act((norm(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)`` and
decodes ``unnorm(f @ W_dec + b_dec)``.

Transcoders (``saes/transcoder.py``: ``transcoder``, ``skip_transcoder``,
``jumprelu_transcoder``, ``jumprelu_skip_transcoder``) decode into another activation of
``d_out`` columns: ``W_dec (d_sae, d_out)``, ``b_dec (d_out)``, and the skip ones
``W_skip (d_out, d_in)``; they encode ``act(norm(x) @ W_enc + b_enc)`` (their config
refuses ``apply_b_dec_to_input=True``) and predict ``f @ W_dec + b_dec (+ x @ W_skip.T)``.

Matching-pursuit SAEs (``saes/matching_pursuit_sae.py``, ``matching_pursuit``) store
``W_dec`` and ``b_dec`` only (their encoder is tied to the decoder) and the pursuit's
stopping rule in the config (``residual_threshold``, ``max_iterations``,
``stop_on_duplicate_support``); they encode ``MP(norm(x) - b_dec * a)`` and decode ``f @
W_dec + b_dec * a`` (``a = apply_b_dec_to_input``: without it ``b_dec`` is not used).
"""

from pathlib import Path

import numpy as np

from ._build import MatchingPursuitWeights, SAEWeights, fold_input_scale, unit_norm_rows
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
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"
# The config layout written by save_sae: SAELens reads configs without a version (or
# older than 6.0) through its pre-6.0 converter, so the format version is stated.
_FORMAT_VERSION = "6.0.0"

MATCHING_PURSUIT = "matching_pursuit"
# MatchingPursuitSAEConfig's defaults, for configs that leave a field out.
_MP_DEFAULTS = {"residual_threshold": 1e-2, "max_iterations": None,
                "stop_on_duplicate_support": True}  # fmt: skip

# SAELens's transcoder architectures: (activation, has W_skip).
TRANSCODERS = {
    "transcoder": ("relu", False),
    "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", False),
    "jumprelu_skip_transcoder": ("jumprelu", True),
}

_PRE_6_RENAMES = {
    "hook_point": "hook_name",
    "hook_point_head_index": "hook_head_index",
    "activation_fn_str": "activation_fn",
}


def _version_tuple(version):
    parts = []
    for part in str(version).split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(parts)


def normalized_config(config):
    """A config in SAELens 6 field names (pre-6.0 configs are translated as SAELens's
    own ``handle_pre_6_0_config`` does)."""
    version = config.get("sae_lens_version") or (config.get("metadata") or {}).get(
        "sae_lens_version"
    )
    if version and _version_tuple(version) >= (6,):
        return dict(config)
    config = {_PRE_6_RENAMES.get(key, key): value for key, value in config.items()}
    config.setdefault("apply_b_dec_to_input", True)
    config.setdefault("architecture", "standard")
    kwargs = config.get("activation_fn_kwargs") or {}
    if config.get("activation_fn") == "topk" and kwargs.get("k") is not None:
        config["architecture"] = "topk"
        config["k"] = kwargs["k"]
    normalize = config.get("normalize_activations")
    if isinstance(normalize, bool):
        config["normalize_activations"] = "expected_average_only_in" if normalize else "none"
    elif normalize is None:
        config["normalize_activations"] = "none"
    return config


def _scaling_factor(folder, config, scaling_factor):
    """The factor SAELens multiplies inputs by (``expected_average_only_in``), or 1."""
    mode = config.get("normalize_activations", "none")
    config_path = folder / CONFIG_FILE
    if mode in ("none", None):
        return 1.0 if scaling_factor is None else float(scaling_factor)
    if mode in ("constant_norm_rescale", "layer_norm"):
        raise ValueError(
            f"{config_path}: normalize_activations={mode!r} rescales every input by its "
            "own norm at run time, which no fixed linear encoder represents; it is not "
            "supported."
        )
    if mode != "expected_average_only_in":
        raise ValueError(
            f"{config_path}: normalize_activations={mode!r} is not supported (a "
            "'covariance_whitening' checkpoint must first be folded by SAELens, as its "
            "final inference save does); 'none' and 'expected_average_only_in' are."
        )
    if scaling_factor is not None:
        return float(scaling_factor)
    scaler = folder / SCALER_FILE
    if not scaler.is_file():
        raise ValueError(
            f"{config_path}: normalize_activations='expected_average_only_in' means the "
            "weights expect inputs multiplied by a dataset-wide factor, but "
            f"{SCALER_FILE} is missing from {folder}; pass load_sae(..., "
            "scaling_factor=...) (SAELens's pretrained directory lists it as "
            "norm_scaling_factor)."
        )
    factor = read_json(scaler).get("scaling_factor")
    return 1.0 if factor is None else float(factor)


def read(folder, *, scaling_factor=None):
    """The :class:`SAEWeights` of the SAELens checkpoint in ``folder``, ``scaling_factor``
    (or ``activation_scaler.json``) folded in."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    config = normalized_config(read_json(config_path))
    tensors = read_safetensors(weights_path)
    d_in = config_int(config, "d_in", config_path)
    d_sae = config_int(config, "d_sae", config_path)
    if config.get("reshape_activations", "none") not in ("none", "hook_z"):
        raise ValueError(
            f"{config_path}: unknown reshape_activations={config['reshape_activations']!r}."
        )
    if config.get("architecture") == MATCHING_PURSUIT:
        return _read_matching_pursuit(folder, config, tensors, d_in, d_sae, scaling_factor)
    transcoder = config.get("architecture") in TRANSCODERS
    d_out = _transcoder_d_out(config, config_path) if transcoder else d_in
    activation, k, threshold = _architecture_activation(
        config, tensors, d_sae, config_path, weights_path
    )
    _check_tensors(tensors, d_in, d_sae, weights_path, d_out=d_out)
    encoder, bias, decoder, magnitude = _encoder_decoder(config, tensors, weights_path)
    weights = SAEWeights(
        encoder_weight=encoder,
        encoder_bias=bias,
        decoder_weight=decoder,
        decoder_bias=tensors["b_dec"],
        activation=activation,
        k=k,
        threshold=threshold,
        magnitude_log_scale=magnitude[0],
        magnitude_bias=magnitude[1],
        prefixes=(
            tuple(config["matryoshka_widths"])
            if activation == "batchtopk" and config.get("matryoshka_widths") else None
        ),  # fmt: skip
        transcoder=transcoder,
        skip_weight=tensors.get("W_skip"),
    )
    # SAELens encodes s x - a b_dec (s the activation scale, a = apply_b_dec_to_input):
    # the (1 - a) b_dec @ W_enc part joined the encoder bias; the scale is folded
    # into the weights, so the estimator takes raw activations.
    return fold_input_scale(weights, _scaling_factor(folder, config, scaling_factor))


def _read_matching_pursuit(folder, config, tensors, d_in, d_sae, scaling_factor):
    """The :class:`MatchingPursuitWeights` of a SAELens ``matching_pursuit`` checkpoint.

    SAELens's rule is ours with a residual threshold (``stop_on_duplicate_support=True``);
    without the repeated-support stop it is representable only as plain MP
    (``residual_threshold <= 0`` and unit-norm ``W_dec`` rows). An activation scale is
    folded as SAELens's own ``fold_activation_norm_scaling_factor`` folds it for this
    architecture: ``b_dec`` and the threshold divided by it, ``W_dec`` unchanged (MP's
    codes scale with the input and cannot be rescaled in a tied decoder).
    """
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    check_tensor_names(tensors, ["W_dec", "b_dec"], [], weights_path)
    check_finite(tensors, weights_path)
    check_shape(tensors["W_dec"], (d_sae, d_in), "W_dec", weights_path)
    check_shape(tensors["b_dec"], (d_in,), "b_dec", weights_path)
    settings = {**_MP_DEFAULTS, **{key: config[key] for key in _MP_DEFAULTS if key in config}}
    threshold = settings["residual_threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
        np.isfinite(threshold)
    ):
        raise ValueError(
            f"{config_path}: residual_threshold must be a finite number, got {threshold!r}."
        )
    # SAELens stops on the residual only when residual_threshold > 0.
    threshold = max(float(threshold), 0.0)
    max_iterations = settings["max_iterations"]
    if max_iterations is not None:
        max_iterations = config_int(config, "max_iterations", config_path)
        if max_iterations < 1:
            raise ValueError(
                f"{config_path}: max_iterations={max_iterations} gives every input zero "
                "codes; at least 1 (or null, d_in) is supported."
            )
    repeat = settings["stop_on_duplicate_support"]
    if not isinstance(repeat, bool):
        raise ValueError(
            f"{config_path}: stop_on_duplicate_support must be true or false, got {repeat!r}."
        )
    if not repeat:
        if threshold > 0:
            raise ValueError(
                f"{config_path}: stop_on_duplicate_support=false with residual_threshold="
                f"{threshold:g} is not supported: this library's matching pursuit with a "
                "residual threshold (GradientSparseCoder's transform_alpha) also stops "
                "on a repeated support, SAELens's default; with residual_threshold=0 it "
                "is plain MP."
            )
        if not unit_norm_rows(tensors["W_dec"]):
            raise ValueError(
                f"{weights_path}: stop_on_duplicate_support=false with "
                "residual_threshold=0 is plain matching pursuit, which this library runs "
                "on normalised atoms, and W_dec's rows do not have unit norm: SAELens's "
                "steps on them differ. Supported: stop_on_duplicate_support=true, or "
                "unit-norm W_dec rows."
            )
        threshold = None
    factor = _scaling_factor(folder, config, scaling_factor)
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"scaling_factor must be a positive number, got {factor!r}.")
    bias = tensors["b_dec"] if config.get("apply_b_dec_to_input", True) else np.zeros(d_in)
    return MatchingPursuitWeights(
        decoder_weight=tensors["W_dec"],
        decoder_bias=bias / factor,
        residual_threshold=None if threshold is None else threshold / factor,
        max_iterations=max_iterations,
    )


def _transcoder_d_out(config, config_path):
    """A transcoder's ``d_out`` (SAELens's default, 768, when the config has none);
    its ``apply_b_dec_to_input`` must be False, as SAELens's ``TranscoderConfig``
    requires (``b_dec`` lives in the output space)."""
    if config.get("apply_b_dec_to_input", True):
        raise ValueError(
            f"{config_path}: apply_b_dec_to_input=True is not supported for a transcoder "
            f"(architecture={config['architecture']!r}): its b_dec is in the output space, "
            "so it cannot be subtracted from the input (SAELens's TranscoderConfig refuses "
            "it too)."
        )
    return config_int(config, "d_out", config_path, default=768)


def _architecture_activation(config, tensors, d_sae, config_path, weights_path):
    """``(activation, k, threshold)`` of the config's architecture; checks its tensor
    names. A gated SAE is our ``activation="gated"`` (its magnitude path comes from
    :func:`_encoder_decoder`)."""
    architecture = config.get("architecture", "standard")
    common = ["W_enc", "W_dec", "b_dec"]
    optional = ["finetuning_scaling_factor"]
    activation, k, threshold = "relu", None, None
    if architecture == "standard":
        if config.get("activation_fn", "relu") not in ("relu", None):
            raise ValueError(
                f"{config_path}: activation_fn={config['activation_fn']!r} is not "
                "supported (ReLU, TopK and JumpReLU are)."
            )
        check_tensor_names(tensors, [*common, "b_enc"], optional, weights_path)
    elif architecture == "topk":
        check_tensor_names(tensors, [*common, "b_enc"], optional, weights_path)
        activation, k = "topk", config_int(config, "k", config_path)
    elif architecture in ("jumprelu", "batchtopk", "matryoshka_batchtopk"):
        names = {"jumprelu": ("threshold", "log_threshold")}.get(
            architecture, ("threshold", "topk_threshold")
        )
        present = [name for name in names if name in tensors]
        if len(present) != 1:
            raise ValueError(
                f"{weights_path}: a {architecture} SAE needs exactly one of the tensors "
                f"{list(names)}; found {sorted(tensors)}."
            )
        check_tensor_names(tensors, [*common, "b_enc", present[0]], optional, weights_path)
        activation = "jumprelu"
        if architecture != "jumprelu" and _integral(config.get("k")):
            # A BatchTopK training checkpoint with its k: our BatchTopK (which can
            # continue training); without an integral k (SAELens's k is an average, a
            # float) the JumpReLU it encodes as at inference.
            activation, k = "batchtopk", int(config["k"])
        value = tensors[present[0]]
        # BatchTopK encodes at inference as a JumpReLU at its learned global threshold,
        # which is what SAELens writes when it saves such an SAE for inference.
        threshold = np.exp(value) if present[0] == "log_threshold" else np.broadcast_to(
            value, (d_sae,)
        ).copy()
    elif architecture == "gated":
        check_tensor_names(tensors, [*common, "b_gate", "b_mag", "r_mag"], optional, weights_path)
        activation = "gated"
    elif architecture in TRANSCODERS:
        activation, skip = TRANSCODERS[architecture]
        names = [*common, "b_enc"] + ["threshold"] * (activation == "jumprelu")
        check_tensor_names(tensors, names + ["W_skip"] * skip, [], weights_path)
        if activation == "jumprelu":
            threshold = tensors["threshold"]
    else:
        raise ValueError(
            f"{config_path}: architecture={architecture!r} is not supported (standard, "
            "topk, jumprelu, gated, batchtopk, matryoshka_batchtopk, matching_pursuit and "
            f"the transcoders {sorted(TRANSCODERS)} are)."
        )
    return activation, k, threshold


def _integral(value):
    """Whether ``value`` is a whole number (a JSON int or a float like 32.0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (
        float(value).is_integer() and value >= 1
    )


def _check_tensors(tensors, d_in, d_sae, weights_path, d_out=None):
    """Every tensor finite and of the shape ``d_in``, ``d_sae`` and (a transcoder's)
    ``d_out`` give it."""
    d_out = d_in if d_out is None else d_out
    check_finite(tensors, weights_path)
    check_shape(tensors["W_enc"], (d_in, d_sae), "W_enc", weights_path)
    check_shape(tensors["W_dec"], (d_sae, d_out), "W_dec", weights_path)
    check_shape(tensors["b_dec"], (d_out,), "b_dec", weights_path)
    if "W_skip" in tensors:
        check_shape(tensors["W_skip"], (d_out, d_in), "W_skip", weights_path)
    for name in ("b_enc", "b_gate", "b_mag", "r_mag", "finetuning_scaling_factor", "threshold",
                 "log_threshold"):
        if name in tensors:
            check_shape(tensors[name], (d_sae,), name, weights_path)


def _encoder_decoder(config, tensors, weights_path):
    """``(encoder rows, encoder bias, decoder rows, (r_mag, b_mag))`` in our form (the
    last ``(None, None)`` but for a gated SAE, whose encoder bias is ``b_gate``).

    What SAELens does around its two matrices (the decoder-norm rescaling of TopK, the
    pre-6.0 fine-tuning factor, an input without ``b_dec`` subtracted) is folded into
    them.
    """
    architecture = config.get("architecture", "standard")
    encoder = tensors["W_enc"].T.copy()  # (d_sae, d_in): one row per latent
    decoder = tensors["W_dec"].copy()
    magnitude = (None, None)
    if architecture == "gated":
        # gate = [u + b_gate > 0] and magnitude = relu(exp(r_mag) u + b_mag), with
        # u = x' @ W_enc: our gated SAE, parameter for parameter.
        bias = tensors["b_gate"].copy()
        magnitude = (tensors["r_mag"].copy(), tensors["b_mag"].copy())
    else:
        bias = tensors["b_enc"].copy()
    if architecture in ("topk", "batchtopk", "matryoshka_batchtopk") and config.get(
        "rescale_acts_by_decoder_norm", False
    ):
        # Pre-activations are multiplied by the decoder row norms before TopK and codes
        # divided by them before decoding: fold both into the weights.
        norms = np.linalg.norm(decoder, axis=1)
        if np.any(norms == 0):
            raise ValueError(
                f"{weights_path}: rescale_acts_by_decoder_norm with an all-zero W_dec row."
            )
        encoder *= norms[:, None]
        bias *= norms
        decoder /= norms[:, None]
    if "finetuning_scaling_factor" in tensors and config.get("finetuning_scaling_factor", False):
        # Pre-6.0 decode multiplies codes by this factor: it belongs to the decoder rows.
        decoder *= tensors["finetuning_scaling_factor"][:, None]
    # SAELens encodes s x - a b_dec (s the activation scale, a = apply_b_dec_to_input):
    # = s (x - b_dec / s) + (1 - a) b_dec, so the encoder sees s W_enc, the shared bias
    # is b_dec / s and (1 - a) b_dec @ W_enc joins the encoder bias; decoding divides
    # the output by s. A transcoder reads its input as it is, as ours does.
    if not config.get("apply_b_dec_to_input", True) and architecture not in TRANSCODERS:
        shift = encoder @ tensors["b_dec"]
        bias = bias + shift
        if magnitude[0] is not None:  # the magnitude path's share, exp(r_mag) times it
            magnitude = (magnitude[0], magnitude[1] + np.exp(magnitude[0]) * shift)
    return encoder, bias, decoder, magnitude


def write(weights, folder):
    """Write ``weights`` as an inference SAELens checkpoint in ``folder``."""
    folder = Path(folder)
    if isinstance(weights, MatchingPursuitWeights):
        return _write_matching_pursuit(weights, folder)
    n_components, n_features = weights.encoder_weight.shape
    if weights.transcoder:
        architecture = _transcoder_architecture(weights)
    else:
        # A BatchTopK (or Matryoshka) SAE is saved as the JumpReLU it encodes as at
        # inference, as SAELens's save_inference_model does: SAE.load_from_disk has no
        # "batchtopk".
        architecture = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu",
                        "batchtopk": "jumprelu", "gated": "gated"}[weights.activation]  # fmt: skip
    config = {
        "architecture": architecture,
        "d_in": n_features,
        "d_sae": n_components,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not weights.transcoder,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": _FORMAT_VERSION},
    }
    tensors = {
        "W_enc": weights.encoder_weight.T,
        "b_enc": weights.encoder_bias,
        "W_dec": weights.decoder_weight,
        "b_dec": weights.decoder_bias,
    }
    if weights.transcoder:
        config["d_out"] = weights.decoder_weight.shape[1]
    if weights.skip_weight is not None:
        tensors["W_skip"] = weights.skip_weight
    if architecture == "topk":
        config["k"] = int(weights.k)
        config["rescale_acts_by_decoder_norm"] = False
    if architecture.startswith("jumprelu"):
        tensors["threshold"] = weights.threshold
    if architecture == "gated":
        # GatedSAE: no b_enc; W_enc is the shared direction (saes/gated_sae.py).
        del tensors["b_enc"]
        tensors.update(b_gate=weights.encoder_bias, r_mag=weights.magnitude_log_scale,
                       b_mag=weights.magnitude_bias)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(tensors, folder / WEIGHTS_FILE)
    write_json(config, folder / CONFIG_FILE)


def _write_matching_pursuit(weights, folder):
    """Write a :class:`MatchingPursuitWeights` as a SAELens ``matching_pursuit`` SAE: our
    residual threshold with SAELens's repeated-support stop, or plain MP as
    ``residual_threshold=0`` without it."""
    n_components, n_features = weights.decoder_weight.shape
    plain = weights.residual_threshold is None
    config = {
        "architecture": MATCHING_PURSUIT,
        "d_in": n_features,
        "d_sae": n_components,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": _FORMAT_VERSION},
        "residual_threshold": 0.0 if plain else float(weights.residual_threshold),
        "max_iterations": weights.max_iterations,
        "stop_on_duplicate_support": not plain,
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors({"W_dec": weights.decoder_weight, "b_dec": weights.decoder_bias},
                      folder / WEIGHTS_FILE)  # fmt: skip
    write_json(config, folder / CONFIG_FILE)


def _transcoder_architecture(weights):
    """The SAELens architecture of a transcoder's ``weights``: ReLU and JumpReLU ones
    (with or without ``W_skip``); a BatchTopK one as the JumpReLU it is at inference."""
    if weights.activation == "topk":
        raise ValueError(
            "SAELens has no TopK transcoder (its transcoders are 'transcoder', "
            "'skip_transcoder', 'jumprelu_transcoder' and 'jumprelu_skip_transcoder'), so "
            "a transcoder with activation='topk' cannot be saved in its format; sparsify "
            "stores TopK transcoders."
        )
    activation = "jumprelu" if weights.activation == "batchtopk" else weights.activation
    skip = weights.skip_weight is not None
    return next(name for name, layout in TRANSCODERS.items() if layout == (activation, skip))
