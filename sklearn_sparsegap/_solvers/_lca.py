"""Locally competitive algorithms: Rozell et al.'s LCA, and the paper's §5 "LCA" procedure.

Two different algorithms carry the name:

- :func:`lca` is the locally competitive algorithm of Rozell, Johnson, Baraniuk and Olshausen
  (2008): membrane potentials ``u`` follow ``tau du/dt = b - u - a G`` with ``b = x D^T``,
  ``G = D D^T - I`` and codes ``a = T(u)`` (soft threshold, or the non-negative threshold),
  integrated by Euler steps. Its fixed points are the lasso's solutions.
- :func:`adaptive_projected_gradient` is what the paper's code for §5 runs under the name
  "LCA": projected gradient on ``a = ReLU(u)`` with a per-sample step size adapted at every
  iteration by trying the factors 0.5 and 2 and keeping the better one.
"""

import torch
import torch.nn.functional as F

from ._common import _finished, _iteration_checked, drop_finished, finished_codes
from ._common import gram_form, lipschitz_constant
from ._common import serial_when_small


def _threshold(u, alpha, positive):
    """``T_alpha(u)`` as a new tensor (``u`` is left as it is)."""
    if positive:
        return (u - alpha).clamp_min_(0.0)
    return F.softshrink(u, alpha)


@serial_when_small
def lca(X, D, alpha, *, positive=False, max_iter=1000, tol=1e-4, init=None, lipschitz=None):
    """Rozell et al.'s locally competitive algorithm (LCA), batched over samples.

    Integrates ``tau du/dt = b - u - a G`` (``b = x D^T``, ``G = D D^T - I``,
    ``a = T_alpha(u)``) with Euler steps ``u <- u + eta (b - u - a G)`` of size
    ``eta = dt / tau = 1 / max(L, 1)``, ``L`` the squared spectral norm of ``D`` (the
    largest stable step for the active latents, which move like gradient descent on the
    lasso). ``T_alpha`` is the soft threshold ``sign(u) max(|u| - alpha, 0)``, or
    ``max(u - alpha, 0)`` when ``positive``. At a fixed point ``(x - a D) D^T =
    alpha sign(a)`` on the active latents and ``|(x - a D) D^T| <= alpha`` elsewhere: the
    optimality conditions of the library objective ``0.5 ||x - a D||^2 + alpha ||a||_1``,
    so at convergence LCA reaches the lasso (FISTA's) objective. A sample stops when its
    potentials change by ``||u_new - u|| <= tol * max(||u||, eps)`` in one step (tested
    as in :func:`ista`; the codes alone can stay at zero while ``u`` still rises).

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary (rows are atoms), same device and dtype as ``X``.
    alpha : float
        The threshold ``lambda``: the L1 penalty of the objective.
    positive : bool, default=False
        Non-negative codes (the non-negative threshold).
    max_iter : int, default=1000
        Maximum number of Euler steps.
    tol : float, default=1e-4
        Tolerance on the relative change of each sample's potentials.
    init : Tensor of shape (n_samples, n_components) or None, default=None
        Warm-start codes; the potentials start at ``u = a + (x - a D) D^T``, which is
        the fixed point if ``a`` solves the lasso. Zeros when None.
    lipschitz : float or None, default=None
        Precomputed :func:`lipschitz_constant` of ``D``.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The codes ``T_alpha(u)``.
    n_iter : int
        Steps run (by the slowest sample).

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers import lca
    >>> D = torch.eye(2, dtype=torch.float64)
    >>> codes, n_iter = lca(torch.tensor([[3.0, -0.5]], dtype=torch.float64), D, 1.0,
    ...                     tol=1e-12)
    >>> torch.equal(codes, torch.tensor([[2.0, 0.0]], dtype=torch.float64))
    True
    """
    n_components, n_features = D.shape
    alpha = float(alpha)
    use_gram = gram_form(n_features, n_components)
    gram = D @ D.T if use_gram else None
    if lipschitz is None:
        lipschitz = lipschitz_constant(D, gram)
    eta = 1.0 / max(lipschitz, 1.0)
    # b - u - a G = (x - a D) D^T + a - u; with the Gram matrix, x D^T - a D D^T.
    data = X @ D.T if use_gram else X
    if init is None:
        potentials = X.new_zeros((X.shape[0], n_components))
        codes = potentials.clone()
    else:
        codes = init.clamp_min(0.0) if positive else init.clone()
        # u = a + (x - a D) D^T is the potential whose fixed point gives back a, so a
        # warm start at the solution stops at once.
        potentials = codes + torch.mm(torch.addmm(X, codes, D, alpha=-1.0), D.T)
        # The state is u: start from the codes it implies, not from ``init`` itself
        # (else the first step's drive is zero by construction and the sample stops).
        codes = _threshold(potentials, alpha, positive)
    out, rows = None, None
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        if use_gram:
            drive = torch.addmm(data, codes, gram, alpha=-1.0)
        else:
            drive = torch.mm(torch.addmm(data, codes, D, alpha=-1.0), D.T)
        drive.add_(codes).sub_(potentials)
        potentials.add_(drive, alpha=eta)
        codes = _threshold(potentials, alpha, positive)
        if _iteration_checked(n_iter):
            # The state is u, not a: codes can sit at zero while u still climbs
            # towards the threshold, so convergence is judged on u.
            finished = _finished(drive, potentials, tol / eta)
            n_finished = int(finished.sum())
            if n_finished == len(finished):
                break
            if n_finished:
                rows, out, codes, (potentials, data) = drop_finished(
                    finished, rows, out, codes, potentials, data
                )
    return finished_codes(rows, out, codes), n_iter


