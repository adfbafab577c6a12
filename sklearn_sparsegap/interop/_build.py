"""Plain weight arrays <-> a fitted ``SAEEncoder``, ``SAETranscoder`` or (a
matching-pursuit SAE) ``GradientSparseCoder``: the one place that knows the estimators'
fitted state. Every format reader goes through :func:`encoder_from_weights` and every
writer through :func:`weights_from_encoder`, so a change to the estimators' internals is
fixed here once."""

from dataclasses import dataclass, replace

import numpy as np

from .._families import check_matryoshka_prefixes, gated_threshold
from .._sae import SAEEncoder
from .._solvers._sparse_encode import check_n_nonzero_coefs
from .._sparse_coding import GradientSparseCoder
from .._torch_utils import resolve_device
from .._transcoder import SAETranscoder
from .._training import HISTORY_KEYS, history_arrays

_DTYPES = {"float32": np.float32, "float64": np.float64}
# How far from 1 a decoder row's norm may be for MP on it as it is and MP on it normalised
# (``transform_alpha=None``) to agree: the codes differ by twice this, relatively.
UNIT_NORM_ATOL = 1e-5


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


@dataclass
class MatchingPursuitWeights:
    """A matching-pursuit SAE (SAELens ``matching_pursuit``), every array in float64.

    It has no encoder: ``encode(x)`` is non-negative matching pursuit of ``x -
    decoder_bias`` on the rows of ``decoder_weight`` and ``decode(s) = s @ decoder_weight
    + decoder_bias``. With ``residual_threshold`` (a number, 0 included) it is SAELens's
    rule, the rows used as they are: each sample stops after the step that left its
    residual norm under the threshold or its support unchanged, after at most
    ``max_iterations`` steps (None: ``n_features``). With ``residual_threshold=None`` it
    is ``max_iterations`` steps of plain MP on unit-norm rows (SAELens's
    ``residual_threshold=0, stop_on_duplicate_support=False``).
    """

    decoder_weight: np.ndarray  # (n_components, n_features)
    decoder_bias: np.ndarray  # (n_features,)
    residual_threshold: float | None = 1e-2
    max_iterations: int | None = None

    @property
    def n_features(self):
        """The width of the input."""
        return self.decoder_weight.shape[1]


