"""Plain weight arrays <-> a fitted ``SAEEncoder`` or ``SAETranscoder``: the one place
that knows the estimators' fitted state. Every format reader goes through
:func:`encoder_from_weights` and every writer through :func:`weights_from_encoder`, so a
change to the estimators' internals is fixed here once."""

from dataclasses import dataclass, replace

import numpy as np

from .._families import check_matryoshka_prefixes, gated_threshold
from .._sae import SAEEncoder
from .._torch_utils import resolve_device
from .._transcoder import SAETranscoder
from .._training import HISTORY_KEYS, history_arrays

_DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass
class SAEWeights:
    """An SAE in this library's form, every array in float64.

    ``encode(x) = act((x - decoder_bias) @ encoder_weight.T + encoder_bias)``,
    ``decode(s) = s @ decoder_weight + decoder_bias``; ``act`` is ReLU, TopK (the ``k``
    largest pre-activations, then ReLU), JumpReLU (``pre * (pre > threshold)``) or
    BatchTopK, which encodes as a JumpReLU at one global threshold (every entry of
    ``threshold`` equal) and trains keeping ``k`` latents per row on average over the
    batch; ``prefixes`` are a Matryoshka BatchTopK SAE's nested widths (training only).

    A gated SAE (``activation="gated"``) has ``encoder_weight`` the shared direction
    ``W_gate``, ``encoder_bias`` the gate bias ``b_gate``, and ``magnitude_log_scale``
    (``r_mag``) and ``magnitude_bias`` (``b_mag``): ``u = (x - decoder_bias) @
    encoder_weight.T``, codes ``1[u + b_gate > 0] * ReLU(exp(r_mag) u + b_mag)``.

    A transcoder (``transcoder=True``) encodes its input as it is, ``act(x @
    encoder_weight.T + encoder_bias)`` (the decoder bias lives in the output space), its
    decoder maps to ``n_outputs`` columns (``decoder_weight`` of shape ``(n_components,
    n_outputs)``, ``decoder_bias`` of ``(n_outputs,)``) and, with ``skip_weight`` of
    shape ``(n_outputs, n_features)``, it predicts ``decode(s) + x @ skip_weight.T``.
    """

    encoder_weight: np.ndarray  # (n_components, n_features)
    encoder_bias: np.ndarray  # (n_components,)
    decoder_weight: np.ndarray  # (n_components, n_features), a transcoder's n_outputs
    decoder_bias: np.ndarray  # (n_features,), a transcoder's (n_outputs,)
    activation: str = "relu"
    k: int | None = None
    threshold: np.ndarray | None = None  # (n_components,)
    prefixes: tuple | None = None
    magnitude_log_scale: np.ndarray | None = None  # (n_components,), gated only
    magnitude_bias: np.ndarray | None = None  # (n_components,), gated only
    transcoder: bool = False
    skip_weight: np.ndarray | None = None  # (n_outputs, n_features), skip transcoders only

    @property
    def n_features(self):
        """The width of the input (of the output too, unless a transcoder)."""
        return self.encoder_weight.shape[1]


def fold_input_scale(weights, factor):
    """``weights`` of an SAE that expects inputs multiplied by ``factor``, rewritten to
    take raw inputs: ``act((f x - b) W^T + c) = act((x - b / f) (f W)^T + c)`` and the
    reconstruction, divided by ``f``, is ``s (D / f) + b / f``. For a transcoder the
    factor multiplied both its input and its output (as one activation scaler would):
    ``act(f x W^T + c)``, and ``(s D + b + W_skip f x) / f`` keeps ``W_skip``."""
    factor = float(factor)
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"scaling_factor must be a positive number, got {factor!r}.")
    return replace(
        weights,
        encoder_weight=weights.encoder_weight * factor,
        decoder_weight=weights.decoder_weight / factor,
        decoder_bias=weights.decoder_bias / factor,
    )


def check_dtype(dtype):
    """The numpy dtype for ``load_sae(dtype=...)``."""
    key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if key not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    return _DTYPES[key]


def _check_finite(array, name, source):
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{source}: tensor {name!r} has NaN or infinite values.")


