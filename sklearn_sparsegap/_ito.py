"""Amortised codes refined by inference-time optimisation (ITO): ``SAEPlusITO``."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from ._base import BaseSparseEstimator
from ._compat import HasMethods, Interval, StrOptions, _fit_context
from ._solvers import ALGORITHMS, GREEDY_ALGORITHMS, default_n_nonzero_coefs, fista_with_intercept
from ._solvers._sparse_encode import check_n_nonzero_coefs, encode_tensor
from ._torch_utils import serial_if_small, to_numpy, to_tensor
from ._training import objective
from .flops import sparse_encode_flops

# transform_alpha=None means this fraction of the encoder's alpha: an encoder needs a
# strong penalty to learn sparse codes, inference on a frozen dictionary recovers them
# best with a much weaker one (see :ref:`defaults`).
_ITO_ALPHA_FRACTION = 0.025
# The intercept is refitted on at most this many training rows (evenly spaced).
_MAX_INTERCEPT_ROWS = 2**14


@torch.no_grad()
def _refine_codes(
    X,
    start,
    dictionary,
    intercept,
    start_intercept,
    alpha,
    *,
    algorithm="fista",
    n_nonzero_coefs=None,
    positive=True,
    max_iter=500,
    tol=1e-4,
    warm_start=True,
):
    """Refine amortised codes on a frozen dictionary; keep, per sample, the better.

    Runs ``algorithm`` on ``X - intercept`` (from ``start`` when ``warm_start``, else the
    solver's cold start) and scores both sets of codes on the objective
    ``0.5 * ||x - s @ D - b||^2 + alpha * ||s||_1``: ``start`` with ``start_intercept``
    (the encoder's own decoder bias), the refined codes with ``intercept``. With
    ``warm_start`` each sample keeps the codes of lower objective, so the refinement is
    never worse than its start; without it the solver's codes are returned as they are.

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
        L1 penalty of the refinement and of the objective.
    algorithm, n_nonzero_coefs, positive, max_iter, tol
        As in :func:`sparse_encode`.
    warm_start : bool, default=True
        Start from ``start`` and keep the better codes per sample.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The refined codes.
    start_objective, objective : Tensor of shape (n_samples,)
        Per-sample objective at ``start`` and at ``codes``.
    """
    codes, _ = encode_tensor(
        X - intercept, dictionary, algorithm=algorithm, alpha=alpha,
        n_nonzero_coefs=n_nonzero_coefs, positive=positive, max_iter=max_iter, tol=tol,
        init=start if warm_start else None,
    )  # fmt: skip
    before = objective(X, start, dictionary, start_intercept, alpha, per_sample=True)
    after = objective(X, codes, dictionary, intercept, alpha, per_sample=True)
    if warm_start:
        worse = after > before
        codes = torch.where(worse[:, None], start, codes)
        after = torch.minimum(before, after)
    return codes, before, after


class SAEPlusITO(BaseSparseEstimator):
    """An amortised encoder whose codes are refined on its frozen dictionary (SAE + ITO).

    ``fit`` trains a clone of ``encoder`` (a :class:`SAEEncoder` by default; any library
    encoder, known-dictionary mode included). ``transform`` starts from the encoder's codes
    (``init="encoder"``) and runs ``transform_algorithm`` on the encoder's dictionary and
    decoder bias, minimising the library objective
    ``0.5 * ||x - s @ D - b||^2 + transform_alpha * ||s||_1``. Per sample, the refined codes are
    kept only when they lower that objective below the encoder's own (its codes on its
    own dictionary and bias), so ITO is never worse than the encoder it starts from;
    :meth:`amortisation_gap` reports how much it gained. With
    ``init="zeros"`` the solver's codes are returned as they are (a pure cold start),
    so the gap can then be negative when the budget is too small.

    The paper's authors meant to start ITO from the SAE codes but always started from a
    constant; ``init="zeros"`` reproduces that ablation (the solver's own cold start:
    zeros, or ``exp(-10)`` for ``"adam"``).

    Parameters
    ----------
    encoder : estimator, default=None
        An unfitted library encoder; None means ``SAEEncoder()``. To refine the codes
        of an encoder that is already fitted, pass
        ``sklearn.frozen.FrozenEstimator(fitted_encoder)``: ``fit`` then keeps it as is.
    transform_algorithm : {"fista", "ista", "omp", "mp", "gradient_pursuit", "topk", "adam"}, \
            default="fista"
        The refinement solver (:func:`sparse_encode`). Greedy solvers (``"omp"``,
        ``"mp"``, ``"gradient_pursuit"``, ``"topk"``) ignore ``init``.
    transform_max_iter : int, default=500
        Iteration budget of the refinement (and of the intercept refit) for ``"fista"``,
        ``"ista"`` and ``"adam"``; the greedy solvers take
        ``transform_n_nonzero_coefs`` steps.
    transform_alpha : float, default=None
        L1 penalty of the refinement and of the objective the gap is measured on. None
        means ``0.025 * encoder.alpha / encoder.input_scale_`` (the encoder's penalty
        on the scale of ``X``, see ``scale_input``): an encoder needs a strong penalty to learn sparse
        codes, but inference on a frozen dictionary recovers them best with a weak one.
        The price is density where the dictionary is imperfect: raise
        ``transform_alpha`` when sparsity matters more than recovery, or pass the
        encoder's ``alpha`` to measure the gap on the encoder's own training objective.
        The value used is ``transform_alpha_``; the default is chosen on the paper's
        task (see :ref:`defaults`).
    refit_intercept : bool, default=True
        Re-estimate the decoder bias for the refined codes: ``fit`` solves, on the
        training data, the lasso at ``transform_alpha`` with one shared unpenalised
        intercept (FISTA, warm-started from the encoder's codes). The encoder's own bias
        compensates the shrinkage of its codes and is wrong for refined ones. No effect
        when the encoder has no bias. Samples whose encoder codes are kept are then
        decoded with the refitted bias by ``inverse_transform``.
    init : {"encoder", "zeros"}, default="encoder"
        Start from the encoder's codes or from zero.
    positive_code : bool, default=True
        Constrain the refined codes to be non-negative.
    transform_n_nonzero_coefs : int, default=None
        Atoms per sample (K) of the greedy solvers; None uses ``max(1, n_features //
        10)`` capped by ``n_components``. It must not exceed ``n_components``, nor
        ``n_features`` for ``"omp"`` and ``"gradient_pursuit"``.
    tol : float, default=1e-4
        Stopping tolerance of the refinement, as in :func:`sparse_encode`: ``"fista"``
        and ``"ista"`` stop a sample once its codes change by at most ``tol`` times their
        norm in one iteration, ``"adam"`` once every sample's do; the greedy solvers
        ignore it. The intercept refit stops when the whole code matrix does.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Attributes
    ----------
    encoder_ : estimator
        The fitted clone of ``encoder``.
    components_ : ndarray of shape (n_components, n_features)
        The encoder's dictionary.
    intercept_ : ndarray of shape (n_features,)
        The decoder bias of the refinement: the encoder's, or refitted for the refined
        codes (``refit_intercept``).
    transform_alpha_ : float
        The L1 penalty of the refinement (``transform_alpha`` resolved).
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
    ...                                mean_corr_coef)
    >>> X, dictionary, codes = make_sparse_dictionary_data(512, random_state=0)
    >>> ito = SAEPlusITO(SAEEncoder(dictionary=dictionary, max_iter=200, random_state=0))
    >>> ito = ito.fit(X)
    >>> sae_mcc = mean_corr_coef(codes, ito.encoder_.transform(X))
    >>> bool(mean_corr_coef(codes, ito.transform(X)) > sae_mcc)
    True
    >>> bool(ito.amortisation_gap(X) > 0)
    True
    """

    _parameter_constraints = {
        "encoder": [HasMethods(["fit", "transform"]), None],
        "transform_algorithm": [StrOptions(set(ALGORITHMS))],
        "transform_max_iter": [Interval(Integral, 1, None, closed="left")],
        "transform_alpha": [Interval(Real, 0, None, closed="left"), None],
        "refit_intercept": ["boolean"],
        "init": [StrOptions({"encoder", "zeros"})],
        "positive_code": ["boolean"],
        "transform_n_nonzero_coefs": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "device": [str],
    }

    def __init__(
        self,
        encoder=None,
        *,
        transform_algorithm="fista",
        transform_max_iter=500,
        transform_alpha=None,
        refit_intercept=True,
        init="encoder",
        positive_code=True,
        transform_n_nonzero_coefs=None,
        tol=1e-4,
        device="auto",
    ):
        self.encoder = encoder
        self.transform_algorithm = transform_algorithm
        self.transform_max_iter = transform_max_iter
        self.transform_alpha = transform_alpha
        self.refit_intercept = refit_intercept
        self.init = init
        self.positive_code = positive_code
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.tol = tol
        self.device = device

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit a clone of the encoder on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples, n_components), default=None
            Passed to the encoder's ``fit`` (the true codes when it has
            ``target="codes"``; ignored otherwise).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._validate_X(X, reset=True)
        if self.encoder is None:
            from ._sae import SAEEncoder

            encoder = SAEEncoder()
        else:
            encoder = clone(self.encoder)
        self.encoder_ = encoder.fit(X, y)
        if not hasattr(self.encoder_, "components_"):
            raise ValueError(
                f"encoder must learn a dictionary (components_); {type(encoder).__name__} "
                "does not."
            )
        self.components_ = np.asarray(self.encoder_.components_)
        if self.transform_algorithm in GREEDY_ALGORITHMS:
            check_n_nonzero_coefs(
                self.transform_n_nonzero_coefs, *self.components_.shape[::-1],
                self.transform_algorithm, name="transform_n_nonzero_coefs",
            )  # fmt: skip
        self.transform_alpha_ = self._resolved_transform_alpha()
        self.intercept_ = self._encoder_intercept()
        if self.refit_intercept and np.any(self.intercept_ != 0):
            self.intercept_ = self._refitted_intercept(X)
        self.training_flops_ = int(getattr(self.encoder_, "training_flops_", 0))
        return self

    def _encoder_intercept(self):
        intercept = getattr(self.encoder_, "intercept_", None)
        if intercept is None:
            return np.zeros(self.components_.shape[1], dtype=self.components_.dtype)
        return np.asarray(intercept)

    def _refitted_intercept(self, X):
        """The intercept minimising the refinement objective jointly with the codes."""
        if len(X) > _MAX_INTERCEPT_ROWS:
            X = X[np.linspace(0, len(X) - 1, _MAX_INTERCEPT_ROWS).astype(np.intp)]
        device = self._resolved_device()
        with torch.no_grad():
            X = to_tensor(X, device=device)
            dictionary = to_tensor(self.components_, device=device, dtype=X.dtype)
            start = self._encoder_codes(X) if self.init == "encoder" else None
            with serial_if_small(device, 4 * X.shape[0] * dictionary.shape[0] * X.shape[1]):
                _, intercept, _ = fista_with_intercept(
                    X, dictionary, self._alpha(), positive=self.positive_code,
                    max_iter=self.transform_max_iter, tol=self.tol, init=start,
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

    def _resolved_transform_alpha(self):
        if self.transform_alpha is not None:
            return float(self.transform_alpha)
        # The encoder's alpha applies to its scaled input (scale_input): on X's scale
        # it is alpha / input_scale_.
        return _ITO_ALPHA_FRACTION * float(getattr(self.encoder_, "alpha", 0.0)) / float(
            getattr(self.encoder_, "input_scale_", 1.0)
        )

    def _alpha(self):
        return self.transform_alpha_

    _score_alpha = _alpha

    def _n_nonzero(self):
        if self.transform_n_nonzero_coefs is not None:
            return self.transform_n_nonzero_coefs
        return default_n_nonzero_coefs(*self.components_.shape[::-1])

    def _refine(self, X):
        """Encoder codes of the tensor ``X``, refined codes, and both objectives."""
        start = self._encoder_codes(X)

        def tensor(array):
            return to_tensor(array, device=X.device, dtype=X.dtype)

        greedy = self.transform_algorithm in GREEDY_ALGORITHMS
        codes, before, after = _refine_codes(
            X,
            start,
            tensor(self.components_),
            tensor(self.intercept_),
            tensor(self._encoder_intercept()),
            self._alpha(),
            algorithm=self.transform_algorithm,
            n_nonzero_coefs=self._n_nonzero() if greedy else None,
            positive=self.positive_code,
            max_iter=self.transform_max_iter,
            tol=self.tol,
            # "zeros" leaves the solver its own cold start (zeros; exp(-10) for "adam")
            # and returns its codes as they are.
            warm_start=self.init == "encoder",
        )
        return codes, before, after

    def _encode(self, X):
        return self._refine(X)[0]

    def transform(self, X):
        """Encoder codes refined by ``transform_algorithm`` on the frozen dictionary.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
            The refined codes, in the dtype of ``X``.
        """
        return super().transform(X)

    def amortisation_gap(self, X, per_sample=False):
        """Objective at the encoder's codes minus objective at the refined codes.

        The amortisation gap the paper names: how much lower the library objective gets
        when each sample's codes are optimised instead of predicted. Always >= 0 with
        ``init="encoder"``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        per_sample : bool, default=False
            Return the gap of every sample instead of the mean.

        Returns
        -------
        gap : float or ndarray of shape (n_samples,)
            The mean gap, or the per-sample gaps.
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        with torch.no_grad():
            _, before, after = self._refine(to_tensor(X, device=self._resolved_device()))
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
            iterative solvers (an upper bound: ``tol`` may stop earlier) and the
            ``transform_n_nonzero_coefs`` steps of the greedy ones.

        Returns
        -------
        flops : int
            Encoder inference FLOPs plus ``flops.sparse_encode_flops`` of the refinement.
        """
        check_is_fitted(self)
        n_components, n_features = self.components_.shape
        refinement = sparse_encode_flops(
            self.transform_algorithm, n_features, n_components, n_samples,
            n_iter=n_iter if n_iter is not None or self.transform_algorithm in GREEDY_ALGORITHMS
            else self.transform_max_iter,
            n_nonzero_coefs=self._n_nonzero(),
        )  # fmt: skip
        return self.encoder_.inference_flops(n_samples) + refinement
