"""Batched sparse coding on torch tensors: :func:`sparse_encode` and its solver families.

Every solver is a pure function of tensors that encodes a whole block of samples at once
(no per-sample Python loop) and returns ``(codes, n_iter)``:

- ``X``: tensor of shape ``(n_samples, n_features)``;
- ``D``: tensor of shape ``(n_components, n_features)`` on the same device and dtype, rows
  are atoms (any non-zero norm);
- ``codes``: a new tensor of shape ``(n_samples, n_components)`` (inputs are never written);
- ``n_iter``: the iterations actually run, for FLOP accounting
  (:func:`sklearn_sparsegap.flops.sparse_encode_flops`).

The objective is the library's, per sample ``0.5 * ||x - s @ D||^2 + alpha * ||s||_1``.
Solvers do not track gradients; call them under ``torch.no_grad()`` or on tensors that do
not require gradients. One module per family: ``_proximal`` (ISTA, FISTA), ``_greedy``
(OMP, MP, gradient pursuit, TopK), ``_adam`` (the paper's Adam), and ``_sparse_encode``
(the NumPy front end).
"""

from ._adam import adam_codes
from ._common import MAX_GRAM_COMPONENTS, gram_form, lipschitz_constant
from ._lca import adaptive_projected_gradient, lca
from ._greedy import gradient_pursuit, matching_pursuit, omp, topk_encode
from ._proximal import fista, fista_with_intercept, ista
from ._sparse_encode import (
    ALGORITHMS,
    DEFAULT_MAX_ITER,
    GREEDY_ALGORITHMS,
    default_n_nonzero_coefs,
    sparse_encode,
)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_MAX_ITER",
    "GREEDY_ALGORITHMS",
    "MAX_GRAM_COMPONENTS",
    "adam_codes",
    "adaptive_projected_gradient",
    "default_n_nonzero_coefs",
    "fista",
    "fista_with_intercept",
    "gradient_pursuit",
    "gram_form",
    "ista",
    "lca",
    "lipschitz_constant",
    "matching_pursuit",
    "omp",
    "sparse_encode",
    "topk_encode",
]
