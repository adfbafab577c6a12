"""Pieces every solver family shares: convergence tests, atom normalisation, thread
control on small blocks, and the rule that picks the Gram-matrix form of an iteration."""

import functools

import torch

from .._torch_utils import serial_if_small

# Convergence is tested after each of the first _CHECK_FIRST iterations (so a warm start
# at the solution stops at once) and then every _CHECK_EVERY: a test costs a host sync and
# a few reductions, as much as an iteration on small problems.
_CHECK_FIRST = 10
_CHECK_EVERY = 10

# Greedy solvers keep an (n_components, n_components) Gram matrix up to this size; above
# it they recompute correlations from the residual instead.
MAX_GRAM_COMPONENTS = 4096

# The Gram forms of OMP and gradient pursuit keep a few (rows, n_components) arrays (the
# scores of the atoms); rows are processed in chunks of at most this many elements
# (4 MiB in float32): larger chunks pay the per-iteration operations' fixed cost fewer
# times (see docs/_defaults_greedy.rst for the measurement).
GRAM_CHUNK_ELEMENTS = 2**20

# The tables their correlation updates read are split into blocks of columns whose Gram
# part has at most this many elements (1 MiB in float32, inside a core's L2 cache), in
# at most MAX_GRAM_BLOCKS blocks (see docs/_defaults_greedy.rst).
GRAM_BLOCK_ELEMENTS = 2**18
MAX_GRAM_BLOCKS = 8


def gram_form(n_features, n_components):
    """Whether a gradient iteration is cheaper as ``s @ G`` than as two dictionary products.

    ``s @ (D D^T)`` costs ``2N^2`` per sample, ``(s @ D - x) @ D^T`` costs ``4NM``.
    """
    return n_components <= 2 * n_features


def greedy_gram_form(n_samples, n_features, n_components, n_nonzero_coefs):
    """Whether OMP and gradient pursuit update correlations through the Gram matrix.

    The Gram form ("Batch-OMP", Rubinstein, Zibulevsky & Elad 2008) pays ``2N^2M`` once
    for ``G = D D^T`` and then, per sample, ``2NM`` for ``D x`` and about ``N K^2`` for the
    correlation updates; the residual form pays ``2NM`` per sample and iteration. The
    Gram form is chosen when ``N <= MAX_GRAM_COMPONENTS`` and it saves FLOPs on
    ``n_samples`` samples: ``n (2NMK - 2NM - NK^2) > 2N^2M``.
    """
    if n_components > MAX_GRAM_COMPONENTS:
        return False
    N, M, K = n_components, n_features, n_nonzero_coefs
    saved_per_sample = 2 * N * M * K - 2 * N * M - N * K * K
    return n_samples * saved_per_sample > 2 * N * N * M


def gram_chunk_rows(n_components):
    """Rows per chunk of the Gram forms (see ``GRAM_CHUNK_ELEMENTS``)."""
    return max(1, GRAM_CHUNK_ELEMENTS // max(n_components, 1))


def _matmul_flops(X, D):
    """FLOPs of one ``(n_samples, n_features) @ (n_features, n_components)`` product."""
    return 2 * X.shape[0] * X.shape[1] * D.shape[0]


def serial_when_small(solver):
    """Decorate a solver ``solver(X, D, ...)`` to run serially on small blocks."""

    @functools.wraps(solver)
    def wrapper(X, D, *args, **kwargs):
        with serial_if_small(X.device, _matmul_flops(X, D)):
            return solver(X, D, *args, **kwargs)

    return wrapper


def _iteration_checked(iteration):
    return iteration <= _CHECK_FIRST or iteration % _CHECK_EVERY == 0


def _finished(change, codes, tol):
    """Per sample, whether ``||change|| <= tol * max(||codes||, eps)``."""
    eps = torch.finfo(codes.dtype).eps
    size = torch.linalg.vector_norm(codes, dim=1).clamp_min_(eps)
    return torch.linalg.vector_norm(change, dim=1) <= tol * size


def _converged(change, codes, tol):
    """Whether ``max_i ||change_i|| / max(||codes_i||, eps) <= tol`` over samples ``i``."""
    return bool(_finished(change, codes, tol).all())


def drop_finished(finished, rows, out, codes, *arrays):
    """Move the finished samples' codes to ``out`` and their rows out of the working arrays.

    Samples stop one by one: ``out`` (created on the first call, with ``rows`` mapping
    working rows to output rows) collects the codes of finished samples, so later
    iterations only pay for the slow ones. Returns ``(rows, out, codes, arrays)`` with
    the finished rows removed; :func:`finished_codes` assembles the result.
    """
    if out is None:
        out = codes.clone()
        rows = torch.arange(len(codes), device=codes.device)
    out[rows[finished]] = codes[finished]
    keep = torch.nonzero(~finished)[:, 0]
    return rows[keep], out, codes[keep], [array[keep] for array in arrays]


def finished_codes(rows, out, codes):
    """All samples' codes: ``out`` with the still-working ``codes`` written back."""
    if out is None:
        return codes
    out[rows] = codes
    return out


def _normalized_atoms(D):
    norms = torch.linalg.vector_norm(D, dim=1)
    return D / norms[:, None], norms


def _residual_threshold(X):
    """Squared residual norm below which a greedy pursuit stops for a sample."""
    rtol = 100 * torch.finfo(X.dtype).eps
    return torch.linalg.vecdot(X, X) * rtol**2


def lipschitz_constant(D, gram=None):
    """Squared spectral norm of ``D``: the Lipschitz constant of the gradient.

    Parameters
    ----------
    D : Tensor of shape (n_components, n_features)
        The dictionary.
    gram : Tensor of shape (n_components, n_components), default=None
        ``D @ D.T`` if already computed; else the smaller of ``D D^T`` and ``D^T D`` is
        formed.

    Returns
    -------
    lipschitz : float
        The largest eigenvalue of ``D @ D.T``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers import lipschitz_constant
    >>> lipschitz_constant(torch.eye(3, dtype=torch.float64) * 2)
    4.0
    """
    if gram is None:
        gram = D @ D.T if D.shape[0] <= D.shape[1] else D.T @ D
    return float(torch.linalg.eigvalsh(gram)[-1])