def unit_norm_rows(matrix):
    """Whether every row of ``matrix`` has norm 1 within ``UNIT_NORM_ATOL``."""
    norms = np.linalg.norm(np.asarray(matrix, dtype=np.float64), axis=1)
    return bool(np.all(np.abs(norms - 1.0) <= UNIT_NORM_ATOL))


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

    A :class:`MatchingPursuitWeights` becomes a fitted :class:`GradientSparseCoder`
    (:func:`coder_from_weights`).
    """
    if isinstance(weights, MatchingPursuitWeights):
        return coder_from_weights(weights, dtype=dtype, device=device, source=source)
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


def coder_from_weights(weights, *, dtype=np.float32, device="auto", source="weights"):
    """A fitted :class:`GradientSparseCoder` that encodes and decodes as the
    matching-pursuit SAE ``weights``.

    Its parameters describe the model: ``fit_algorithm`` and ``transform_algorithm``
    ``"mp"``, non-negative codes, ``transform_alpha`` the residual threshold (None for
    plain MP) and ``transform_n_nonzero_coefs`` the cap on the steps; ``alpha`` is 0
    (``score`` is minus half the squared error). A decoder bias becomes ``intercept_``.
    """
    dtype = check_dtype(dtype)
    decoder = np.asarray(weights.decoder_weight)
    n_components, n_features = decoder.shape
    if weights.decoder_bias.shape != (n_features,):
        raise ValueError(
            f"{source}: decoder bias has shape {weights.decoder_bias.shape}, expected "
            f"({n_features},)."
        )
    for name in ("decoder_weight", "decoder_bias"):
        _check_finite(getattr(weights, name), name, source)
    max_iterations = weights.max_iterations
    if weights.residual_threshold is None:
        # Plain MP: K steps, K at most the number of atoms (as sparse_encode's "mp").
        max_iterations = n_features if max_iterations is None else max_iterations
        try:
            check_n_nonzero_coefs(max_iterations, n_features, n_components, "mp",
                                  name="max_iterations")  # fmt: skip
        except ValueError as exc:
            raise ValueError(
                f"{source}: {exc} Without a residual threshold or the repeated-support "
                "stop the SAE is plain matching pursuit, which this library runs for at "
                "most n_components steps."
            ) from None
    coder = GradientSparseCoder(
        n_components=n_components, alpha=0.0, transform_alpha=weights.residual_threshold,
        fit_algorithm="mp", transform_algorithm="mp",
        transform_n_nonzero_coefs=max_iterations, positive_code=True, device=device,
    )  # fmt: skip
    coder.components_ = np.array(decoder, dtype=dtype)
    coder.n_components_ = n_components
    if np.any(weights.decoder_bias != 0):
        coder.intercept_ = np.array(weights.decoder_bias, dtype=dtype)
    coder.transform_alpha_ = coder._resolved_transform_alpha()
    coder.transform_algorithm_ = "mp"
    coder.n_features_in_ = n_features
    coder.n_iter_ = 0
    coder.history_ = history_arrays({key: [] for key in HISTORY_KEYS})
    coder.training_flops_ = 0
    coder.dead_fraction_ = 0.0
    # inference_flops' default: the most steps a sample can take.
    coder.inference_n_iter_ = coder._transform_n_nonzero(n_features, n_components)
    coder.device_ = str(resolve_device(device))
    return coder


def _matching_pursuit_weights(coder):
    """The :class:`MatchingPursuitWeights` of a fitted ``GradientSparseCoder``, or a
    ``ValueError`` naming what SAELens's matching-pursuit SAE cannot hold."""
    if not hasattr(coder, "components_"):
        raise ValueError("estimator is not fitted: call fit or load_sae first.")
    if coder.transform_algorithm_ != "mp":
        raise ValueError(
            "a GradientSparseCoder is exported as SAELens's matching-pursuit SAE, whose "
            "codes are matching pursuit: it needs transform_algorithm='mp', got "
            f"transform_algorithm_={coder.transform_algorithm_!r}."
        )
    if not coder.positive_code:
        raise ValueError(
            "positive_code=False: SAELens's matching-pursuit SAE takes only positive "
            "correlations (ReLU), so signed MP codes cannot be exported; refit with "
            "positive_code=True."
        )
    components = np.asarray(coder.components_, dtype=np.float64)
    n_components, n_features = components.shape
    intercept = getattr(coder, "intercept_", None)
    bias = np.zeros(n_features) if intercept is None else np.asarray(intercept, np.float64)
    threshold = coder._residual_tol()
    max_iterations = coder.transform_n_nonzero_coefs
    if threshold is None:
        # Plain MP normalises the atoms and SAELens uses them as they are: the same
        # steps only on unit-norm rows (every learned dictionary).
        if not unit_norm_rows(components):
            norms = np.linalg.norm(components, axis=1)
            raise ValueError(
                "transform_alpha=None (a fixed number of MP steps) is SAELens's "
                "residual_threshold=0 with stop_on_duplicate_support=False only on "
                "unit-norm atoms, and these have norms from "
                f"{norms.min():.6g} to {norms.max():.6g}: set transform_alpha (SAELens's "
                "rule) or normalise the dictionary."
            )
        max_iterations = coder._transform_n_nonzero(n_features, n_components)
    return MatchingPursuitWeights(
        decoder_weight=components,
        decoder_bias=bias,
        residual_threshold=None if threshold is None else float(threshold),
        max_iterations=max_iterations,
    )


def weights_from_encoder(estimator):
    """The :class:`SAEWeights` of a fitted :class:`SAEEncoder` or :class:`SAETranscoder`
    (the :class:`MatchingPursuitWeights` of a :class:`GradientSparseCoder`), for the
    writers.

    Raises a ``ValueError`` for what the peers cannot represent: an MLP encoder, codes
    rescaled per sample, a BatchTopK model whose threshold is not estimated, a
    GradientSparseCoder whose inference is not non-negative matching pursuit. A model
    without biases is exported with zero biases.
    """
    if isinstance(estimator, GradientSparseCoder):
        return _matching_pursuit_weights(estimator)
    if not isinstance(estimator, (SAEEncoder, SAETranscoder)):
        raise ValueError(
            f"estimator must be a fitted SAEEncoder, SAETranscoder or GradientSparseCoder "
            f"(matching pursuit), got {type(estimator).__name__}; MLP encoders cannot be "
            "exported to SAELens, sparsify or dictionary_learning."
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
