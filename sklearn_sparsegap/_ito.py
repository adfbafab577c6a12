"""Amortised codes refined by inference-time optimisation (ITO): ``SAEPlusITO``."""

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from ._base import BaseSparseEstimator
from ._compat import HasMethods, Interval, StrOptions, _fit_context
from ._solvers import ALGORITHMS, GREEDY_ALGORITHMS, fista_with_intercept
from ._solvers._sparse_encode import check_n_nonzero_coefs, encode_tensor
from ._torch_utils import serial_if_small, to_numpy, to_tensor
from ._training import objective
from ._transcoder import (
    check_transcoder_target,
    is_transcoder,
    transcoder_n_inputs,
    transcoder_signal,
)
from .flops import sparse_encode_flops

# The intercept refit and the encoder's training L0 use at most this many training rows
# (evenly spaced).
_MAX_INTERCEPT_ROWS = 2**14
# transform_alpha=None for an L1 algorithm: the penalty is bisected on at most this many
# training rows so that the mean L0 matches the encoder's, to this relative tolerance.
_MAX_ALPHA_ROWS = 1024
_ALPHA_STEPS = 16
_ALPHA_L0_RTOL = 0.02


def _l0(codes):
    """Non-zeros per sample."""
    return torch.count_nonzero(codes, dim=1)


def _criterion(X, codes, dictionary, intercept, alpha):
    """Per-sample objective the guard compares (``alpha=0``: half the squared error)."""
    return objective(X, codes, dictionary, intercept, alpha, per_sample=True)


@torch.no_grad()
def _refine_codes(
    X, start, dictionary, intercept, start_intercept, alpha, *, algorithm="omp",
    n_nonzero_coefs=None, positive=True, max_iter=500, tol=1e-4, warm_start=True, guard="l0",
):  # fmt: skip
    """Refine amortised codes on a frozen dictionary; with a guard keep, per sample, the better.

    Runs ``algorithm`` on ``X - intercept`` (from ``start`` when ``warm_start``, else the
    solver's cold start). ``n_nonzero_coefs`` of a greedy algorithm is an int or a
    per-sample tensor of budgets (samples are solved in groups of equal budget; a zero
    budget gives zero codes). The guard compares, per sample, ``start`` decoded with
    ``start_intercept`` (the encoder's own decoder bias) and the refined codes decoded with
    ``intercept``:

    - ``"l0"``: the refined codes are kept where their squared error is at most the
      encoder's and they have at most as many non-zeros;
    - ``"objective"``: they are kept where ``0.5 * ||x - s @ D - b||^2 + alpha * ||s||_1``
      is at most the encoder's;
    - ``None``: the solver's codes are returned as they are.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    start : Tensor of shape (n_samples, n_components)
        The encoder's codes.
    dictionary : Tensor of shape (n_components, n_features)
        The frozen atoms.
    intercept, start_intercept : Tensor of shape (n_features,)
        Decoder bias of the refined codes and of ``start``.
    alpha : float
        L1 penalty of the refinement and of the ``"objective"`` criterion.
    algorithm, positive, max_iter, tol
        As in :func:`sparse_encode`.
    n_nonzero_coefs : int, Tensor of shape (n_samples,) or None
        K of a greedy algorithm, one for all samples or one per sample.
    warm_start : bool, default=True
        Start the iterative solvers from ``start``.
    guard : {"l0", "objective"} or None, default="l0"
        How the refined codes are kept (see above).

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The refined codes.
    start_criterion, criterion : Tensor of shape (n_samples,)
        Per-sample criterion at ``start`` and at ``codes``: the objective at ``alpha``,
        or half the squared error for the ``"l0"`` guard.
    """
    residual = X - intercept
    if torch.is_tensor(n_nonzero_coefs):
        codes = _encode_per_sample_budget(
            residual, dictionary, n_nonzero_coefs, algorithm=algorithm, positive=positive
        )
    else:
        codes, _ = encode_tensor(
            residual, dictionary, algorithm=algorithm, alpha=alpha,
            n_nonzero_coefs=n_nonzero_coefs, positive=positive, max_iter=max_iter, tol=tol,
            init=start if warm_start else None,
        )  # fmt: skip
    return _guard_codes(X, start, codes, dictionary, intercept, start_intercept, alpha, guard)


