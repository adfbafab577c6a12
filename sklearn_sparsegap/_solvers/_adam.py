"""The paper's inference-time optimisation: Adam on exp-parametrised codes."""

import math

import torch

from ._common import _converged, _iteration_checked, gram_form, serial_when_small

# The paper's Adam inference: log-codes start at -10; a warm start uses log(init + 1e-10).
_ADAM_LOG_INIT = -10.0
_ADAM_INIT_OFFSET = 1e-10
_LOG2_E = 1.0 / math.log(2.0)


@serial_when_small
def adam_codes(
    X, D, alpha, *, max_iter=10_000, tol=0.0, init=None, learning_rate=3e-3, eps=1e-8,
    betas=(0.9, 0.999),
):  # fmt: skip
    """The paper's inference-time optimisation: Adam on log-codes (``codes = exp(log_s)``).

    Minimises the library objective ``0.5 ||x - s D||^2 + alpha * sum(s)`` (codes are
    positive) with Adam (torch's update rule, written out as fused tensor operations) on
    ``log_s``, which starts at -10 or, with ``init``, at ``log(max(init, 0) + 1e-10)`` (the
    authors' code meant to, but always used -10). Codes are never exactly zero.

    The paper's per-entry loss ``mean((x - s D)^2) + l1 * mean(s)`` over ``n`` samples is
    ``2 / (n * n_features)`` times this objective summed over samples with
    ``alpha = paper_l1_to_alpha(l1, n_features, n_components)``. Adam is invariant to that
    scale except through ``eps``; to reproduce the authors' iterates exactly, pass
    ``eps=1e-8 * n * n_features / 2`` (and their ``max_iter``, ``learning_rate``: 10,000 at
    3e-3 for test codes, 20,000 at 1e-3 for known-dictionary ITO).

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary, same device and dtype as ``X``.
    alpha : float
        L1 penalty.
    max_iter : int, default=10000
        Number of Adam iterations (fewer if ``tol`` stops it).
    tol : float, default=0.0
        Stop when every sample's codes change by ``||s_new - s|| <= tol * ||s||`` in
        one iteration (tested as in :func:`ista`); 0 runs ``max_iter`` iterations.
    init : Tensor of shape (n_samples, n_components) or None, default=None
        Warm start; negative entries are treated as 0.
    learning_rate : float, default=3e-3
        Adam step size.
    eps : float, default=1e-8
        Adam's epsilon, on the gradient of the per-sample objective.
    betas : tuple of float, default=(0.9, 0.999)
        Adam's moment decay rates.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        Positive codes.
    n_iter : int
        Iterations run.

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap import make_sparse_dictionary_data
    >>> from sklearn_sparsegap._solvers import adam_codes
    >>> X, D, S = make_sparse_dictionary_data(64, random_state=0)
    >>> codes, n_iter = adam_codes(torch.tensor(X), torch.tensor(D), 0.0025, max_iter=100)
    >>> n_iter, bool((codes > 0).all())
    (100, True)
    """
    beta1, beta2 = betas
    log_codes = _initial_log2_codes(X, D.shape[0], init)
    gradient = _objective_gradient(X, D, alpha)
    first = torch.zeros_like(log_codes)
    second = torch.zeros_like(log_codes)
    tiny = torch.finfo(X.dtype).tiny
    codes = log_codes.exp2()
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        # Chain rule through exp: d/d(log s) = s * d/ds.
        grad = gradient(codes).mul_(codes)
        first.lerp_(grad, 1.0 - beta1)
        second.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        correction1 = 1.0 - beta1**n_iter
        correction2 = math.sqrt(1.0 - beta2**n_iter)
        # sqrt(v) as v * rsqrt(v) (0 where v is 0), see _initial_log2_codes.
        denominator = second.clamp_min(tiny).rsqrt_().mul_(second).add_(eps * correction2)
        step = learning_rate * correction2 / correction1 * _LOG2_E
        log_codes.addcdiv_(first, denominator, value=-step)
        new = log_codes.exp2()
        done = tol > 0 and _iteration_checked(n_iter) and _converged(new - codes, codes, tol)
        codes = new
        if done:
            break
    return codes, n_iter


def _initial_log2_codes(X, n_components, init):
    """``log2`` of the starting codes: ``exp(-10)``, or ``max(init, 0) + 1e-10``.

    The iterate is stored as log2(codes) = log(codes) * log2(e), and Adam's step on
    log(codes) is scaled to match. exp2, unlike exp and sqrt, is not routed to MKL's
    vector math library, whose threading costs milliseconds per call on a busy machine.
    """
    if init is None:
        return X.new_full((X.shape[0], n_components), _ADAM_LOG_INIT * _LOG2_E)
    return torch.log2(init.clamp_min(0.0) + _ADAM_INIT_OFFSET)


def _objective_gradient(X, D, alpha):
    """``gradient(codes)``: the gradient ``(s D - x) D^T + alpha`` of the objective in s.

    Through the Gram matrix when that is cheaper (:func:`gram_form`); a new tensor.
    """
    n_components, n_features = D.shape
    if gram_form(n_features, n_components):
        gram = D @ D.T
        bias = torch.mm(X, D.T).neg_().add_(alpha)  # alpha - X D^T

        def gradient(codes):
            return torch.addmm(bias, codes, gram)

    else:

        def gradient(codes):
            return torch.mm(torch.addmm(X, codes, D, beta=-1.0), D.T).add_(alpha)

    return gradient
