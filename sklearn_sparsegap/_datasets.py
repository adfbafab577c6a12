"""Synthetic sparse-coding data with known dictionary and codes."""

from numbers import Integral, Real

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.utils import check_random_state

from ._compat import Interval, StrOptions, validate_params

# Rows per block where a step needs n_components values per row: bounds the temporary
# memory to a small multiple of one block.
_BLOCK_ROWS = 8192

# Rejection rounds per weighted draw before falling back to explicit renormalisation.
_MAX_REJECTION_ROUNDS = 16


def _zipf_weights(n_components, exponent):
    ranks = np.arange(1, n_components + 1, dtype=np.float64)
    weights = ranks ** (-exponent)
    return weights / weights.sum()


def _uniform_support(rng, n_samples, n_components, n_nonzero_coefs):
    """Uniformly random ``n_nonzero_coefs``-subsets of ``range(n_components)``, one per row.

    Returns an int array of shape (n_samples, n_nonzero_coefs) with distinct entries per
    row (in no particular order).
    """
    if n_nonzero_coefs**2 > 16 * n_components:
        # Dense supports: the K smallest of N uniform keys per row, block by block.
        support = np.empty((n_samples, n_nonzero_coefs), dtype=np.intp)
        for start in range(0, n_samples, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, n_samples)
            keys = rng.random_sample((stop - start, n_components))
            support[start:stop] = np.argpartition(keys, n_nonzero_coefs - 1, axis=1)[
                :, :n_nonzero_coefs
            ]
        return support
    # Sparse supports: Floyd's algorithm, vectorised over rows. Step j draws t uniformly
    # in [0, j] and takes j instead when t is already taken; the result is a uniform
    # K-subset, at a cost of K draws and O(K^2) comparisons per row instead of N keys.
    support = np.empty((n_samples, n_nonzero_coefs), dtype=np.intp)
    for step, high in enumerate(range(n_components - n_nonzero_coefs, n_components)):
        draw = rng.randint(0, high + 1, size=n_samples)
        if step:
            taken = (support[:, :step] == draw[:, None]).any(axis=1)
            draw[taken] = high
        support[:, step] = draw
    return support


