"""Iterative sparse coding: dictionary learning by alternating minimisation.

The numeric work is in ``_dict_learning``: :func:`_alternating_dictionary_learning` (full
batch), :func:`_online_dictionary_learning` (minibatches, on the library's training loop,
with checkpoints) and :func:`_adam_dictionary_learning` (the paper's procedure); tensors
in, tensors out. :class:`GradientSparseCoder` validates, converts once and stores the
results.
"""

import os
from numbers import Integral, Real

from sklearn.utils.validation import check_is_fitted

from ._base import BaseSparseEstimator, checkpoint_config
from ._batches import DiskBatches, TensorBatches, exceeds_device, is_streamed
from ._compat import Interval, StrOptions, _fit_context
from ._dict_learning import (
    _adam_dictionary_learning,
    _alternating_dictionary_learning,
    _initial_dictionary,
    _online_dictionary_learning,
)
from ._solvers import ALGORITHMS, GREEDY_ALGORITHMS, default_n_nonzero_coefs
from ._solvers._sparse_encode import check_n_nonzero_coefs, encode_tensor
from ._torch_utils import make_generator, to_numpy, to_tensor, torch_dtype
from ._training import HISTORY_KEYS, Checkpoint, history_arrays
from ._validation import check_dictionary
from .flops import sparse_encode_flops

# The alternation starts with _OVERCOMPLETE times ``n_components`` atoms and drops the
# least used ones, in equal steps, from outer iteration _PRUNE_START until _PRUNE_END, so
# spare atoms cover every direction before the fit must choose between them (see
# :ref:`defaults`).
_OVERCOMPLETE = 2
# ``transform_alpha=None`` with a learned dictionary: alpha / _TRANSFORM_ALPHA_DIVISOR.
_TRANSFORM_ALPHA_DIVISOR = 10


# Rows of the bounded sample a minibatch fit initialises its atoms from.
_MINIBATCH_SAMPLE_ROWS = 2**14


def _last_dead_fraction(history):
    """``dead_fraction_``: the last logged dead fraction (0.0 without a log)."""
    values = history["dead_fraction"]
    return float(values[-1]) if len(values) else 0.0