def check_weights(weights, source):
    """Shapes and values of ``weights``; ``source`` names the file in the errors."""
    n_components, n_outputs = weights.decoder_weight.shape
    n_features = weights.n_features if weights.transcoder else n_outputs
    expected = {
        "encoder_weight": (n_components, n_features),
        "encoder_bias": (n_components,),
        "decoder_bias": (n_outputs,),
    }
    if weights.threshold is not None:
        expected["threshold"] = (n_components,)
    if weights.activation == "gated":
        expected["magnitude_log_scale"] = expected["magnitude_bias"] = (n_components,)
    if weights.skip_weight is not None:
        if not weights.transcoder:
            raise ValueError(f"{source}: a skip connection belongs to a transcoder.")
        expected["skip_weight"] = (n_outputs, n_features)
    for name, shape in expected.items():
        value = getattr(weights, name)
        if value.shape != shape:
            raise ValueError(
                f"{source}: {name.replace('_', ' ')} has shape {value.shape}, expected "
                f"{shape} for {n_components} latents, {n_features} input features and "
                f"{n_outputs} outputs."
            )
    if weights.transcoder and weights.activation not in ("relu", "topk", "jumprelu", "batchtopk"):
        raise ValueError(
            f"{source}: a transcoder with activation={weights.activation!r} is not "
            "supported (SAETranscoder has relu, topk, jumprelu and batchtopk)."
        )
    for name in ("encoder_weight", "encoder_bias", "decoder_weight", "decoder_bias", "threshold",
                 "magnitude_log_scale", "magnitude_bias", "skip_weight"):
        value = getattr(weights, name)
        if value is not None:
            _check_finite(value, name, source)
    if weights.activation in ("topk", "batchtopk"):
        if weights.k is None or not 1 <= weights.k <= n_components:
            raise ValueError(
                f"{source}: TopK needs 1 <= k <= {n_components} latents, got k={weights.k}."
            )
    if weights.activation in ("jumprelu", "batchtopk") and weights.threshold is None:
        raise ValueError(f"{source}: a {weights.activation} SAE needs a threshold tensor.")


def _unfitted_estimator(weights, device):
    """The estimator whose parameters describe ``weights``' model, before its state."""
    k = weights.k if weights.activation in ("topk", "batchtopk") else None
    common = dict(n_components=weights.decoder_weight.shape[0], alpha=0.0,
                  activation=weights.activation, n_nonzero_coefs=k, fit_intercept=True,
                  device=device)  # fmt: skip
    if weights.transcoder:
        return SAETranscoder(skip_connection=weights.skip_weight is not None, **common)
    return SAEEncoder(
        matryoshka_prefixes=None if weights.prefixes is None else tuple(weights.prefixes),
        **common,
    )


def encoder_from_weights(weights, *, dtype=np.float32, device="auto", source="weights"):
    """A fitted :class:`SAEEncoder` (a :class:`SAETranscoder` for a transcoder's
    ``weights``) that encodes and decodes (predicts) exactly as ``weights``.

    Its parameters describe the model (``n_components``, ``activation``,
    ``n_nonzero_coefs``, ``skip_connection``); ``alpha`` is 0 because a checkpoint does
    not carry the training penalty in this library's units. ``partial_fit`` and
    ``warm_start`` continue training from the loaded weights.
    """
    check_weights(weights, source)
    dtype = check_dtype(dtype)
    estimator = _unfitted_estimator(weights, device)
    estimator.components_ = np.array(weights.decoder_weight, dtype=dtype)
    estimator.intercept_ = np.array(weights.decoder_bias, dtype=dtype)
    estimator.coefs_ = [np.array(weights.encoder_weight, dtype=dtype)]
    estimator.intercepts_ = [np.array(weights.encoder_bias, dtype=dtype)]
    if weights.activation in ("jumprelu", "batchtopk"):
        # The estimator stores log-thresholds: a threshold <= 0 gates nothing that the
        # ReLU does not already zero, so the smallest positive number is exact.
        tiny = np.finfo(dtype).tiny
        estimator.threshold_ = np.maximum(np.asarray(weights.threshold, dtype=dtype), tiny)
    if weights.activation == "gated":
        estimator.magnitude_log_scale_ = np.array(weights.magnitude_log_scale, dtype=dtype)
        estimator.magnitude_bias_ = np.array(weights.magnitude_bias, dtype=dtype)
        estimator.threshold_ = gated_threshold(
            estimator.intercepts_[0], estimator.magnitude_log_scale_, estimator.magnitude_bias_
        )
    if weights.transcoder:
        estimator.n_outputs_ = weights.decoder_weight.shape[1]
        estimator.n_components_ = weights.decoder_weight.shape[0]
        if weights.skip_weight is not None:
            estimator.skip_ = np.array(weights.skip_weight, dtype=dtype)
    estimator.n_features_in_ = weights.n_features
    estimator.n_iter_ = 0
    estimator.history_ = history_arrays({key: [] for key in HISTORY_KEYS})
    estimator.training_flops_ = 0
    estimator.device_ = str(resolve_device(device))
    # What partial_fit / warm_start read to continue training.
    estimator._n_steps = 0
    estimator._trained_target = estimator.target
    estimator._optimizer_state = None
    return estimator


