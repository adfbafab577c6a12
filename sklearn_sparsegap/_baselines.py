"""Classical baseline: ``LarsDictionaryLearning``, an adapter over scikit-learn."""

from numbers import Integral, Real

import numpy as np
from sklearn.decomposition import (
    DictionaryLearning,
    MiniBatchDictionaryLearning,
    sparse_encode,
)
from sklearn.utils.validation import check_is_fitted

from ._base import BaseSparseEstimator
from ._compat import Interval, _fit_context
from ._dask import dask_transform, is_dask_array
from .flops import lars_dictionary_learning_flops


class LarsDictionaryLearning(BaseSparseEstimator):
    """Dictionary learning with LARS-Lasso codes: scikit-learn's, in this library's terms.

    A thin adapter over :class:`sklearn.decomposition.DictionaryLearning` with
    ``fit_algorithm="lars"`` and ``transform_algorithm="lasso_lars"`` (the paper's
    Appendix H baseline), or over
    :class:`sklearn.decomposition.MiniBatchDictionaryLearning` when ``batch_size`` is
    set. Both alternate a sparse-coding step (the Lasso solution by least-angle
    regression, per sample) and a block-coordinate update of the unit-norm-bounded atoms,
    on the library objective, per sample::

        0.5 * ||x - s @ D||_2^2 + alpha * ||s||_1

    (scikit-learn's own convention, so ``alpha`` means the same as in every other
    estimator here). The fitted scikit-learn object is ``estimator_``; ``components_``,
    :meth:`transform` and :meth:`inverse_transform` return exactly what it returns, cast
    to the dtype of the input.

    Parameters
    ----------
    n_components : int, default=None
        Number of atoms. None means ``n_features``.
    alpha : float, default=0.2
        Weight of the L1 penalty in the training objective (the library's objective,
        as in every estimator). Chosen on the paper's task with the default 15
        iterations; see :ref:`defaults`.
    transform_alpha : float, default=None
        L1 weight used by :meth:`transform` (and :meth:`score`). None means ``alpha``.
    max_iter : int, default=15
        Outer iterations (coding step + dictionary update) on the whole of ``X``; with
        ``batch_size``, passes (epochs) over ``X``. Each full-batch iteration solves one
        LARS path per sample in scikit-learn's Python LARS, so the fit costs about
        ``max_iter`` times one :meth:`transform` of the training data; see
        :ref:`defaults` for the measured trade-off.
    tol : float, default=1e-8
        Full batch: stop when the objective decreased by less than ``tol`` times its
        value in one iteration. With ``batch_size``: stop when the change of the
        dictionary between two minibatches (Frobenius norm over ``n_components``) is at
        most ``tol``; scikit-learn also stops after 10 minibatches without improvement
        of a smoothed objective.
    batch_size : int, default=None
        Minibatch size. None fits on the full batch with ``DictionaryLearning``; an
        integer switches to ``MiniBatchDictionaryLearning`` (online updates, shuffled
        once), for data too large for full-batch iterations.
    positive_code : bool, default=False
        Constrain the codes to be non-negative. scikit-learn's LARS *fit* rejects the
        constraint, so the coding step of ``fit`` then uses its coordinate-descent Lasso
        (``fit_algorithm="cd"``), which solves the same convex sub-problem; :meth:`transform`
        still uses LARS (``"lasso_lars"`` with ``positive=True``).
    n_jobs : int, default=None
        Number of parallel jobs of the per-sample coding step (fit and transform),
        passed to scikit-learn; -1 uses all processors. The result does not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds the re-initialisation of unused atoms (and, with ``batch_size``, the
        randomised SVD initialisation and the shuffling). The full-batch fit starts
        from the SVD of ``X``.
    verbose : int, default=0
        Verbosity of scikit-learn's progress messages.

    Attributes
    ----------
    estimator_ : DictionaryLearning or MiniBatchDictionaryLearning
        The fitted scikit-learn estimator.
    components_ : ndarray of shape (n_components, n_features)
        The dictionary, ``estimator_.components_`` in the dtype of the training data.
        Atoms have at most unit norm (scikit-learn's constraint ``||d_k|| <= 1``).
    intercept_ : ndarray of shape (n_features,)
        Zeros: the model has no intercept (kept for a uniform interface).
    n_iter_ : int
        Outer iterations run (epochs with ``batch_size``).
    n_steps_ : int
        Dictionary updates run: ``n_iter_`` on the full batch, else minibatches.
    n_active_ : float
        Mean number of non-zero codes per sample at the end of fit: on the training
        data at the last coding step (full batch) or on the first ``batch_size``
        training samples with the final dictionary (minibatch). It is the LARS path
        length used by the FLOP estimates.
    history_ : dict of ndarray
        Training log with keys ``step``, ``loss`` (mean objective per sample: after
        each iteration on the full batch; with ``batch_size``, on each minibatch before
        its dictionary update) and ``flops`` (cumulative estimate). With ``batch_size``
        the step that triggers early stopping is not logged.
    training_flops_ : int
        Estimated training FLOPs:
        :func:`~sklearn_sparsegap.flops.lars_dictionary_learning_flops` for ``n_steps_``
        steps over the full batch (or ``batch_size`` samples) with the measured
        ``n_active_``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sklearn.decomposition.DictionaryLearning : The wrapped estimator.
    sklearn.decomposition.MiniBatchDictionaryLearning : The wrapped online estimator.
    GradientSparseCoder : Iterative sparse coding on GPU-friendly batched solvers.
    SAEEncoder : Amortised sparse inference (a sparse autoencoder).

    Notes
    -----
    FLOP counts are analytic *estimates* (scikit-learn runs LARS one sample at a time
    in Python, so they describe the arithmetic, not the wall time). Per iteration on
    ``n`` samples: the Gram matrix ``2 N^2 M``; per sample the correlations ``2MN``,
    the initial argmax ``N`` and, for each of ``K`` LARS steps (active set size
    ``k``), ``2Nk + 3k^2 + 8N`` (Cholesky update and direction solve ``3k^2``, the
    equiangular correlations ``2Nk``, the step size and updates ``8N``); the dictionary
    update ``2nN^2 + 2nMN + N(2NM + 5M)`` and the objective ``2nMN + 3nM + 2nN``.
    ``K`` is ``n_active_``. Inference counts the coding of each sample and its
    decoding ``2MN``, as the SAE count does.

    Examples
    --------
    >>> from sklearn_sparsegap import (
    ...     LarsDictionaryLearning, make_sparse_dictionary_data, mean_corr_coef)
    >>> X, dictionary, codes = make_sparse_dictionary_data(200, random_state=0)
    >>> lars = LarsDictionaryLearning(n_components=16, max_iter=5, random_state=0).fit(X)
    >>> lars.components_.shape
    (16, 8)
    >>> lars.transform(X).shape
    (200, 16)
    >>> 0.0 <= mean_corr_coef(codes, lars.transform(X)) <= 1.0
    True
    >>> lars.training_flops_ > 0
    True
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "transform_alpha": [Interval(Real, 0, None, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "positive_code": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_components=None,
        *,
        alpha=0.2,
        transform_alpha=None,
        max_iter=15,
        tol=1e-8,
        batch_size=None,
        positive_code=False,
        n_jobs=None,
        random_state=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.transform_alpha = transform_alpha
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.positive_code = positive_code
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _transform_alpha(self):
        return self.alpha if self.transform_alpha is None else self.transform_alpha

    def _score_alpha(self):
        return self._transform_alpha()

    def _fit_algorithm(self):
        # scikit-learn's "lars" fit refuses positive codes; its "cd" fit solves the
        # same Lasso sub-problem with coordinate descent and accepts the constraint.
        return "cd" if self.positive_code else "lars"

    def _make_estimator(self):
        common = dict(
            n_components=self.n_components,
            alpha=self.alpha,
            max_iter=self.max_iter,
            tol=self.tol,
            fit_algorithm=self._fit_algorithm(),
            transform_algorithm="lasso_lars",
            transform_alpha=self._transform_alpha(),
            positive_code=self.positive_code,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            verbose=self.verbose,
        )
        if self.batch_size is None:
            estimator = DictionaryLearning(**common)
        else:
            estimator = MiniBatchDictionaryLearning(batch_size=self.batch_size, **common)
        # Codes come back as arrays whatever the global set_output configuration;
        # this estimator's own transform is wrapped by set_output.
        return estimator.set_output(transform="default")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the dictionary from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used, present so that ``GridSearchCV(..., scoring=mcc_scorer)`` can
            pass the true codes as ``y``.

        Returns
        -------
        self : object
            The fitted estimator.

        Examples
        --------
        >>> from sklearn_sparsegap import LarsDictionaryLearning, make_sparse_dictionary_data
        >>> X, dictionary, codes = make_sparse_dictionary_data(100, random_state=0)
        >>> lars = LarsDictionaryLearning(n_components=16, max_iter=3, random_state=0)
        >>> lars.fit(X, codes).n_iter_  # y is ignored
        3
        >>> type(lars.estimator_).__name__
        'DictionaryLearning'
        """
        X = self._validate_X(X, reset=True)
        estimator = self._make_estimator()
        if self.batch_size is None:
            codes, n_iter, n_steps, losses = _fit_dictionary_learning(estimator, X)
        else:
            codes, n_iter, n_steps, losses = _fit_minibatch_dictionary_learning(
                estimator, X, algorithm="lasso_" + self._fit_algorithm(), alpha=self.alpha,
                positive=self.positive_code,
            )  # fmt: skip
        self.estimator_ = estimator
        self.components_ = estimator.components_.astype(X.dtype, copy=False)
        self.intercept_ = np.zeros(X.shape[1], dtype=X.dtype)
        self.n_iter_ = n_iter
        self.n_steps_ = n_steps
        self.n_active_ = float(np.count_nonzero(codes)) / codes.shape[0]
        # A step (iteration or minibatch) codes the rows of ``codes``.
        step_flops, self.training_flops_ = (
            lars_dictionary_learning_flops(
                X.shape[1], self.components_.shape[0], codes.shape[0], steps,
                n_active=self.n_active_,
            )  # fmt: skip
            for steps in (1, n_steps)
        )
        steps = np.arange(1, losses.shape[0] + 1)
        self.history_ = {"step": steps, "loss": losses, "flops": steps * step_flops}
        return self

    def transform(self, X):
        """Encode ``X`` with LARS-Lasso at ``transform_alpha`` (or ``alpha``).

        Delegates to ``estimator_.transform`` (``transform_algorithm="lasso_lars"``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
            The codes, in the dtype of ``X`` (float64 stays float64, else float32).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_sparsegap import LarsDictionaryLearning, make_sparse_dictionary_data
        >>> X, dictionary, codes = make_sparse_dictionary_data(100, random_state=0)
        >>> lars = LarsDictionaryLearning(n_components=16, max_iter=3, random_state=0).fit(X)
        >>> lars.transform(X).shape
        (100, 16)
        >>> lars.transform(X.astype(np.float32)).dtype
        dtype('float32')
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return dask_transform(self, X)
        X = self._validate_X(X, reset=False)
        codes = self.estimator_.transform(X)
        return np.asarray(codes).astype(X.dtype, copy=False)

    def inference_flops(self, n_samples):
        """Estimated FLOPs of encoding (LARS) and decoding ``n_samples``.

        Parameters
        ----------
        n_samples : int
            Number of samples.

        Returns
        -------
        flops : int
            ``flops.lars_dictionary_learning_flops(..., learn_dictionary=False)`` with
            the path length ``n_active_`` measured in fit; linear in ``n_samples``.

        Examples
        --------
        >>> from sklearn_sparsegap import LarsDictionaryLearning, make_sparse_dictionary_data
        >>> X, dictionary, codes = make_sparse_dictionary_data(100, random_state=0)
        >>> lars = LarsDictionaryLearning(n_components=16, max_iter=3, random_state=0).fit(X)
        >>> lars.inference_flops(200) == 2 * lars.inference_flops(100)
        True
        """
        check_is_fitted(self)
        return lars_dictionary_learning_flops(
            self.components_.shape[1],
            self.components_.shape[0],
            n_samples,
            n_active=self.n_active_,
            learn_dictionary=False,
        )


def _fit_dictionary_learning(estimator, X):
    """Fit the ``DictionaryLearning`` ``estimator`` on ``X``.

    Returns the codes of the last coding step, the iterations run (twice: each is one
    dictionary update) and the objective after each iteration, averaged over samples.
    """
    codes = estimator.fit_transform(X)
    n_iter = int(estimator.n_iter_)
    return codes, n_iter, n_iter, np.asarray(estimator.error_, dtype=np.float64) / X.shape[0]


def _fit_minibatch_dictionary_learning(estimator, X, *, algorithm, alpha, positive):
    """Fit the ``MiniBatchDictionaryLearning`` ``estimator`` on ``X``, recording the cost
    of each minibatch (before its dictionary update) through its ``callback``, which is
    removed again afterwards.

    Returns the codes (``algorithm`` at ``alpha``) of the first ``batch_size`` rows on
    the final dictionary, the epochs and minibatches run, and the recorded costs.
    """
    batch_losses = []

    def record(local):
        batch_losses.append(float(local.get("batch_cost", np.nan)))

    estimator.set_params(callback=record)
    try:
        estimator.fit(X)
    finally:
        estimator.set_params(callback=None)
    codes = sparse_encode(
        X[: min(estimator.batch_size, X.shape[0])], estimator.components_,
        algorithm=algorithm, alpha=alpha, positive=positive,
    )  # fmt: skip
    losses = np.asarray(batch_losses, dtype=np.float64)
    return codes, int(estimator.n_iter_), int(estimator.n_steps_), losses