class GradientSparseCoder(BaseSparseEstimator):
    """Sparse coding: dictionary learning by alternating minimisation, iterative inference.

    Minimises the library objective ``0.5 * ||x - s @ D||^2 + alpha * ||s||_1`` (per
    sample, averaged) over both the codes and a dictionary with unit-norm atoms. Each
    outer iteration infers the codes of all training samples with ``fit_algorithm``
    (warm-started, batched on the torch device) and updates the dictionary by one
    block-coordinate sweep over the atoms; atoms that fall unused are resampled from the
    worst-reconstructed samples. ``transform`` infers codes for new data with
    ``transform_algorithm`` (at ``transform_alpha``), so there is no amortisation gap,
    only the cost of iterations.

    Two measures keep the alternation out of the local optima where one true atom is
    missed and make it converge in fewer iterations (see the Notes).

    ``fit_algorithm="adam"`` instead reproduces the paper's sparse coding: one
    exp-parametrised code matrix and the dictionary trained jointly with Adam (the
    library's training loop), and Adam inference at ``transform``.

    Parameters
    ----------
    n_components : int, default=None
        Number of atoms; None means ``n_features`` (or the rows of ``dictionary``).
    alpha : float, default=0.03
        L1 penalty of the objective minimised by ``fit``. The default is chosen on the
        paper's task; see :ref:`defaults`.
    transform_alpha : float, default=None
        L1 penalty of the inference in ``transform``. None means ``alpha / 10`` when the
        dictionary is learned by the alternating algorithms (less shrinkage recovers the
        codes better on a learned dictionary, at the price of more active latents), and
        ``alpha`` itself with a given ``dictionary`` or ``fit_algorithm="adam"`` (the
        paper's procedure). Set it to ``alpha`` or above when sparsity matters more than
        recovery. The value used is ``transform_alpha_``.

        With ``transform_algorithm="mp"`` it is instead a tolerance, as it is for
        ``"omp"`` in scikit-learn's ``SparseCoder`` (there the squared residual norm):
        a sample stops once the norm of its residual ``x - s @ components_`` is below
        ``transform_alpha`` or a step leaves its support unchanged (the selected atom
        already has a code), after at most ``transform_n_nonzero_coefs`` steps, and
        ``r . d``, the atoms used as they are, ranks them and is the code added: the
        encoder of SAELens's matching-pursuit SAE (``residual_threshold``). On unit-norm
        atoms (every learned dictionary) the steps are MP's projections. 0 stops on
        the repeated support only. None (the default) keeps
        ``transform_n_nonzero_coefs`` steps of plain MP.
    dictionary : array-like of shape (n_components, n_features), default=None
        A known dictionary: ``fit`` only stores it (``components_`` equals it) and
        ``transform`` is pure sparse inference.
    fit_algorithm : {"fista", "ista", "omp", "mp", "gradient_pursuit", "topk", "adam"}, \
            default="fista"
        Algorithm of the codes during fitting (see :func:`sparse_encode`); greedy
        algorithms keep ``transform_n_nonzero_coefs`` atoms per sample. ``"adam"`` is the
        paper's procedure: codes and dictionary trained jointly by Adam.
    transform_algorithm : {"fista", "ista", "omp", "mp", "gradient_pursuit", "topk", \
            "adam"} or None, default=None
        Algorithm of :meth:`transform` (any :func:`sparse_encode` algorithm). None means
        ``fit_algorithm``; the value used is ``transform_algorithm_``.
    transform_n_nonzero_coefs : int, default=None
        Atoms per sample (K) of the greedy algorithms, in ``fit`` and ``transform``; None
        uses ``max(1, n_features // 10)`` capped by ``n_components``. It must not exceed
        ``n_components``, nor ``n_features`` for ``"omp"`` and ``"gradient_pursuit"``.
        With ``transform_algorithm="mp"`` and a ``transform_alpha`` it is the cap on the
        steps of ``transform`` (any number; None: ``n_features``, SAELens's default
        ``max_iterations``); ``fit`` keeps its meaning above.
    positive_code : bool, default=True
        Constrain the codes to be non-negative (the paper's codes are).
    max_iter : int, default=300
        What one iteration is depends on ``fit_algorithm``:

        - ``"fista"``, ``"ista"`` and the greedy algorithms: the maximum number of outer
          iterations, each one inference of the codes of every training sample (at most
          20 warm-started solver iterations, or one greedy encode) followed by one sweep
          of dictionary updates; ``n_iter_`` outer iterations are run;
        - ``"adam"``: the number of full-batch Adam steps, each a step on every code and
          on the dictionary.

        - with ``batch_size`` (minibatch alternation): the maximum number of epochs,
          passes over the training data in minibatches.

        Unused with a given ``dictionary``.
    batch_size : int, default=None
        None alternates on the whole training set (codes of every sample, then a
        sweep). An int learns the dictionary by minibatch alternation instead (online
        dictionary learning, Mairal et al. 2010, as scikit-learn's
        ``MiniBatchDictionaryLearning``): the codes of each minibatch of this many rows,
        inferred with ``fit_algorithm`` from zero (at most 20 iterations, or one greedy
        encode), update running averages of ``s s^T`` and ``s^T x``, then one sweep
        updates the atoms. Memory is then bounded by the batch and the dictionary: this
        is the mode for data that does not fit in memory (an on-disk ``X``, e.g. from
        :func:`~sklearn_sparsegap.activations.load_activations`, is streamed from disk
        and requires it). There is no pruning of a larger start. Stored, capped at ``n_samples``, as
        ``batch_size_``. ``fit_algorithm="adam"`` has no minibatch mode.
    transform_max_iter : int, default=1000
        Iteration budget of the inference in ``transform`` for ``"fista"``, ``"ista"``
        and ``"adam"`` (iterations over all samples, each sample stopping at
        ``tol=1e-4`` of :func:`sparse_encode`); the greedy algorithms ignore it and take
        ``transform_n_nonzero_coefs`` steps.
    tol : float, default=1e-6
        Stopping rule of ``fit``, relative to the objective:

        - ``"fista"``, ``"ista"`` and the greedy algorithms: stop when, once the pruning
          has left ``n_components`` atoms, one outer iteration lowered the objective by
          less than ``tol`` times its previous value;
        - ``"adam"``: stop when the lowest objective logged (every 10 steps) improved by
          less than ``tol`` times its value over the last 100 steps; 0 runs all
          ``max_iter`` steps;
        - with ``batch_size``: the same rule on the objective averaged over each epoch
          (over the last 100 minibatches, rounded up to whole epochs), as the
          autoencoders stop.
    learning_rate : float, default=3e-3
        Adam step size, used only by ``fit_algorithm="adam"``.
    checkpoint_path : str or path-like, default=None
        With ``batch_size`` (minibatch alternation) only: where ``fit`` saves its
        training state (dictionary, running statistics, counters, random generators,
        history), every ``checkpoint_every`` minibatches. When the file exists at the
        start of ``fit`` training resumes from it, mid-epoch too, and ends with the
        dictionary an uninterrupted fit with the same seed gives. A checkpoint saved
        with other parameters or other data is refused with a ``ValueError`` saying
        what differs; delete the file to start over. The file is kept after the fit.
    checkpoint_every : int, default=None
        Minibatches between checkpoints; None saves at the end of every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the dictionary initialisation and atom resampling.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    verbose : int, default=0
        Show a progress bar with the current objective.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The dictionary, unit-norm rows (or the given ``dictionary``).
    n_components_ : int
        Number of atoms (``n_components`` resolved).
    n_iter_ : int
        Outer iterations (or Adam steps) run.
    history_ : dict of ndarray
        Training log with keys ``step``, ``loss``, ``mse``, ``l1``, ``l0``,
        ``dead_fraction`` and ``flops`` (cumulative).
    dead_fraction_ : float
        The fraction of atoms dead at the end of training: used by no code of the
        last ``min(n_samples, 10**6)`` training rows, the autoencoders' definition
        (with full-batch alternation, of the last step's codes of all rows). 0.0 with a
        given ``dictionary``; always 0.0 with ``fit_algorithm="adam"``, whose codes
        are positive.
    training_flops_ : int
        Training FLOPs, counting the inference iterations actually run.
    inference_n_iter_ : int
        Iterations the final inference on the training data (with ``batch_size``: on
        ``batch_size`` evenly spaced rows of it) needed; the default iteration count of
        :meth:`inference_flops`.
    batch_size_ : int
        The minibatch size used (only with ``batch_size``).
    transform_alpha_ : float
        The L1 penalty ``transform`` uses (``transform_alpha`` resolved); with
        ``transform_algorithm="mp"`` and a ``transform_alpha``, its residual-norm
        tolerance.
    transform_algorithm_ : str
        The algorithm ``transform`` uses (``transform_algorithm`` resolved).
    intercept_ : ndarray of shape (n_features,)
        Only on a coder read by :func:`~sklearn_sparsegap.interop.load_sae` from a
        checkpoint with a decoder bias (SAELens's ``b_dec``): ``transform`` encodes ``X -
        intercept_`` and ``inverse_transform`` adds it back. ``fit`` learns none.
    device_ : str
        The device used.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sparse_encode : The inference step on its own.
    SAEPlusITO : Amortised codes refined by the same solvers.

    Notes
    -----
    The fit starts with ``2 * n_components`` atoms and drops the least used atom (the
    smallest squared code norm) in equal steps over outer iterations 20-52, so the spare
    atoms can cover every direction in the data before the fit has to choose between
    them; ``tol`` is only checked once ``n_components`` atoms are left. The dictionary is
    also extrapolated after every sweep, ``D + beta_t (D - D_prev)`` renormalised, with
    Nesterov's ``beta_t`` sequence, restarted whenever the objective went up, so
    ``history_["loss"]`` is not monotone. Together they avoid the fits that miss one
    true atom and shorten the fit; the measurements are in :ref:`defaults`.

    Examples
    --------
    >>> from sklearn_sparsegap import (GradientSparseCoder, dictionary_mcc,
    ...                                make_sparse_dictionary_data)
    >>> X, dictionary, codes = make_sparse_dictionary_data(512, random_state=0)
    >>> coder = GradientSparseCoder(n_components=16, random_state=0).fit(X)
    >>> coder.transform(X).shape
    (512, 16)
    >>> bool(dictionary_mcc(dictionary, coder.components_) > 0.99)
    True
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "transform_alpha": [Interval(Real, 0, None, closed="left"), None],
        "dictionary": ["array-like", None],
        "fit_algorithm": [StrOptions(set(ALGORITHMS))],
        "transform_algorithm": [StrOptions(set(ALGORITHMS)), None],
        "transform_n_nonzero_coefs": [Interval(Integral, 1, None, closed="left"), None],
        "positive_code": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "transform_max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "checkpoint_path": [str, os.PathLike, None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "device": [str],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_components=None,
        *,
        alpha=0.03,
        transform_alpha=None,
        dictionary=None,
        fit_algorithm="fista",
        transform_algorithm=None,
        transform_n_nonzero_coefs=None,
        positive_code=True,
        max_iter=300,
        batch_size=None,
        transform_max_iter=1000,
        tol=1e-6,
        learning_rate=3e-3,
        checkpoint_path=None,
        checkpoint_every=None,
        random_state=None,
        device="auto",
        verbose=0,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.transform_alpha = transform_alpha
        self.dictionary = dictionary
        self.fit_algorithm = fit_algorithm
        self.transform_algorithm = transform_algorithm
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.positive_code = positive_code
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.transform_max_iter = transform_max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the dictionary (or store the given one) from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used; accepted so that ``GridSearchCV(..., scoring=mcc_scorer)`` can pass
            the true codes.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._validate_X(X, reset=True)
        n_features = X.shape[1]
        device = self._resolved_device()
        self.device_ = str(device)
        # A decoder bias comes only from a loaded checkpoint; a fit learns none.
        vars(self).pop("intercept_", None)
        self.transform_alpha_ = self._resolved_transform_alpha()
        self.transform_algorithm_ = self._resolved_transform_algorithm()
        if self.dictionary is not None:
            return self._store_dictionary(X)
        n_components = n_features if self.n_components is None else self.n_components
        self._check_n_nonzero_coefs(n_features, n_components)
        generator = make_generator(self.random_state)
        if self.batch_size is not None or is_streamed(X):
            components, history = self._fit_minibatch(X, n_components, generator, device)
        else:
            components, history = self._fit_full_batch(X, n_components, generator, device)
        self.components_ = to_numpy(components)
        self.n_components_ = n_components
        self.history_ = history_arrays(history)
        self.dead_fraction_ = _last_dead_fraction(self.history_)
        return self

    def _store_dictionary(self, X):
        """``fit`` with a given ``dictionary``: check it against ``X`` and store it."""
        dictionary = check_dictionary(self.dictionary, n_features=X.shape[1])
        if self.n_components is not None and dictionary.shape[0] != self.n_components:
            raise ValueError(
                f"dictionary has {dictionary.shape[0]} rows (atoms) but "
                f"n_components={self.n_components}."
            )
        self._check_n_nonzero_coefs(X.shape[1], dictionary.shape[0])
        self.components_ = dictionary.astype(X.dtype, copy=True)
        self.n_components_ = self.components_.shape[0]
        self.history_ = history_arrays({key: [] for key in HISTORY_KEYS})
        self.training_flops_ = 0
        self.n_iter_ = 0
        self.dead_fraction_ = 0.0
        self.inference_n_iter_ = self.transform_max_iter
        return self

    def _fit_full_batch(self, X, n_components, generator, device):
        """Alternation (or Adam) on the whole of ``X``: :func:`_alternating_dictionary_learning`
        or :func:`_adam_dictionary_learning`. Returns the dictionary and the history."""
        if self.checkpoint_path is not None:
            raise ValueError(
                "checkpoint_path is only used by minibatch alternation: set batch_size "
                "(e.g. 1024), or checkpoint_path=None for a full-batch fit."
            )
        X = to_tensor(X, device=device, dtype=torch_dtype(X.dtype))
        description = type(self).__name__
        if self.fit_algorithm == "adam":
            components, _, self.n_iter_, history, self.training_flops_ = (
                _adam_dictionary_learning(
                    X, _initial_dictionary(X, n_components, generator), self.alpha,
                    learning_rate=self.learning_rate, n_epochs=self.max_iter, tol=self.tol,
                    verbose=self.verbose, description=description,
                )
            )
            self.inference_n_iter_ = self.transform_max_iter
            return components, history
        components, _, self.n_iter_, history, self.training_flops_ = (
            _alternating_dictionary_learning(
                X, _initial_dictionary(X, _OVERCOMPLETE * n_components, generator), self.alpha,
                n_components=n_components, algorithm=self.fit_algorithm,
                n_nonzero_coefs=self._n_nonzero(X.shape[1], n_components),
                positive=self.positive_code, max_iter=self.max_iter, tol=self.tol,
                generator=generator, verbose=self.verbose, description=description,
            )
        )
        # The iterations inference on the final dictionary takes: inference_flops' default.
        _, self.inference_n_iter_ = self._codes(X, components)
        return components, history

    def _fit_minibatch(self, X, n_components, generator, device):
        """Online dictionary learning over minibatches of ``X`` (in memory or streamed
        from disk): :func:`_online_dictionary_learning`. Returns the dictionary and the
        history."""
        n_samples, n_features = X.shape
        if self.fit_algorithm == "adam":
            raise ValueError(
                "fit_algorithm='adam' trains one code per training sample, which needs "
                "them all in memory: it has no minibatch mode (batch_size=None, X in memory)."
            )
        if self.batch_size is None:
            raise ValueError(
                f"X is on disk ({X.nbytes / 2**30:.1f} GiB, {n_samples} rows) and is "
                "streamed in minibatches: set batch_size (e.g. 1024)."
            )
        batch_size = min(self.batch_size, n_samples)
        dtype = torch_dtype(X.dtype)
        row_bytes = n_features * dtype.itemsize
        if is_streamed(X) or exceeds_device(n_samples, row_bytes, device):
            # From the host in minibatches: X on disk, or too large for the device.
            source = DiskBatches(X, dtype=dtype)
            sample = source.sample(_MINIBATCH_SAMPLE_ROWS, device)
        else:
            source = TensorBatches(to_tensor(X, device=device, dtype=dtype))
            sample = source.sample(_MINIBATCH_SAMPLE_ROWS)
        n_nonzero = self._n_nonzero(n_features, n_components)
        checkpoint = None
        if self.checkpoint_path is not None:
            checkpoint = Checkpoint(self.checkpoint_path, self.checkpoint_every,
                                    config=checkpoint_config(self, X))  # fmt: skip
        components, self.n_iter_, history, self.training_flops_ = (
            _online_dictionary_learning(
                source, _initial_dictionary(sample, n_components, generator), self.alpha,
                algorithm=self.fit_algorithm,
                n_nonzero_coefs=n_nonzero if self.fit_algorithm in GREEDY_ALGORITHMS else None,
                positive=self.positive_code, n_epochs=self.max_iter, batch_size=batch_size,
                tol=self.tol, generator=generator, checkpoint=checkpoint,
                verbose=self.verbose, description=type(self).__name__,
            )
        )
        # inference_flops' default: the iterations inference takes on one batch of the
        # (evenly spaced) sample.
        _, self.inference_n_iter_ = self._codes(sample[:batch_size], components)
        self.batch_size_ = batch_size
        return components, history

    def _resolved_transform_alpha(self):
        if self.transform_alpha is not None:
            return float(self.transform_alpha)
        if self.dictionary is not None or self.fit_algorithm == "adam":
            return float(self.alpha)
        return self.alpha / _TRANSFORM_ALPHA_DIVISOR

    def _resolved_transform_algorithm(self):
        if self.transform_algorithm is None:
            return self.fit_algorithm
        return self.transform_algorithm

    def _residual_tol(self):
        """The residual-norm tolerance of ``transform_algorithm="mp"`` (None: K steps)."""
        if self.transform_algorithm_ == "mp" and self.transform_alpha is not None:
            return self.transform_alpha_
        return None

    def _check_n_nonzero_coefs(self, n_features, n_components):
        """Reject a ``transform_n_nonzero_coefs`` that a greedy algorithm cannot use."""
        fitting = self.dictionary is None and self.fit_algorithm != "adam"
        # With a tolerance, MP's K only caps the steps of transform: any number is valid.
        transforming = set() if self._residual_tol() is not None else {self.transform_algorithm_}
        algorithms = transforming | ({self.fit_algorithm} if fitting else set())
        for algorithm in sorted(algorithms & set(GREEDY_ALGORITHMS)):
            check_n_nonzero_coefs(
                self.transform_n_nonzero_coefs, n_features, n_components, algorithm,
                name="transform_n_nonzero_coefs",
            )  # fmt: skip

    def _n_nonzero(self, n_features, n_components):
        if self.transform_n_nonzero_coefs is not None:
            return self.transform_n_nonzero_coefs
        return default_n_nonzero_coefs(n_features, n_components)

    def _transform_n_nonzero(self, n_features, n_components):
        """K of ``transform``: the cap on MP's steps with a tolerance (None: n_features)."""
        if self._residual_tol() is not None and self.transform_n_nonzero_coefs is None:
            return n_features
        return self._n_nonzero(n_features, n_components)

    def _codes(self, X, components):
        """Codes of ``X`` on ``components`` with the transform settings, and the
        iterations run (tensors in, tensors out)."""
        return encode_tensor(
            X,
            components,
            algorithm=self.transform_algorithm_,
            alpha=self.transform_alpha_,
            n_nonzero_coefs=self._transform_n_nonzero(X.shape[1], components.shape[0]),
            positive=self.positive_code,
            max_iter=self.transform_max_iter,
            residual_tol=self._residual_tol(),
        )

    def _encode(self, X):
        components = self._device_copy(
            "components", (self.components_,), X.device, X.dtype,
            lambda: to_tensor(self.components_, device=X.device, dtype=X.dtype),
        )  # fmt: skip
        if getattr(self, "intercept_", None) is not None:
            # A loaded SAE's decoder bias: its codes are those of what the bias leaves.
            X = X - self._decoder_tensors(X.device, X.dtype)[1]
        return self._codes(X, components)[0]

    def inference_flops(self, n_samples, n_iter=None):
        """FLOPs of inferring codes for ``n_samples`` with this estimator's solver.

        Parameters
        ----------
        n_samples : int
            Number of samples.
        n_iter : int, default=None
            Solver iterations; None uses ``inference_n_iter_``, the iterations the
            final inference on the training data actually ran.

        Returns
        -------
        flops : int
            ``flops.sparse_encode_flops`` for this solver.
        """
        check_is_fitted(self)
        n_components, n_features = self.components_.shape
        return sparse_encode_flops(
            self.transform_algorithm_, n_features, n_components, n_samples,
            n_iter=self.inference_n_iter_ if n_iter is None else n_iter,
            n_nonzero_coefs=self._transform_n_nonzero(n_features, n_components),
            residual_tol=self._residual_tol(),
        )  # fmt: skip