def weights_from_encoder(estimator):
    """The :class:`SAEWeights` of a fitted :class:`SAEEncoder` or :class:`SAETranscoder`
    (for the writers).

    Raises a ``ValueError`` for what the peers cannot represent: an MLP encoder, codes
    rescaled per sample, a BatchTopK model whose threshold is not estimated. A model
    without biases is exported with zero biases.
    """
    if not isinstance(estimator, (SAEEncoder, SAETranscoder)):
        raise ValueError(
            f"estimator must be a fitted SAEEncoder or SAETranscoder, got "
            f"{type(estimator).__name__}; MLP encoders cannot be exported to SAELens, "
            "sparsify or dictionary_learning."
        )
    if not hasattr(estimator, "components_"):
        raise ValueError("estimator is not fitted: call fit or load_sae first.")
    if estimator._rescales():
        raise ValueError(
            "estimator rescales its codes per sample (target='codes', "
            "codes_loss='sample', rescale_codes=True), which no peer format can store; "
            "set rescale_codes=False to export the encoder's own output."
        )
    transcoder = isinstance(estimator, SAETranscoder)
    components = np.asarray(estimator.components_, dtype=np.float64)
    encoder_weight = np.asarray(estimator.coefs_[0], dtype=np.float64)
    n_components, n_outputs = components.shape
    if estimator.fit_intercept:
        encoder_bias = np.asarray(estimator.intercepts_[0], dtype=np.float64)
        decoder_bias = np.asarray(estimator.intercept_, dtype=np.float64)
    else:
        encoder_bias, decoder_bias = np.zeros(n_components), np.zeros(n_outputs)
    threshold = prefixes = magnitude_log_scale = magnitude_bias = skip_weight = None
    if estimator.activation == "gated":
        magnitude_log_scale = np.asarray(estimator.magnitude_log_scale_, dtype=np.float64)
        magnitude_bias = (
            np.asarray(estimator.magnitude_bias_, dtype=np.float64) if estimator.fit_intercept
            else np.zeros(n_components)
        )  # fmt: skip
    if estimator.activation in ("jumprelu", "batchtopk"):
        threshold = np.asarray(estimator.threshold_, dtype=np.float64)
    if estimator.activation == "batchtopk":
        if not np.all(np.isfinite(threshold)):
            raise ValueError(
                "estimator has activation='batchtopk' but its global threshold is not "
                "estimated yet (threshold_ is NaN), so it has no inference form to "
                "export: fit it first."
            )
        if not transcoder:
            prefixes = check_matryoshka_prefixes(estimator.matryoshka_prefixes, n_components)
            # Sampled widths (an int) are a training device only: the SAE is exported
            # as the BatchTopK SAE it is at inference.
            prefixes = prefixes if isinstance(prefixes, tuple) else None
    if transcoder and estimator.skip_connection:
        skip_weight = np.asarray(estimator.skip_, dtype=np.float64)
    return SAEWeights(
        encoder_weight=encoder_weight,
        encoder_bias=encoder_bias,
        decoder_weight=components,
        decoder_bias=decoder_bias,
        activation=estimator.activation,
        k=estimator.n_nonzero_coefs if estimator.activation in ("topk", "batchtopk") else None,
        threshold=threshold,
        prefixes=prefixes,
        magnitude_log_scale=magnitude_log_scale,
        magnitude_bias=magnitude_bias,
        transcoder=transcoder,
        skip_weight=skip_weight,
    )