def _encode_per_sample_budget(X, dictionary, budgets, *, algorithm, positive):
    """Greedy codes of ``X`` with ``budgets[i]`` atoms for sample ``i``: the samples are
    encoded in groups of equal budget; a zero budget gives zero codes."""
    codes = X.new_zeros(X.shape[0], dictionary.shape[0])
    for budget in torch.unique(budgets).tolist():
        if budget == 0:
            continue
        rows = torch.nonzero(budgets == budget)[:, 0]
        codes[rows] = encode_tensor(
            X[rows], dictionary, algorithm=algorithm, n_nonzero_coefs=budget,
            positive=positive,
        )[0]  # fmt: skip
    return codes


def _guard_codes(X, start, codes, dictionary, intercept, start_intercept, alpha, guard):
    """Keep, per sample, ``codes`` (decoded with ``intercept``) or ``start`` (decoded with
    ``start_intercept``) by the rule ``guard`` of :func:`_refine_codes`; return the codes
    kept and the criterion at ``start`` and at them."""
    criterion_alpha = 0.0 if guard == "l0" else alpha
    before = _criterion(X, start, dictionary, start_intercept, criterion_alpha)
    after = _criterion(X, codes, dictionary, intercept, criterion_alpha)
    if guard is not None:
        better = after <= before
        if guard == "l0":
            better &= _l0(codes) <= _l0(start)
        codes = torch.where(better[:, None], codes, start)
        after = torch.where(better, after, before)
    return codes, before, after


@torch.no_grad()
def _l0_matching_alpha(
    X, dictionary, target_l0, *, algorithm, positive, max_iter, tol, init=None,
    n_steps=_ALPHA_STEPS,
):  # fmt: skip
    """The penalty at which ``algorithm``'s codes of ``X`` have ``target_l0`` non-zeros on average.

    Bisection on ``log(alpha)`` between ``alpha_max = max |x . d|`` (above it the lasso
    codes are all zero) and ``1e-6 * alpha_max``, every solve started from ``init`` as
    ``transform`` starts it (with a finite ``max_iter`` the codes, so their L0, depend on
    the start). The L0 falls as alpha grows (not strictly: the lasso path can add and
    drop atoms), so the search stops at a relative L0 error of ``_ALPHA_L0_RTOL`` or after
    ``n_steps`` solves and returns the penalty of the solve whose L0 was closest to the
    target, preferring one not above it.

    Returns
    -------
    alpha : float
    l0 : float
        The mean L0 at that penalty.
    """
    correlations = X @ dictionary.T
    if positive:
        correlations = correlations.clamp_min(0.0)
    high = float(correlations.abs().max())
    if target_l0 <= 0 or high == 0.0:
        return high, 0.0
    low = 1e-6 * high
    best = (math.inf, high, 0.0)  # (distance, alpha, l0)
    for _ in range(n_steps):
        alpha = math.sqrt(low * high)
        codes, _ = encode_tensor(
            X, dictionary, algorithm=algorithm, alpha=alpha, positive=positive,
            max_iter=max_iter, tol=tol, init=init,
        )  # fmt: skip
        l0 = float(_l0(codes).double().mean())
        # Above the target counts as farther: the guard rejects codes denser than the encoder's.
        distance = abs(l0 - target_l0) * (1.0 if l0 <= target_l0 else 2.0)
        if distance < best[0]:
            best = (distance, alpha, l0)
        if abs(l0 - target_l0) <= _ALPHA_L0_RTOL * target_l0:
            break
        if l0 > target_l0:
            low = alpha
        else:
            high = alpha
    return best[1], best[2]


