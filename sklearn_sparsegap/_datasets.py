"""Synthetic sparse-coding data with known dictionary and codes."""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state

from ._compat import Interval, StrOptions, validate_params

# Rows generated per block: bounds the temporary memory to a small multiple of one block.
_BLOCK_ROWS = 8192


def _zipf_weights(n_components, exponent):
    ranks = np.arange(1, n_components + 1, dtype=np.float64)
    weights = ranks ** (-exponent)
    return weights / weights.sum()


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

    codes = np.zeros((n_samples, n_components))
    if code_distribution == "zipf":
        weights = _zipf_weights(n_components, zipf_exponent)
        log_weights = np.log(weights)
    for start in range(0, n_samples, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n_samples)
        rows = stop - start
        keys = rng.random((rows, n_components))
        if code_distribution == "zipf":
            # Gumbel top-k: the K largest of log(w) + Gumbel noise are a draw without
            # replacement with probabilities proportional to w (sequential renormalised
            # draws, as numpy's choice(replace=False, p=w) does), for all rows at once.
            keys = log_weights - np.log(-np.log(keys + np.finfo(float).tiny))
            support = np.argpartition(-keys, n_nonzero_coefs - 1, axis=1)
        else:
            support = np.argpartition(keys, n_nonzero_coefs - 1, axis=1)
        support = support[:, :n_nonzero_coefs]
        values = rng.standard_normal((rows, n_nonzero_coefs))
        if code_distribution != "normal":
            np.abs(values, out=values)
        if code_distribution == "zipf":
            values *= weights[support] + 0.1
        np.put_along_axis(codes[start:stop], support, values, axis=1)

    X = codes @ dictionary
    if noise_std > 0:
        X += noise_std * rng.standard_normal(X.shape)
    return X, dictionary, codes
