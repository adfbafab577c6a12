"""Ground-truth metrics: the paper's MCC, dictionary MCC, scorers, NMSE, L0, dead latents."""

from numbers import Real

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._compat import Interval, StrOptions, validate_params
from ._validation import check_matrix, check_same_rows

# A column whose variance is below this fraction of its mean square is treated as constant
# (its correlation with anything is 0), as in the authors' code.
_ZERO_VARIANCE_RTOL = 1e-12

# Column norms for which centred values can be rounded to float32 before scaling: every
# entry is below the norm (no overflow), and entries small enough to lose precision as
# float32 subnormals are negligible next to the norm.
_FLOAT32_SAFE_NORMS = (1e-25, 1e37)

# Entries per chunk when streaming over samples (bounds the temporaries).
_CHUNK_ELEMENTS = 1 << 21


class ExplainedDeviance:
    """Per-column sums that ``r2_score`` needs, accumulated over row batches.

    ``r2_score(X, X_pred, multioutput="variance_weighted")`` is built from two sums per
    column j: the residual sum of squares ``num_j = sum_i (x_ij - xhat_ij)^2`` and the
    total sum of squares ``den_j = sum_i (x_ij - mean_j)^2``. Both are sums over rows, so
    they can be accumulated batch by batch: ``num`` directly, ``den`` with Chan et al.'s
    pairwise update of (count, mean, centred sum of squares), which merges batches
    without the cancellation of ``sum x^2 - n mean^2``. ``score`` then combines them
    exactly as scikit-learn does.
    """

    def __init__(self, n_features):
        self.count = 0
        self.mean = np.zeros(n_features)
        self.total = np.zeros(n_features)
        self.residual = np.zeros(n_features)

    def update(self, X, X_pred):
        X = np.asarray(X, dtype=np.float64)
        X_pred = np.asarray(X_pred, dtype=np.float64)
        self.residual += np.einsum("ij,ij->j", X - X_pred, X - X_pred)
        n = X.shape[0]
        batch_mean = X.mean(axis=0)
        centred = X - batch_mean
        batch_total = np.einsum("ij,ij->j", centred, centred)
        delta = batch_mean - self.mean
        merged = self.count + n
        self.total += batch_total + delta**2 * (self.count * n / merged)
        self.mean += delta * (n / merged)
        self.count = merged

    def fvu(self):
        """``1 - r2_score(..., multioutput="variance_weighted")`` (``force_finite=True``)."""
        if self.count < 2:
            raise ValueError(
                f"the fraction of variance unexplained needs at least 2 samples, got {self.count}."
            )
        varying = self.total != 0
        if not varying.any():
            # scikit-learn's fallback for constant targets: a perfect column scores 1,
            # any other 0, averaged uniformly.
            return float(1.0 - np.mean(self.residual == 0))
        return float(self.residual[varying].sum() / self.total.sum())


