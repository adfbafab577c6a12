"""The methods, on a benchmark :class:`~_bench.datasets.Task`.

Every method is defined once, in ``sklearn_sparsegap.experiments._methods`` (which ``sparsegap
compare`` uses too); :func:`build` only reads the task's sizes and dictionary. Two
flavours: ``"paper"`` (the authors' code settings for the paper's §4) and ``"library"``
(the estimators' own defaults).
"""

import numpy as np

from sklearn_sparsegap.experiments._methods import (
    FLAVOURS,
    METHODS,
    PAPER_ITO_ITER,
    PAPER_L1,
    PAPER_LEARNING_RATE,
    SCENARIOS,
    build_method,
)
from sklearn_sparsegap.experiments._methods import paper_alpha as _paper_alpha

__all__ = [
    "FLAVOURS", "METHODS", "PAPER_ITO_ITER", "PAPER_L1", "PAPER_LEARNING_RATE", "SCENARIOS",
    "authors_optimize_topk", "build", "keep_topk", "paper_alpha",
]  # fmt: skip


def paper_alpha(task, l1_penalty=PAPER_L1, n_components=None):
    """The library ``alpha`` equivalent to the paper's per-entry L1 penalty on ``task``."""
    n_components = task.n_components if n_components is None else n_components
    return _paper_alpha(task.n_features, n_components, l1_penalty)


def build(
    method,
    task,
    *,
    scenario="unknown",
    flavour="library",
    seed=0,
    steps=None,
    l1_penalty=PAPER_L1,
    n_components=None,
    ito=None,
    **params,
):
    """An unfitted estimator for ``method`` on ``task``: ``build_method`` with the task's
    sizes and dictionary, ``random_state=seed`` and ``max_iter=steps``.

    ``n_components`` overrides the model size (over/under-complete runs; the known-codes
    scenario always uses the true one); ``params`` are further estimator parameters.
    """
    if n_components is None or scenario == "known-codes":
        n_components = task.n_components
    # A TopK SAE keeps the true K unless ``params`` gives its k.
    n_nonzero_coefs = task.n_nonzero_coefs
    if method == "topk-sae":
        n_nonzero_coefs = params.pop("n_nonzero_coefs", n_nonzero_coefs)
    # ``steps`` is the training budget of the methods that train by steps; an explicit
    # ``max_iter`` in ``params`` wins (e.g. LARS's outer iterations, which ``steps`` leaves
    # alone).
    max_iter = params.pop("max_iter", None if method == "lars" else steps)
    return build_method(
        method,
        n_components=n_components,
        n_features=task.n_features,
        n_nonzero_coefs=n_nonzero_coefs,
        dictionary=task.dictionary,
        scenario=scenario,
        flavour=flavour,
        random_state=seed,
        max_iter=max_iter,
        l1_penalty=l1_penalty,
        ito=ito,
        **params,
    )


# ------------------------------------------------------------------------ top-k inference
# The authors' two top-k inference variants on a learned dictionary (App. H.2); the
# library's own k-sparse solvers are ``sparse_encode(algorithm="omp" | "gradient_pursuit" |
# "topk")``.
def keep_topk(codes, k):
    """``codes`` with all but the ``k`` largest |s| of each row set to 0 (no re-fit): the
    authors' ``apply_topk``."""
    codes = np.asarray(codes)
    index = np.argpartition(-np.abs(codes), k - 1, axis=1)[:, :k]
    out = np.zeros_like(codes)
    np.put_along_axis(out, index, np.take_along_axis(codes, index, axis=1), axis=1)
    return out


def authors_optimize_topk(X, components, k, *, n_iter=1000, learning_rate=0.9):
    """The authors' ``optimize_codes_topk``: raw codes from 0, Adam (torch's defaults) on the
    per-entry MSE of ``topk(S) @ D``, the top-k by |s| applied in the forward pass; returns
    ``topk(S)``.

    The gradients are written out (the top-k is a mask, so the gradient is the MSE's on the
    kept entries and 0 elsewhere). At 0 every |s| ties, so the first step's tie-break picks
    the support and the unselected codes never get a gradient again.
    """
    import torch

    from sklearn_sparsegap._torch_utils import serial_if_small

    X = torch.as_tensor(X, dtype=torch.float32)
    D = torch.as_tensor(components, dtype=torch.float32)
    n_samples, n_features = X.shape
    # One step costs a (n_samples, N) x (N, N) product: tiny problems run on one thread.
    with torch.no_grad(), serial_if_small("cpu", 2 * n_samples * D.shape[0] ** 2):
        codes = X.new_zeros((n_samples, D.shape[0]))
        first, second = torch.zeros_like(codes), torch.zeros_like(codes)
        signal_correlation, gram = X @ D.T, D @ D.T
        scale = 2.0 / (n_samples * n_features)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for step in range(1, n_iter + 1):
            index = codes.abs().topk(k, dim=1).indices
            mask = torch.zeros_like(codes).scatter_(1, index, 1.0)
            grad = ((codes * mask) @ gram).sub_(signal_correlation).mul_(mask).mul_(scale)
            first.lerp_(grad, 1.0 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            denominator = (second / (1.0 - beta2**step)).sqrt_().add_(eps)
            codes.addcdiv_(first, denominator, value=-learning_rate / (1.0 - beta1**step))
        index = codes.abs().topk(k, dim=1).indices
        kept = torch.zeros_like(codes).scatter_(1, index, codes.gather(1, index))
    return kept.numpy()