def _weighted_support(rng, n_samples, weights, n_nonzero_coefs):
    """Per row, ``n_nonzero_coefs`` indices drawn without replacement with probabilities
    ``weights``: sequential draws, renormalised over the atoms not yet drawn after each
    one, as numpy's ``choice(replace=False, p=weights)``.

    Each draw is made by rejection, vectorised over rows: draw from ``weights`` (inverse
    CDF) and redraw the rows whose atom is already taken, which yields exactly the
    renormalised distribution. Rows still rejected after ``_MAX_REJECTION_ROUNDS`` rounds
    (when the atoms already taken hold most of the weight) draw from their explicitly
    renormalised weights instead.
    """
    n_components = weights.size
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    support = np.empty((n_samples, n_nonzero_coefs), dtype=np.intp)
    for step in range(n_nonzero_coefs):
        # First round on every row (plain slices), then only on the rejected ones.
        draw = np.searchsorted(cdf, rng.random_sample(n_samples), side="right")
        np.minimum(draw, n_components - 1, out=draw)
        taken = (support[:, :step] == draw[:, None]).any(axis=1)
        support[:, step] = draw
        pending = np.flatnonzero(taken)
        for _ in range(_MAX_REJECTION_ROUNDS - 1):
            if not pending.size:
                break
            draw = np.searchsorted(cdf, rng.random_sample(pending.size), side="right")
            np.minimum(draw, n_components - 1, out=draw)
            taken = (support[pending, :step] == draw[:, None]).any(axis=1)
            support[pending[~taken], step] = draw[~taken]
            pending = pending[taken]
        for start in range(0, pending.size, _BLOCK_ROWS):
            rows = pending[start : start + _BLOCK_ROWS]
            masked = np.tile(weights, (rows.size, 1))
            np.put_along_axis(masked, support[rows, :step], 0.0, axis=1)
            cumulative = np.cumsum(masked, axis=1)
            total = cumulative[:, -1]
            # Strictly below the total, so the index found always has a positive weight.
            threshold = np.minimum(
                rng.random_sample(rows.size) * total, np.nextafter(total, 0.0)
            )
            draw = np.count_nonzero(cumulative <= threshold[:, None], axis=1)
            support[rows, step] = np.minimum(draw, n_components - 1)
    return support


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 1, None, closed="left")],
        "n_nonzero_coefs": [Interval(Integral, 1, None, closed="left")],
        "code_distribution": [StrOptions({"halfnormal", "normal", "zipf"})],
        "zipf_exponent": [Interval(Real, 0, None, closed="left")],
        "noise_std": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_sparse_dictionary_data(
    n_samples=1000,
    *,
    n_components=16,
    n_features=8,
    n_nonzero_coefs=3,
    code_distribution="halfnormal",
    zipf_exponent=1.0,
    noise_std=0.0,
    random_state=None,
):
    """Generate signals ``X = codes @ dictionary + noise`` with exactly K-sparse codes.

    This is the generator of the paper's synthetic experiments. Each row of ``codes`` has
    exactly ``n_nonzero_coefs`` non-zero entries; the dictionary has unit-L2-norm rows
    (atoms) drawn from a Gaussian. The return order follows
    :func:`sklearn.datasets.make_sparse_coded_signal`.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of signals.
    n_components : int, default=16
        Number of dictionary atoms (the paper's N).
    n_features : int, default=8
        Dimension of each signal (the paper's M).
    n_nonzero_coefs : int, default=3
        Number of non-zero code entries per sample (the paper's K); at most
        ``n_components``.
    code_distribution : {"halfnormal", "normal", "zipf"}, default="halfnormal"
        ``"halfnormal"``: positions uniform, values ``|N(0, 1)|`` (the authors' code).
        ``"normal"``: positions uniform, values ``N(0, 1)`` (signed).
        ``"zipf"``: the paper's Appendix D. Atom ``i`` (rank ``i + 1``) has weight
        ``w_i ∝ (i + 1) ** -zipf_exponent``; the support is drawn without replacement
        with probabilities ``w`` and the values are ``|N(0, 1)| * (w_i + 0.1)``.
    zipf_exponent : float, default=1.0
        The Zipf exponent; used only when ``code_distribution="zipf"``.
    noise_std : float, default=0.0
        Standard deviation of Gaussian noise added to ``X``.
    random_state : int, RandomState instance or None, default=None
        Seed for reproducible output.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The signals.
    dictionary : ndarray of shape (n_components, n_features)
        The dictionary; every row has unit L2 norm.
    codes : ndarray of shape (n_samples, n_components)
        The sparse codes, exactly ``n_nonzero_coefs`` non-zeros per row.

    Notes
    -----
    Generation is vectorised over samples: uniform supports use Floyd's sampling
    algorithm (``K`` draws per row rather than ``n_components`` random keys), Zipf
    supports use rejection from the weights, and ``X`` is computed from the ``K``
    non-zeros of each row. Besides the returned arrays, memory use is
    ``O(n_samples * n_nonzero_coefs)``.

    Examples
    --------
    >>> from sklearn_sparsegap import make_sparse_dictionary_data
    >>> X, dictionary, codes = make_sparse_dictionary_data(
    ...     100, n_components=16, n_features=8, n_nonzero_coefs=3, random_state=0)
    >>> X.shape, dictionary.shape, codes.shape
    ((100, 8), (16, 8), (100, 16))
    >>> int((codes != 0).sum(axis=1).max())
    3
    """
    if n_nonzero_coefs > n_components:
        raise ValueError(
            f"n_nonzero_coefs={n_nonzero_coefs} must be at most "
            f"n_components={n_components}."
        )
    rng = check_random_state(random_state)
    dictionary = rng.standard_normal((n_components, n_features))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    support, values = _sparse_code_entries(
        rng, n_samples, n_components, n_nonzero_coefs, code_distribution, zipf_exponent
    )
    codes = np.zeros((n_samples, n_components))
    np.put_along_axis(codes, support, values, axis=1)
    X = _noisy_signals(rng, support, values, dictionary, noise_std)
    return X, dictionary, codes


def _sparse_code_entries(rng, n_samples, n_components, n_nonzero_coefs, code_distribution,
                         zipf_exponent):  # fmt: skip
    """``(support, values)``, both ``(n_samples, n_nonzero_coefs)``: the non-zeros of the codes."""
    if code_distribution == "zipf":
        weights = _zipf_weights(n_components, zipf_exponent)
        if np.count_nonzero(weights) < n_nonzero_coefs:
            raise ValueError(
                f"zipf_exponent={zipf_exponent} is so large that fewer than "
                f"n_nonzero_coefs={n_nonzero_coefs} atoms have a non-zero weight in "
                "float64; use a smaller zipf_exponent."
            )
        support = _weighted_support(rng, n_samples, weights, n_nonzero_coefs)
    else:
        support = _uniform_support(rng, n_samples, n_components, n_nonzero_coefs)
    values = rng.standard_normal((n_samples, n_nonzero_coefs))
    if code_distribution != "normal":
        np.abs(values, out=values)
    if code_distribution == "zipf":
        values *= weights[support] + 0.1
    return support, values


def _noisy_signals(rng, support, values, dictionary, noise_std):
    """``codes @ dictionary`` from the codes' non-zeros, plus Gaussian noise of ``noise_std``."""
    n_samples, n_nonzero_coefs = values.shape
    # X = codes @ dictionary through the K-sparse structure: n * K * M multiply-adds
    # instead of n * N * M, and no temporary of the size of ``codes``.
    sparse_codes = csr_matrix(
        (values.ravel(), support.ravel(), np.arange(0, values.size + 1, n_nonzero_coefs)),
        shape=(n_samples, dictionary.shape[0]),
    )
    X = np.asarray(sparse_codes @ dictionary)
    if noise_std > 0:
        for start in range(0, n_samples, _BLOCK_ROWS):
            block = X[start : start + _BLOCK_ROWS]
            block += noise_std * rng.standard_normal(block.shape)
    return X