def _chunks(n_rows, n_columns):
    step = max(1, _CHUNK_ELEMENTS // max(1, n_columns))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _unit_centred(columns):
    """Columns centred (in float64) and scaled to unit norm, stored as float32.

    A column is constant when its centred sum of squares is at most
    ``_ZERO_VARIANCE_RTOL`` times its raw sum of squares; it becomes 0, so it correlates
    0 with everything.
    """
    n_rows, n_columns = columns.shape
    # Each column is first scaled by the power of two that brings its largest magnitude
    # into [0.5, 1): exact, and it keeps the squares below in range (entries near 1e-184
    # or 1e200 would underflow to a "constant" column or overflow when squared).
    peak = np.zeros(n_columns)
    for rows in _chunks(n_rows, n_columns):
        np.maximum(peak, np.abs(columns[rows]).max(axis=0), out=peak)
    shift = -np.frexp(peak)[1]

    def scaled(rows):
        return np.ldexp(np.asarray(columns[rows], dtype=np.float64), shift)

    mean = sum(scaled(rows).sum(axis=0) for rows in _chunks(n_rows, n_columns)) / n_rows
    buffer = np.empty((min(n_rows, max(1, _CHUNK_ELEMENTS // n_columns)), n_columns))
    centred_square = np.zeros(n_columns)
    out = np.empty(columns.shape, dtype=np.float32)
    for rows in _chunks(n_rows, n_columns):
        block = np.subtract(scaled(rows), mean, out=buffer[: rows.stop - rows.start])
        centred_square += np.einsum("ij,ij->j", block, block)
        with np.errstate(over="ignore", under="ignore"):  # checked and redone below
            out[rows] = block
    raw_square = centred_square + n_rows * mean**2
    constant = centred_square <= _ZERO_VARIANCE_RTOL * raw_square
    norms = np.sqrt(centred_square)
    scale = np.divide(1.0, norms, out=np.zeros(n_columns), where=~constant)
    live = norms[~constant]
    if live.size and (live.max() > _FLOAT32_SAFE_NORMS[1] or live.min() < _FLOAT32_SAFE_NORMS[0]):
        # Centred values beyond float32's range (or deep in its subnormals): redo the
        # rounding after scaling in float64, so any finite input stays accurate.
        for rows in _chunks(n_rows, n_columns):
            block = np.subtract(scaled(rows), mean, out=buffer[: rows.stop - rows.start])
            np.multiply(block, scale, out=out[rows], casting="same_kind")
    else:
        out *= scale.astype(np.float32)
    return out


def _select_columns(columns, rows, index):
    """``columns[rows][:, index]``, without a copy when ``index`` is every column in order."""
    if index.size == columns.shape[1] and np.array_equal(index, np.arange(index.size)):
        return columns[rows]
    return np.take(columns[rows], index, axis=1)


def _pair_correlations(first_unit, second_unit, rows, cols):
    """Correlation of the column pairs ``(first_unit[:, r], second_unit[:, c])``.

    Accumulated in float64 and renormalised, so identical (or rescaled) columns score
    exactly 1 and the result does not carry the float32 product's rounding.
    """
    n_rows, n_pairs = first_unit.shape[0], rows.size
    products, first_square, second_square = np.zeros((3, n_pairs))
    for chunk in _chunks(n_rows, n_pairs):
        a = _select_columns(first_unit, chunk, rows)
        b = _select_columns(second_unit, chunk, cols)
        products += np.einsum("ij,ij->j", a, b, dtype=np.float64)
        first_square += np.einsum("ij,ij->j", a, a, dtype=np.float64)
        second_square += np.einsum("ij,ij->j", b, b, dtype=np.float64)
    norms = np.sqrt(first_square * second_square)
    correlation = np.divide(np.abs(products), norms, out=np.zeros(n_pairs), where=norms > 0)
    return np.minimum(correlation, 1.0)


def _greedy_pairs(correlation):
    """Greedy matching: repeatedly take the largest remaining entry, drop its row and column.

    Computed in rounds: every entry that is the largest of both its remaining row and its
    remaining column is taken at once (a "locally dominant" pair). With distinct entries
    this selects exactly the pairs of the one-at-a-time greedy rule, in a few vectorised
    rounds instead of ``min(shape)`` passes over the matrix. ``np.argmax`` returns the
    first maximum, so a tie goes to the lowest row, then the lowest column: the same
    pairs as the one-at-a-time rule scanning the matrix in row-major order.
    """
    free_rows = np.arange(correlation.shape[0])
    free_cols = np.arange(correlation.shape[1])
    taken_rows, taken_cols = [], []
    while free_rows.size and free_cols.size:
        sub = correlation[np.ix_(free_rows, free_cols)]
        if not sub.max() > 0:
            # Only zeros (constant columns) remain: any pairing is greedy.
            n_left = min(free_rows.size, free_cols.size)
            taken_rows.append(free_rows[:n_left])
            taken_cols.append(free_cols[:n_left])
            break
        best_col = np.argmax(sub, axis=1)
        best_row = np.argmax(sub, axis=0)
        mutual = np.flatnonzero(best_row[best_col] == np.arange(free_rows.size))
        taken_rows.append(free_rows[mutual])
        taken_cols.append(free_cols[best_col[mutual]])
        free_rows = np.delete(free_rows, mutual)
        free_cols = np.delete(free_cols, best_col[mutual])
    return np.concatenate(taken_rows), np.concatenate(taken_cols)


def _matched_pairs(correlation, matching):
    if matching == "hungarian":
        return linear_sum_assignment(correlation, maximize=True)
    return _greedy_pairs(correlation)


def _mcc(first, second, matching):
    """Mean matched |Pearson correlation| between the columns of two 2-D arrays.

    The columns are centred in float64, stored as float32 unit vectors and correlated
    with one float32 matrix product, which is fast and accurate to about 1e-6: ample for
    choosing the matching. The matched pairs are then recomputed with float64
    accumulation.
    """
    first_unit = _unit_centred(first)
    second_unit = _unit_centred(second)
    correlation = first_unit.T @ second_unit
    np.abs(correlation, out=correlation)
    rows, cols = _matched_pairs(correlation, matching)
    del correlation
    return float(_pair_correlations(first_unit, second_unit, rows, cols).mean())


@validate_params(
    {
        "codes_true": ["array-like"],
        "codes_pred": ["array-like"],
        "matching": [StrOptions({"hungarian", "greedy"})],
    },
    prefer_skip_nested_validation=True,
)
def mean_corr_coef(codes_true, codes_pred, *, matching="hungarian"):
    """Mean correlation coefficient (MCC) between true and predicted latent codes.

    The absolute Pearson correlation, across samples, is computed between every true and
    every predicted column; columns are matched one-to-one to maximise the total, and the
    matched correlations are averaged. This is the paper's latent MCC. It is invariant to
    permuting the predicted columns and to rescaling each of them (sign included). A
    constant column correlates 0 with everything. When the two arrays have different
    numbers of columns, ``min`` of the two pairs are matched.

    Parameters
    ----------
    codes_true : array-like of shape (n_samples, n_components_true)
        Ground-truth codes.
    codes_pred : array-like of shape (n_samples, n_components_pred)
        Predicted codes.
    matching : {"hungarian", "greedy"}, default="hungarian"
        ``"hungarian"``: optimal assignment (:func:`scipy.optimize.linear_sum_assignment`).
        ``"greedy"``: greedy matching (repeatedly take the largest remaining correlation
        and drop its row and column), which never scores above ``"hungarian"``. The
        authors' code selects columns this way and then re-solves the assignment among
        them, which equals ``"hungarian"`` whenever both arrays have the same number of
        columns; here ``"greedy"`` averages the greedy pairs themselves.

    Returns
    -------
    mcc : float
        Mean matched absolute correlation, in ``[0, 1]``.

    Notes
    -----
    Ties. The matching compares the correlations as float32 values (about 1e-6
    accurate), where mathematically equal correlations normally come out exactly equal. ``"hungarian"`` returns the
    optimal total, which does not depend on how ties are broken (only the matched pairs
    may differ). ``"greedy"`` breaks a tie in favour of the lowest ``codes_true`` column,
    then the lowest ``codes_pred`` column, so its result is deterministic; another
    implementation that breaks ties differently can return another greedy value, since
    the greedy mean depends on which tied pair is taken first.

    A column counts as constant when its centred sum of squares is at most ``1e-12``
    times its raw sum of squares. The columns are centred in float64 and correlated with
    one float32 matrix product (about 1e-6 accurate), which only chooses the matching;
    the matched correlations are then recomputed with float64 accumulation. Memory is
    about one float32 copy of each input plus the ``n_components_true x
    n_components_pred`` correlation matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap import mean_corr_coef
    >>> rng = np.random.default_rng(0)
    >>> codes = rng.random((50, 4))
    >>> round(mean_corr_coef(codes, -2.0 * codes[:, ::-1]), 6)
    1.0
    """
    codes_true = check_matrix(codes_true, "codes_true")
    codes_pred = check_matrix(codes_pred, "codes_pred")
    check_same_rows(codes_true, codes_pred, "codes_true", "codes_pred")
    return _mcc(codes_true, codes_pred, matching)


@validate_params(
    {
        "dictionary_true": ["array-like"],
        "dictionary_pred": ["array-like"],
        "matching": [StrOptions({"hungarian", "greedy"})],
    },
    prefer_skip_nested_validation=True,
)
def dictionary_mcc(dictionary_true, dictionary_pred, *, matching="hungarian"):
    """MCC between two dictionaries: atoms matched by Pearson correlation of coordinates.

    Each atom (row) is correlated with each atom of the other dictionary across the
    ``n_features`` coordinates (mean-centred, the paper's definition, not the cosine);
    atoms are matched one-to-one and the absolute correlations averaged.

    Parameters
    ----------
    dictionary_true : array-like of shape (n_components_true, n_features)
        Ground-truth dictionary, one atom per row.
    dictionary_pred : array-like of shape (n_components_pred, n_features)
        Learned dictionary, e.g. an estimator's ``components_``.
    matching : {"hungarian", "greedy"}, default="hungarian"
        Matching rule, as in :func:`mean_corr_coef`. The authors' code used
        ``"greedy"`` for dictionaries.

    Returns
    -------
    mcc : float
        Mean matched absolute correlation between atoms, in ``[0, 1]``.

    Examples
    --------
    >>> from sklearn_sparsegap import dictionary_mcc, make_sparse_dictionary_data
    >>> _, dictionary, _ = make_sparse_dictionary_data(10, random_state=0)
    >>> round(dictionary_mcc(dictionary, dictionary[::-1]), 6)
    1.0
    """
    dictionary_true = check_matrix(dictionary_true, "dictionary_true")
    dictionary_pred = check_matrix(dictionary_pred, "dictionary_pred")
    if dictionary_true.shape[1] != dictionary_pred.shape[1]:
        raise ValueError(
            "dictionary_true and dictionary_pred must have the same number of features "
            f"(columns), got {dictionary_true.shape[1]} and {dictionary_pred.shape[1]}."
        )
    return _mcc(dictionary_true.T, dictionary_pred.T, matching)


class _MCCScorer:
    """Scorer ``(estimator, X, y) -> mean_corr_coef(y, estimator.transform(X))``."""

    def __init__(self, matching="hungarian"):
        self.matching = matching

    def __call__(self, estimator, X, y):
        if y is None:
            raise ValueError(
                "mcc_scorer needs the true codes as y: pass them to fit, e.g. "
                "GridSearchCV(..., scoring=mcc_scorer).fit(X, codes)."
            )
        return mean_corr_coef(y, estimator.transform(X), matching=self.matching)

    def __repr__(self):
        return "mcc_scorer"


mcc_scorer = _MCCScorer()
mcc_scorer.__doc__ = """Scorer for latent MCC against the true codes passed as ``y``.

Use it as ``scoring=mcc_scorer`` in :class:`~sklearn.model_selection.GridSearchCV`,
:func:`~sklearn.model_selection.cross_validate`, :func:`~sklearn.model_selection.cross_val_score`
or a multi-metric dict; ``fit(X, codes)`` passes the true codes of each test fold as ``y``
and the score is ``mean_corr_coef(codes_test, estimator.transform(X_test))`` (Hungarian
matching). Calling it without ``y`` raises a ``ValueError``.

Examples
--------
>>> from sklearn.decomposition import SparseCoder
>>> from sklearn.model_selection import GridSearchCV
>>> from sklearn_sparsegap import make_sparse_dictionary_data, mcc_scorer
>>> X, dictionary, codes = make_sparse_dictionary_data(200, random_state=0)
>>> coder = SparseCoder(dictionary, transform_algorithm="lasso_lars", positive_code=True)
>>> search = GridSearchCV(coder, {"transform_alpha": [0.01, 1.0]}, scoring=mcc_scorer)
>>> search.fit(X, codes).best_params_
{'transform_alpha': 0.01}
"""

# Run the scorer's Examples with the module's doctests.
__test__ = {"mcc_scorer": mcc_scorer.__doc__}


class _DictionaryMCCScorer:
    """Scorer ``(estimator, X, y) -> dictionary_mcc(dictionary_true, estimator.components_)``."""

    def __init__(self, dictionary_true, matching="hungarian"):
        self.dictionary_true = dictionary_true
        self.matching = matching

    def __call__(self, estimator, X, y=None):
        return dictionary_mcc(
            self.dictionary_true, estimator.components_, matching=self.matching
        )

    def __repr__(self):
        return "make_dictionary_mcc_scorer(dictionary_true)"


@validate_params(
    {
        "dictionary_true": ["array-like"],
        "matching": [StrOptions({"hungarian", "greedy"})],
    },
    prefer_skip_nested_validation=True,
)
def make_dictionary_mcc_scorer(dictionary_true, *, matching="hungarian"):
    """Make a scorer that compares an estimator's ``components_`` with a known dictionary.

    Parameters
    ----------
    dictionary_true : array-like of shape (n_components_true, n_features)
        The ground-truth dictionary.
    matching : {"hungarian", "greedy"}, default="hungarian"
        Matching rule, as in :func:`dictionary_mcc`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)`` returns
        ``dictionary_mcc(dictionary_true, estimator.components_)``; ``X`` and ``y`` are
        ignored.

    Examples
    --------
    >>> from sklearn.decomposition import DictionaryLearning
    >>> from sklearn_sparsegap import (
    ...     dictionary_mcc, make_dictionary_mcc_scorer, make_sparse_dictionary_data)
    >>> X, dictionary, codes = make_sparse_dictionary_data(200, random_state=0)
    >>> scorer = make_dictionary_mcc_scorer(dictionary)
    >>> est = DictionaryLearning(n_components=16, max_iter=5, random_state=0).fit(X)
    >>> scorer(est, X, codes) == dictionary_mcc(dictionary, est.components_)
    True
    """
    # A private copy: later in-place edits of the caller's array do not change the scorer.
    dictionary_true = check_matrix(dictionary_true, "dictionary_true", copy=True)
    return _DictionaryMCCScorer(dictionary_true, matching=matching)


@validate_params(
    {"X": ["array-like"], "X_pred": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def normalized_mse(X, X_pred):
    """Reconstruction MSE divided by the MSE of predicting each feature's mean.

    0 is a perfect reconstruction; 1 is no better than the per-feature mean (the paper's
    §5 normalisation).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The data.
    X_pred : array-like of shape (n_samples, n_features)
        Its reconstruction, e.g. ``est.inverse_transform(est.transform(X))``.

    Returns
    -------
    nmse : float
        The normalised mean squared error.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap import normalized_mse
    >>> X = np.array([[0.0, 1.0], [2.0, 3.0]])
    >>> normalized_mse(X, np.tile(X.mean(axis=0), (2, 1)))
    1.0
    """
    X = check_matrix(X, "X")
    X_pred = check_matrix(X_pred, "X_pred")
    if X.shape != X_pred.shape:
        raise ValueError(
            f"X and X_pred must have the same shape, got {X.shape} and {X_pred.shape}."
        )
    baseline = np.sum((X - X.mean(axis=0)) ** 2)
    if baseline == 0:
        raise ValueError("X is constant along every feature; normalized_mse is undefined.")
    return float(np.sum((X - X_pred) ** 2) / baseline)


def _active(codes, threshold):
    return np.abs(codes) > threshold


@validate_params(
    {"codes": ["array-like"], "threshold": [Interval(Real, 0, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def mean_l0(codes, threshold=0.0):
    """Mean number of active entries per sample (``|code| > threshold``).

    Parameters
    ----------
    codes : array-like of shape (n_samples, n_components)
        The codes.
    threshold : float, default=0.0
        Entries with absolute value at most ``threshold`` count as inactive; raise it for
        methods that leave tiny non-zeros (e.g. exp-parametrised codes).

    Returns
    -------
    l0 : float
        Average count of active entries per row.

    Examples
    --------
    >>> from sklearn_sparsegap import mean_l0
    >>> mean_l0([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    1.5
    """
    codes = check_matrix(codes, "codes")
    return float(_active(codes, threshold).sum(axis=1).mean())


@validate_params(
    {"codes": ["array-like"], "threshold": [Interval(Real, 0, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def dead_fraction(codes, threshold=0.0):
    """Fraction of components that are never active (``|code| <= threshold`` everywhere).

    Parameters
    ----------
    codes : array-like of shape (n_samples, n_components)
        The codes.
    threshold : float, default=0.0
        Activity threshold, as in :func:`mean_l0`.

    Returns
    -------
    fraction : float
        Dead components over all components, in ``[0, 1]``.

    Examples
    --------
    >>> from sklearn_sparsegap import dead_fraction
    >>> dead_fraction([[0.0, 1.0], [0.0, 2.0]])
    0.5
    """
    codes = check_matrix(codes, "codes")
    return float(1.0 - _active(codes, threshold).any(axis=0).mean())


@validate_params(
    {
        "l1_penalty": [Interval(Real, 0, None, closed="left")],
        "n_features": [Interval(Real, 0, None, closed="neither")],
        "n_components": [Interval(Real, 0, None, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def paper_l1_to_alpha(l1_penalty, n_features, n_components):
    """Convert the paper's L1 coefficient to this library's ``alpha``.

    The paper minimises, per entry, ``mean((x - s D)**2) + l1_penalty * mean(|s|)``; the
    library minimises, per sample, ``0.5 * ||x - s D||**2 + alpha * ||s||_1``. Multiplying
    the paper's loss by ``n_features / 2`` gives the library's, so
    ``alpha = l1_penalty * n_features / (2 * n_components)``.

    Parameters
    ----------
    l1_penalty : float
        The paper's lambda (e.g. 0.01).
    n_features : int
        Signal dimension M.
    n_components : int
        Number of latents N.

    Returns
    -------
    alpha : float
        The equivalent ``alpha``.

    Examples
    --------
    >>> from sklearn_sparsegap import paper_l1_to_alpha
    >>> paper_l1_to_alpha(0.01, n_features=8, n_components=16)
    0.0025
    """
    return float(l1_penalty) * n_features / (2.0 * n_components)
