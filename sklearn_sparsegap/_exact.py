"""Exact sparse inference by exhaustive search, and the paper's Theorem 3.1 worst case."""

from itertools import combinations

import numpy as np


def all_sparse_sources(n_components, max_nonzero=2, value=1.0):
    """Every code with 1..``max_nonzero`` entries equal to ``value`` (the others 0).

    For ``n_components=16`` and ``max_nonzero=2`` these are the 16 + 120 = 136 sources of
    the paper's Theorem 3.1 construction.
    """
    rows = []
    for size in range(1, max_nonzero + 1):
        for support in combinations(range(n_components), size):
            code = np.zeros(n_components)
            code[list(support)] = value
            rows.append(code)
    return np.array(rows)


def exhaustive_sparse_encode(X, dictionary, max_nonzero=2, *, positive=True, atol=1e-9):
    """The sparsest exact (or least-squares best) code of each sample, by trying every
    support of size ``<= max_nonzero``.

    Supports are tried in order of size; a sample takes the first support whose
    least-squares fit leaves a residual norm below ``atol`` (the sparsest exact
    representation, unique when every ``2 * max_nonzero`` atoms are linearly independent),
    otherwise the support with the smallest residual. Cost grows as
    ``C(n_components, max_nonzero)``: for small problems only.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    dictionary : ndarray of shape (n_components, n_features)
    max_nonzero : int, default=2
    positive : bool, default=True
        Only accept non-negative coefficients.
    atol : float, default=1e-9

    Returns
    -------
    codes : ndarray of shape (n_samples, n_components)
    """
    X = np.asarray(X, dtype=np.float64)
    dictionary = np.asarray(dictionary, dtype=np.float64)
    n_samples, n_components = X.shape[0], dictionary.shape[0]
    codes = np.zeros((n_samples, n_components))
    best = np.linalg.norm(X, axis=1)
    exact = best <= atol
    for size in range(1, max_nonzero + 1):
        for support in combinations(range(n_components), size):
            atoms = dictionary[list(support)]  # (size, n_features)
            # All samples at once: least squares of X on the support's atoms.
            coefficients, *_ = np.linalg.lstsq(atoms.T, X.T, rcond=None)
            coefficients = coefficients.T  # (n_samples, size)
            residual = np.linalg.norm(X - coefficients @ atoms, axis=1)
            feasible = ~exact
            if positive:
                feasible &= np.all(coefficients >= -atol, axis=1)
            better = feasible & (residual < best - atol)
            codes[better] = 0.0
            codes[np.ix_(better, list(support))] = coefficients[better]
            best[better] = residual[better]
        exact |= best <= atol
    return codes
