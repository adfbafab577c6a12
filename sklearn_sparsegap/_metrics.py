"""Ground-truth metrics: the paper's MCC, dictionary MCC, scorers, NMSE, L0, dead latents."""

from numbers import Real

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._compat import Interval, StrOptions, validate_params
from ._validation import check_matrix, check_same_rows

# A column whose variance is below this fraction of its mean square is treated as constant
# (its correlation with anything is 0), as in the authors' code.
_ZERO_VARIANCE_RTOL = 1e-12


def _abs_correlation_matrix(first, second):
    """|Pearson correlation| between every column of ``first`` and of ``second``.

    One centred matrix product; constant columns get correlation 0.
    """
    dtype = np.result_type(first.dtype, second.dtype, np.float32)

    def unit_centred(columns):
        columns = np.asarray(columns, dtype=dtype)
        centred = columns - columns.mean(axis=0)
        norms = np.sqrt(np.einsum("ij,ij->j", centred, centred))
        mean_square = np.einsum("ij,ij->j", columns, columns)
        constant = norms**2 <= _ZERO_VARIANCE_RTOL * mean_square
        norms[constant] = 1.0
        centred /= norms
        centred[:, constant] = 0.0
        return centred

    correlation = unit_centred(first).T @ unit_centred(second)
    np.abs(correlation, out=correlation)
    # Rounding can push |r| a hair above 1.
    return np.minimum(correlation, 1.0, out=correlation)


def _greedy_pairs(correlation):
    """The authors' greedy matching: take the largest entry, drop its row and column."""
    remaining = correlation.astype(np.float64, copy=True)
    n_pairs = min(remaining.shape)
    rows, cols = np.empty(n_pairs, dtype=int), np.empty(n_pairs, dtype=int)
    for pair in range(n_pairs):
        row, col = np.unravel_index(np.argmax(remaining), remaining.shape)
        rows[pair], cols[pair] = row, col
        remaining[row, :] = -1.0
        remaining[:, col] = -1.0
    return rows, cols


def _matched_mean(correlation, matching):
    if matching == "hungarian":
        rows, cols = linear_sum_assignment(correlation, maximize=True)
    else:
        rows, cols = _greedy_pairs(correlation)
    return float(correlation[rows, cols].mean())


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
    return _matched_mean(_abs_correlation_matrix(codes_true, codes_pred), matching)


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
    correlation = _abs_correlation_matrix(dictionary_true.T, dictionary_pred.T)
    return _matched_mean(correlation, matching)


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
:func:`~sklearn.model_selection.cross_validate` or a multi-metric dict; ``fit(X, codes)``
passes the true codes of each test fold as ``y`` and the score is
``mean_corr_coef(codes_test, estimator.transform(X_test))``.
"""


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
    >>> from sklearn_sparsegap import make_dictionary_mcc_scorer, make_sparse_dictionary_data
    >>> X, dictionary, codes = make_sparse_dictionary_data(200, random_state=0)
    >>> scorer = make_dictionary_mcc_scorer(dictionary)
    >>> est = DictionaryLearning(n_components=16, max_iter=5, random_state=0).fit(X)
    >>> 0.0 <= scorer(est, X, codes) <= 1.0
    True
    """
    dictionary_true = check_matrix(dictionary_true, "dictionary_true")
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