class SAEPlusITO(BaseSparseEstimator):
    """An amortised encoder whose codes are refined on its frozen dictionary (SAE + ITO).

    ``fit`` trains a clone of ``encoder`` (a :class:`SAEEncoder` by default; any library
    encoder, known-dictionary mode included), or, with ``prefit=True``, takes an encoder
    that is already fitted as it is. ``transform`` encodes with the encoder, then runs
    ``transform_algorithm`` on the encoder's dictionary and decoder bias.

    With the defaults it is never worse than its encoder at the same sparsity: orthogonal
    matching pursuit (``"omp"``) gives each sample as many atoms as the encoder's codes of
    that sample have non-zeros, and the ``"l0"`` guard keeps, per sample, the refined
    codes only where their squared reconstruction error is at most the encoder's with at
    most as many non-zeros; elsewhere the encoder's codes are returned.
    :meth:`amortisation_gap` reports how much it gained. The L1 solvers (``"fista"``,
    ``"ista"``, ``"lca"``, ``"paper_lca"``) get, when ``transform_alpha`` is None, the
    penalty at which their mean L0 on the training data matches the encoder's
    (bisection); the ``"objective"`` guard compares the library objective
    ``0.5 * ||x - s @ D - b||^2 + transform_alpha * ||s||_1`` instead.

    The paper's authors meant to start ITO from the SAE codes but always started from a
    constant; ``init="zeros", guard=None`` reproduces that ablation (the solver's own
    cold start: zeros, or ``exp(-10)`` for ``"adam"``, its codes returned as they are).

    Parameters
    ----------
    encoder : estimator, default=None
        A library encoder; None means ``SAEEncoder()``. Unfitted (``fit`` trains a
        clone) unless ``prefit``. ``sklearn.frozen.FrozenEstimator(fitted_encoder)`` is
        also kept as it is.
    prefit : bool, default=False
        ``encoder`` is already fitted: ``fit`` uses it without training or cloning
        (``fit`` only reads ``X`` for the encoder's L0 and, where asked, the penalty
        and intercept). ``clone`` of a prefit ``SAEPlusITO`` clones the encoder unfitted;
        wrap it in ``FrozenEstimator`` where clones must stay fitted (grid searches).
    transform_algorithm : {"omp", "fista", "ista", "lca", "paper_lca", "mp", \
            "gradient_pursuit", "topk", "adam"}, default="omp"
        The refinement solver (:func:`sparse_encode`). Greedy solvers (``"omp"``,
        ``"mp"``, ``"gradient_pursuit"``, ``"topk"``) ignore ``init``.
    transform_max_iter : int, default=500
        Iteration budget of the iterative solvers (and of the intercept refit); the
        greedy solvers take at most their non-zero budget of steps.
    transform_alpha : float, default=None
        L1 penalty of the iterative solvers and of the ``"objective"`` guard. None means,
        for the L1 solvers, the penalty whose mean L0 on (up to 1,024 rows of) the
        training data matches the encoder's, and 0 for the greedy ones (which do not
        use it); ``"adam"``, whose codes are never exactly zero, needs it given. The
        value used is ``transform_alpha_``.
    refit_intercept : bool, default=False
        Re-estimate the decoder bias for the refined codes: ``fit`` solves, on the
        training data, the lasso at ``transform_alpha_`` with one shared unpenalised
        intercept (FISTA, warm-started from the encoder's codes). An L1-trained
        encoder's bias compensates the shrinkage of its codes and can be wrong for
        refined ones, but on real activations the refit costs more than it gains, and
        with a greedy solver (``transform_alpha_`` 0) it is a least-squares fit: keep
        it off there. No effect when the encoder has no bias.
    init : {"encoder", "zeros"}, default="encoder"
        Start the iterative solvers from the encoder's codes or from zero.
    guard : {"l0", "objective"} or None, default="l0"
        Per sample, keep the refined codes only where they are no worse than the
        encoder's: ``"l0"`` by squared reconstruction error at no more non-zeros,
        ``"objective"`` by the objective at ``transform_alpha_``; None returns the
        solver's codes as they are.
    positive_code : bool, default=True
        Constrain the refined codes to be non-negative.
    transform_n_nonzero_coefs : int, default=None
        Atoms per sample (K) of the greedy solvers, the same for every sample; None gives
        each sample the number of non-zeros of its encoder codes (at most
        ``n_features`` for ``"omp"`` and ``"gradient_pursuit"``). It must not exceed
        ``n_components``, nor ``n_features`` for ``"omp"`` and ``"gradient_pursuit"``.
    tol : float, default=1e-4
        Stopping tolerance of the iterative solvers, as in :func:`sparse_encode`; the
        greedy solvers ignore it. The intercept refit stops when the whole code matrix
        changes by at most ``tol``.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Attributes
    ----------
    encoder_ : estimator
        The fitted encoder (a clone of ``encoder``, or ``encoder`` itself when prefit).
    components_ : ndarray of shape (n_components, n_features)
        The encoder's dictionary.
    intercept_ : ndarray of shape (n_features,)
        The decoder bias of the refinement: the encoder's, or refitted for the refined
        codes (``refit_intercept``).
    transform_alpha_ : float
        The L1 penalty of the refinement (``transform_alpha`` resolved).
    encoder_l0_ : float
        Mean number of non-zeros of the encoder's codes on (up to 16,384 evenly spaced
        rows of) the training data.
    training_flops_ : int
        The encoder's training FLOPs (ITO adds none at training time).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    SAEEncoder : The default encoder.
    GradientSparseCoder : Iterative inference with a dictionary learned for it.

    Examples
    --------
    >>> from sklearn_sparsegap import (SAEEncoder, SAEPlusITO, make_sparse_dictionary_data,
    ...                                mean_corr_coef, normalized_mse)
    >>> X, dictionary, codes = make_sparse_dictionary_data(512, random_state=0)
    >>> sae = SAEEncoder(dictionary=dictionary, max_iter=200, random_state=0).fit(X)
    >>> ito = SAEPlusITO(sae, prefit=True).fit(X)
    >>> refined = ito.transform(X)
    >>> bool((refined != 0).sum(axis=1).mean() <= ito.encoder_l0_)
    True
    >>> bool(normalized_mse(X, ito.inverse_transform(refined))
    ...      < normalized_mse(X, sae.inverse_transform(sae.transform(X))))
    True
    >>> bool(ito.amortisation_gap(X) > 0)
    True
    """

    _parameter_constraints = {
        "encoder": [HasMethods(["fit", "transform"]), None],
        "prefit": ["boolean"],
        "transform_algorithm": [StrOptions(set(ALGORITHMS))],
        "transform_max_iter": [Interval(Integral, 1, None, closed="left")],
        "transform_alpha": [Interval(Real, 0, None, closed="left"), None],
        "refit_intercept": ["boolean"],
        "init": [StrOptions({"encoder", "zeros"})],
        "guard": [StrOptions({"l0", "objective"}), None],
        "positive_code": ["boolean"],
        "transform_n_nonzero_coefs": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "device": [str],
    }

    def __init__(
        self,
        encoder=None,
        *,
        prefit=False,
        transform_algorithm="omp",
        transform_max_iter=500,
        transform_alpha=None,
        refit_intercept=False,
        init="encoder",
        guard="l0",
        positive_code=True,
        transform_n_nonzero_coefs=None,
        tol=1e-4,
        device="auto",
    ):
        self.encoder = encoder
        self.prefit = prefit
        self.transform_algorithm = transform_algorithm
        self.transform_max_iter = transform_max_iter
        self.transform_alpha = transform_alpha
        self.refit_intercept = refit_intercept
        self.init = init
        self.guard = guard
        self.positive_code = positive_code
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.tol = tol
        self.device = device

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit a clone of the encoder on ``X`` (or take a prefit one) and set up the refinement.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples, n_components), default=None
            Passed to the encoder's ``fit`` (the true codes when it has
            ``target="codes"``; ignored otherwise and when ``prefit``).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._validate_X(X, reset=True)
        if self.prefit:
            if self.encoder is None:
                raise ValueError("prefit=True needs a fitted encoder; got encoder=None.")
            try:
                check_is_fitted(self.encoder)
            except NotFittedError as error:
                raise ValueError(
                    f"prefit=True but the encoder {type(self.encoder).__name__} is not "
                    "fitted: fit it first, or use prefit=False to train a clone."
                ) from error
            self.encoder_ = self.encoder
        elif self.encoder is None:
            from ._sae import SAEEncoder

            self.encoder_ = SAEEncoder().fit(X, y)
        else:
            self.encoder_ = clone(self.encoder).fit(X, y)
        if not hasattr(self.encoder_, "components_"):
            raise ValueError(
                f"encoder must learn a dictionary (components_); "
                f"{type(self.encoder_).__name__} does not."
            )
        self.components_ = np.asarray(self.encoder_.components_)
        # A transcoder's dictionary lives in Y's space: its codes are refined against Y.
        transcoder = is_transcoder(self.encoder_)
        n_inputs = transcoder_n_inputs(self.encoder_) if transcoder else self.components_.shape[1]
        if n_inputs != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features but the encoder's dictionary has "
                f"{self.components_.shape[1]}."
            )
        if self.transform_algorithm in GREEDY_ALGORITHMS:
            check_n_nonzero_coefs(
                self.transform_n_nonzero_coefs, *self.components_.shape[::-1],
                self.transform_algorithm, name="transform_n_nonzero_coefs",
            )  # fmt: skip
        elif self.transform_alpha is None and self.transform_algorithm == "adam":
            raise ValueError(
                "transform_alpha=None chooses the penalty that matches the encoder's L0, "
                "but transform_algorithm='adam' gives codes that are never exactly zero: "
                "pass transform_alpha (and guard='objective')."
            )
        self.intercept_ = self._encoder_intercept()
        device = self._resolved_device()
        with torch.no_grad():
            sample = to_tensor(_evenly_spaced(X, _MAX_INTERCEPT_ROWS), device=device)
            start = self._encoder_codes(sample)
            self.encoder_l0_ = float(_l0(start).double().mean())
            signal = sample
            if transcoder:  # what the codes reconstruct: Y (less a skip connection's part)
                signal = transcoder_signal(self.encoder_, sample, _evenly_spaced(
                    check_transcoder_target(y, X.shape[0]), _MAX_INTERCEPT_ROWS))
            self.transform_alpha_ = self._resolved_transform_alpha(signal, start)
            if self.refit_intercept and np.any(self.intercept_ != 0):
                self.intercept_ = self._refitted_intercept(signal, start)
        self.training_flops_ = int(getattr(self.encoder_, "training_flops_", 0))
        return self

    def _encoder_intercept(self):
        intercept = getattr(self.encoder_, "intercept_", None)
        if intercept is None:
            return np.zeros(self.components_.shape[1], dtype=self.components_.dtype)
        return np.asarray(intercept)

    def _tensor(self, array, like):
        return to_tensor(array, device=like.device, dtype=like.dtype)

    def _resolved_transform_alpha(self, X, start):
        """``transform_alpha``, or for an L1 solver the penalty matching the encoder's L0."""
        if self.transform_alpha is not None:
            return float(self.transform_alpha)
        if self.transform_algorithm in GREEDY_ALGORITHMS:
            return 0.0
        rows = np.linspace(0, len(X) - 1, min(len(X), _MAX_ALPHA_ROWS)).astype(np.intp)
        rows = torch.as_tensor(rows, device=X.device)
        dictionary = self._tensor(self.components_, X)
        residual = X[rows] - self._tensor(self.intercept_, X)
        target = float(_l0(start[rows]).double().mean())
        with serial_if_small(X.device, 4 * len(rows) * dictionary.shape[0] * X.shape[1]):
            alpha, _ = _l0_matching_alpha(
                residual, dictionary, target, algorithm=self.transform_algorithm,
                positive=self.positive_code, max_iter=self.transform_max_iter, tol=self.tol,
                init=start[rows] if self.init == "encoder" else None,
            )  # fmt: skip
        return alpha

    def _refitted_intercept(self, X, start):
        """The intercept minimising the refinement objective jointly with the codes."""
        dictionary = self._tensor(self.components_, X)
        with serial_if_small(X.device, 4 * X.shape[0] * dictionary.shape[0] * X.shape[1]):
            _, intercept, _ = fista_with_intercept(
                X, dictionary, self._alpha(), positive=self.positive_code,
                max_iter=self.transform_max_iter, tol=self.tol,
                init=start if self.init == "encoder" else None,
            )  # fmt: skip
        return to_numpy(intercept)

    def _encoder_codes(self, X):
        """The encoder's codes of the tensor ``X``, as a tensor.

        Library encoders encode tensors directly; others go through their ``transform``
        (``np.asarray``: it may be configured to output DataFrames).
        """
        encoder = self.encoder_
        if isinstance(encoder, FrozenEstimator):
            encoder = encoder.estimator
        if (
            isinstance(encoder, BaseSparseEstimator)
            and type(encoder).transform is BaseSparseEstimator.transform
        ):
            return encoder._encode(X)
        codes = np.asarray(encoder.transform(to_numpy(X)))
        return to_tensor(codes, device=X.device, dtype=X.dtype)

    def _alpha(self):
        return self.transform_alpha_

    def _score_alpha(self):
        # score() is minus the mean of the criterion the guard and the gap use.
        return 0.0 if self.guard == "l0" else self.transform_alpha_

    def _budget(self, start):
        """Greedy solvers' K: the parameter, or each sample's encoder L0 (capped)."""
        if self.transform_n_nonzero_coefs is not None:
            return self.transform_n_nonzero_coefs
        n_components, n_features = self.components_.shape
        cap = n_components
        if self.transform_algorithm in ("omp", "gradient_pursuit"):
            cap = min(cap, n_features)
        return _l0(start).clamp_max(cap)

    def _refine(self, X, Y=None):
        """Encoder codes of the tensor ``X``, refined codes, and both criteria (for a
        transcoder encoder, refined against its outputs ``Y``)."""
        start = self._encoder_codes(X)
        greedy = self.transform_algorithm in GREEDY_ALGORITHMS
        components, intercept, encoder_intercept = self._device_weights(X)
        signal = X
        if is_transcoder(self.encoder_):
            if Y is None:
                raise ValueError(
                    f"The encoder is a transcoder ({type(self.encoder_).__name__}): its codes "
                    "are refined against the outputs Y, so pass them: transform(X, Y), "
                    "amortisation_gap(X, y=Y)."
                )
            signal = transcoder_signal(self.encoder_, X, Y)
        return _refine_codes(
            signal,
            start,
            components,
            intercept,
            encoder_intercept,
            self._alpha(),
            algorithm=self.transform_algorithm,
            n_nonzero_coefs=self._budget(start) if greedy else None,
            positive=self.positive_code,
            max_iter=self.transform_max_iter,
            tol=self.tol,
            # "zeros" leaves the solver its own cold start (zeros; exp(-10) for "adam").
            warm_start=self.init == "encoder",
            guard=self.guard,
        )

    def _device_weights(self, X):
        """The dictionary, the intercept and the encoder's intercept on ``X``'s device
        in its dtype: uploaded once and kept for the following calls."""
        return self._device_copy(
            "weights",
            (self.components_, self.intercept_, getattr(self.encoder_, "intercept_", None)),
            X.device, X.dtype,
            lambda: tuple(self._tensor(array, X) for array in (
                self.components_, self.intercept_, self._encoder_intercept())),
        )  # fmt: skip

    def _encode(self, X):
        return self._refine(X)[0]

    def transform(self, X, y=None):
        """Encoder codes refined by ``transform_algorithm`` on the frozen dictionary.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to encode.
        y : array-like of shape (n_samples, n_outputs), default=None
            Only for a transcoder encoder (:class:`SAETranscoder`), and required then:
            the outputs ``Y`` its codes are refined against (less the skip
            connection's part). Ignored otherwise.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
            The refined codes, in the dtype of ``X``.
        """
        if y is None or not is_transcoder(getattr(self, "encoder_", None)):
            return super().transform(X)
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        Y = check_transcoder_target(y, X.shape[0])
        device = self._resolved_device()
        with torch.no_grad():
            X_tensor = to_tensor(X, device=device)
            codes = self._refine(X_tensor, to_tensor(Y, device=device, dtype=X_tensor.dtype))[0]
        return to_numpy(codes)

    def fit_transform(self, X, y=None):
        """Fit, then transform ``X`` (with ``y`` for a transcoder encoder).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like, default=None
            As in :meth:`fit`; for a transcoder encoder also passed to :meth:`transform`.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
            The refined codes of ``X``.
        """
        self.fit(X, y)
        return self.transform(X, y if is_transcoder(self.encoder_) else None)

    def amortisation_gap(self, X, per_sample=False, *, y=None):
        """The guard's criterion at the encoder's codes minus at the refined codes.

        The amortisation gap the paper names: how much better the codes get when each
        sample's are optimised instead of predicted. The criterion is half the squared
        reconstruction error for ``guard="l0"`` (the codes then have no more non-zeros
        than the encoder's), else the objective at ``transform_alpha_``. Always >= 0
        with a guard.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        per_sample : bool, default=False
            Return the gap of every sample instead of the mean.
        y : array-like of shape (n_samples, n_outputs), default=None
            The outputs ``Y`` of a transcoder encoder (required then; the criterion is
            then on ``Y``); ignored otherwise.

        Returns
        -------
        gap : float or ndarray of shape (n_samples,)
            The mean gap, or the per-sample gaps.
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        with torch.no_grad():
            X_tensor = to_tensor(X, device=self._resolved_device())
            Y = None
            if y is not None and is_transcoder(self.encoder_):
                Y = to_tensor(check_transcoder_target(y, X.shape[0]), device=X_tensor.device,
                              dtype=X_tensor.dtype)  # fmt: skip
            _, before, after = self._refine(X_tensor, Y)
            gap = to_numpy(before - after)
        return gap if per_sample else float(gap.mean())

    def inference_flops(self, n_samples, n_iter=None):
        """FLOPs of encoding ``n_samples`` and refining their codes.

        Parameters
        ----------
        n_samples : int
            Number of samples.
        n_iter : int, default=None
            Refinement iterations; None counts the full ``transform_max_iter`` budget for the
            iterative solvers (an upper bound: ``tol`` may stop earlier) and, for the
            greedy ones, ``transform_n_nonzero_coefs`` steps or, when that is None, the
            encoder's mean training L0 ``encoder_l0_`` rounded up (each sample takes its
            own number of steps).

        Returns
        -------
        flops : int
            Encoder inference FLOPs plus ``flops.sparse_encode_flops`` of the refinement.
        """
        check_is_fitted(self)
        n_components, n_features = self.components_.shape
        greedy = self.transform_algorithm in GREEDY_ALGORITHMS
        n_nonzero = self.transform_n_nonzero_coefs
        if n_nonzero is None:
            n_nonzero = max(1, math.ceil(self.encoder_l0_))
            if self.transform_algorithm in ("omp", "gradient_pursuit"):
                n_nonzero = min(n_nonzero, n_features)
            n_nonzero = min(n_nonzero, n_components)
        refinement = sparse_encode_flops(
            self.transform_algorithm, n_features, n_components, n_samples,
            n_iter=n_iter if n_iter is not None or greedy else self.transform_max_iter,
            n_nonzero_coefs=n_nonzero,
        )  # fmt: skip
        return self.encoder_.inference_flops(n_samples) + refinement


def _evenly_spaced(X, n_rows):
    """At most ``n_rows`` evenly spaced rows of ``X`` (``X`` itself when it is small)."""
    if len(X) <= n_rows:
        return X
    return X[np.linspace(0, len(X) - 1, n_rows).astype(np.intp)]