def _paper_loss(X, codes, D, alpha):
    """Per sample ``mean((x - a D)^2) + alpha * mean(|a|)``, the paper's per-entry loss."""
    residual = torch.addmm(X, codes, D, alpha=-1.0)
    return residual.square().mean(dim=1) + alpha * codes.abs().mean(dim=1)


@serial_when_small
def adaptive_projected_gradient(X, D, alpha, *, max_iter=300, tol=1e-6, init=None,
                                learning_rate=None):  # fmt: skip
    """The paper's §5 "LCA": projected gradient on ``a = ReLU(u)`` with adaptive steps.

    Not Rozell's LCA (see :func:`lca`); this is the procedure of the paper's code for its
    GPT-2 experiment, reproduced step for step. From ``u = 0`` (or the warm start), each
    iteration computes ``g = (a D - x) D^T + alpha``, tries ``u - 0.5 lr g`` and
    ``u - 2 lr g`` with each sample's own step ``lr`` (initially ``1 / n_components``),
    and keeps, per sample, the candidate with the lower per-entry loss
    ``mean((x - a D)^2) + alpha * mean(|a|)``, multiplying its ``lr`` by the factor it
    used. It stops when no sample's loss dropped by ``tol`` or more in the last
    iteration, or after ``max_iter`` iterations. The paper's code ran ``alpha = 0.1``,
    ``max_iter = 300``, ``tol = 1e-6``.

    The gradient ``g`` is that of ``0.5 ||x - a D||^2 + alpha * sum(a)`` (the library
    objective), but the step choice weighs the penalty per entry, i.e. as that objective
    at ``alpha * n_features / (2 * n_components)``; the iterates therefore hover near,
    not exactly at, the non-negative lasso solution at ``alpha``. Codes are non-negative.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary (rows are atoms), same device and dtype as ``X``.
    alpha : float
        L1 penalty (the paper's ``lambda``).
    max_iter : int, default=300
        Maximum number of iterations.
    tol : float, default=1e-6
        Stop when the largest per-sample decrease of the per-entry loss is below this.
    init : Tensor of shape (n_samples, n_components) or None, default=None
        Warm-start potentials (negative entries are treated as 0); zeros when None.
    learning_rate : float or None, default=None
        Initial step; None means ``1 / n_components`` (the paper's).

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        Non-negative codes.
    n_iter : int
        Iterations run.

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers import adaptive_projected_gradient
    >>> D = torch.eye(2, dtype=torch.float64)
    >>> X = torch.tensor([[3.0, -0.5]], dtype=torch.float64)
    >>> codes, _ = adaptive_projected_gradient(X, D, 0.1)
    >>> codes[0, 1].item(), round(codes[0, 0].item(), 1)
    (0.0, 2.9)
    """
    n_samples, n_components = X.shape[0], D.shape[0]
    alpha = float(alpha)
    if init is None:
        potentials = X.new_zeros((n_samples, n_components))
    else:
        potentials = init.clamp_min(0.0)
    codes = potentials.clamp_min(0.0)
    step = X.new_full((n_samples, 1), 1.0 / n_components if learning_rate is None
                      else float(learning_rate))  # fmt: skip
    loss = _paper_loss(X, codes, D, alpha)
    previous = None
    n_iter = 0
    for n_iter in range(max_iter):
        if previous is not None and float((previous - loss).max()) < tol:
            break
        previous = loss
        gradient = torch.mm(torch.addmm(X, codes, D, beta=-1.0), D.T).add_(alpha)
        smaller = torch.addcmul(potentials, step, gradient, value=-0.5)
        larger = torch.addcmul(potentials, step, gradient, value=-2.0)
        codes_smaller, codes_larger = smaller.clamp_min(0.0), larger.clamp_min(0.0)
        loss_smaller = _paper_loss(X, codes_smaller, D, alpha)
        loss_larger = _paper_loss(X, codes_larger, D, alpha)
        # Ties go to the smaller step, as argmin over (0.5, 2) does.
        take_larger = loss_larger < loss_smaller
        potentials = torch.where(take_larger[:, None], larger, smaller)
        codes = torch.where(take_larger[:, None], codes_larger, codes_smaller)
        step = torch.where(take_larger[:, None], 2.0 * step, 0.5 * step)
        loss = torch.where(take_larger, loss_larger, loss_smaller)
    else:
        n_iter = max_iter
    return codes, n_iter
