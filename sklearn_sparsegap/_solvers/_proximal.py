"""Proximal-gradient lasso solvers: ISTA, FISTA with adaptive restart, FISTA with an
unpenalised intercept."""

import torch
import torch.nn.functional as F

from ._common import _finished, _iteration_checked, drop_finished, finished_codes
from ._common import gram_form, lipschitz_constant
from ._common import serial_when_small


def _forward_backward_operator(X, D, alpha, positive, lipschitz):
    """``step(y, data) = prox_{alpha/L}(y - grad(y) / L)`` in a few fused ops.

    Returns ``(step, data)``: ``data`` holds one row per sample (``X D^T / L`` shifted by
    the threshold, or ``X``), so that the rows of finished samples can be dropped.
    """
    n_components, n_features = D.shape
    if gram_form(n_features, n_components):
        gram = D @ D.T
        if lipschitz is None:
            lipschitz = lipschitz_constant(D, gram)
        threshold = alpha / lipschitz
        # y - (y G - X D^T) / L = y (I - G / L) + X D^T / L: one addmm per iteration.
        transition = gram.div_(-lipschitz)
        transition.diagonal().add_(1.0)
        bias = torch.mm(X, D.T).div_(lipschitz)
        if positive:
            bias.sub_(threshold)
            return (lambda y, b: torch.addmm(b, y, transition).clamp_min_(0.0)), bias
        return (lambda y, b: F.softshrink(torch.addmm(b, y, transition), threshold)), bias

    if lipschitz is None:
        lipschitz = lipschitz_constant(D)
    threshold = alpha / lipschitz
    scaled_atoms_t = D.T / lipschitz

    def step(y, signals):
        residual = torch.addmm(signals, y, D, beta=-1.0)  # y D - x
        z = torch.addmm(y, residual, scaled_atoms_t, alpha=-1.0)
        if positive:
            return z.sub_(threshold).clamp_min_(0.0)
        return F.softshrink(z, threshold)

    return step, X


def _proximal_gradient(X, D, alpha, *, positive, max_iter, tol, init, lipschitz, momentum, restart):
    step, data = _forward_backward_operator(X, D, float(alpha), positive, lipschitz)
    codes = X.new_zeros((X.shape[0], D.shape[0])) if init is None else init
    point = codes
    # Samples stop one by one (see drop_finished).
    out, rows = None, None
    if restart:
        # Per-sample count of iterations since the last restart.
        count = X.new_zeros(X.shape[0])
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        new = step(point, data)
        change = new - codes
        if not momentum:
            point = new
        elif restart:
            # O'Donoghue & Candes (2015): drop the momentum of samples whose last step
            # went uphill, i.e. (y - s_new) . (s_new - s) > 0.
            # In place where a temporary is ours: on small blocks the allocations and
            # kernel launches of an iteration cost more than its arithmetic.
            uphill = (point - new).mul_(change).sum(dim=1) > 0
            count = count.add_(1.0).masked_fill_(uphill, 1.0)
            beta = (count - 1.0).div_(count + 2.0)
            point = torch.addcmul(new, beta[:, None], change)
        else:
            point = torch.add(new, change, alpha=(n_iter - 1) / (n_iter + 2))
        checked = _iteration_checked(n_iter)
        if checked:
            finished = _finished(change, codes, tol)
        codes = new
        if checked:
            n_finished = int(finished.sum())
            if n_finished == len(finished):
                break
            if n_finished:
                working = (point, data, count) if restart else (point, data)
                rows, out, codes, working = drop_finished(finished, rows, out, codes, *working)
                point, data = working[:2]
                if restart:
                    count = working[2]
    return finished_codes(rows, out, codes), n_iter


@serial_when_small
def ista(X, D, alpha, *, positive=False, max_iter=1000, tol=1e-4, init=None, lipschitz=None):
    """Proximal gradient descent (ISTA) for the lasso, batched over samples.

    Step ``1/L`` with ``L`` the squared spectral norm of ``D``, then soft-thresholding
    (``max(z - alpha/L, 0)`` when ``positive``). When ``n_components <= 2 * n_features`` an
    iteration is a single product with ``I - D D^T / L`` (``X D^T`` is precomputed), else
    two products with ``D`` and ``D^T``. A sample stops once its codes change by
    ``||s_new - s|| <= tol * max(||s||, eps)`` in one iteration (tested after each of
    the first 10 iterations, then every 10); its rows then leave the working arrays, so
    late iterations cost only what the slow samples need. The solver stops when every
    sample has, or after ``max_iter`` iterations.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary (rows are atoms), same device and dtype as ``X``.
    alpha : float
        L1 penalty of the objective ``0.5 ||x - s D||^2 + alpha ||s||_1``.
    positive : bool, default=False
        Constrain the codes to be non-negative.
    max_iter : int, default=1000
        Maximum number of iterations.
    tol : float, default=1e-4
        Tolerance on the relative change of each sample's codes (see above).
    init : Tensor of shape (n_samples, n_components) or None, default=None
        Warm start (not modified); zeros when None.
    lipschitz : float or None, default=None
        Precomputed :func:`lipschitz_constant` of ``D``, to skip its eigenvalue
        computation on repeated calls.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The codes.
    n_iter : int
        Iterations run (by the slowest sample).

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers import ista
    >>> D = torch.eye(2, dtype=torch.float64)
    >>> codes, n_iter = ista(torch.tensor([[3.0, -0.5]], dtype=torch.float64), D, 1.0)
    >>> codes
    tensor([[2., -0.]], dtype=torch.float64)
    """
    return _proximal_gradient(
        X, D, alpha, positive=positive, max_iter=max_iter, tol=tol, init=init,
        lipschitz=lipschitz, momentum=False, restart=False,
    )  # fmt: skip


@serial_when_small
def fista(
    X, D, alpha, *, positive=False, max_iter=1000, tol=1e-4, init=None, lipschitz=None,
    restart=True,
):  # fmt: skip
    """Accelerated proximal gradient (FISTA, Beck & Teboulle 2009), batched over samples.

    ISTA's step (see :func:`ista`) taken at the extrapolated point
    ``y = s_k + (k-1)/(k+2) (s_k - s_{k-1})``. With ``restart`` (default), each sample's
    momentum is reset when ``(y - s_new) . (s_new - s) > 0`` (gradient-based adaptive
    restart, O'Donoghue & Candes 2015), which removes FISTA's oscillations and converges
    linearly on the strongly convex restrictions that sparse codes induce.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary (rows are atoms), same device and dtype as ``X``.
    alpha : float
        L1 penalty of the objective ``0.5 ||x - s D||^2 + alpha ||s||_1``.
    positive : bool, default=False
        Constrain the codes to be non-negative.
    max_iter : int, default=1000
        Maximum number of iterations.
    tol : float, default=1e-4
        Tolerance on the relative change of the codes (see :func:`ista`).
    init : Tensor of shape (n_samples, n_components) or None, default=None
        Warm start (not modified), e.g. an SAE's codes; zeros when None.
    lipschitz : float or None, default=None
        Precomputed :func:`lipschitz_constant` of ``D``.
    restart : bool, default=True
        Use adaptive momentum restart.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The codes.
    n_iter : int
        Iterations run.

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap import make_sparse_dictionary_data
    >>> from sklearn_sparsegap._solvers import fista
    >>> X, D, S = make_sparse_dictionary_data(64, random_state=0)
    >>> codes, n_iter = fista(torch.tensor(X), torch.tensor(D), 0.01, positive=True)
    >>> codes.shape, bool((codes >= 0).all())
    (torch.Size([64, 16]), True)
    """
    return _proximal_gradient(
        X, D, alpha, positive=positive, max_iter=max_iter, tol=tol, init=init,
        lipschitz=lipschitz, momentum=True, restart=restart,
    )  # fmt: skip


@torch.no_grad()
def fista_with_intercept(X, D, alpha, *, positive=False, max_iter=1000, tol=1e-4, init=None):
    """Lasso codes and one shared, unpenalised intercept, by FISTA.

    Solves ``min_{S, b} sum_n 0.5 * ||x_n - s_n D - b||^2 + alpha * ||s_n||_1``. For fixed
    codes the best intercept is ``mean(X - S D)``; substituting it leaves a lasso whose
    residual is centred over the samples, so each FISTA step uses the gradient
    ``(R - mean(R)) D^T`` with the plain lasso's step ``1/L`` (centring is a projection:
    it does not raise ``L``), which converges far faster than alternating codes and
    intercept (see :ref:`defaults`). The mean couples
    the samples, so they iterate together; the solve stops when the whole code matrix
    changes by at most ``tol`` (relative) in one iteration. Momentum restarts as in
    :func:`fista`, for the whole problem at once.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary, same device and dtype as ``X``.
    alpha : float
        L1 penalty.
    positive : bool, default=False
        Non-negative codes.
    max_iter : int, default=1000
        Maximum iterations.
    tol : float, default=1e-4
        Relative change of the codes at which to stop.
    init : Tensor of shape (n_samples, n_components) or None, default=None
        Warm start (not modified); zeros when None.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
    intercept : Tensor of shape (n_features,)
    n_iter : int

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap import make_sparse_dictionary_data
    >>> from sklearn_sparsegap._solvers import fista_with_intercept
    >>> X, D, S = make_sparse_dictionary_data(256, random_state=0)
    >>> shift = torch.linspace(-1, 1, 8, dtype=torch.float64)
    >>> codes, intercept, n_iter = fista_with_intercept(
    ...     torch.tensor(X) + shift, torch.tensor(D), 1e-3, positive=True, max_iter=3000,
    ...     tol=1e-8)
    >>> bool(torch.allclose(intercept, shift, atol=0.05))
    True
    """
    lipschitz = lipschitz_constant(D)
    threshold = alpha / lipschitz
    codes = X.new_zeros((X.shape[0], D.shape[0])) if init is None else init.clone()
    point = codes
    momentum_steps = 0
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        residual = point @ D - X
        residual -= residual.mean(dim=0)
        new = point - (residual @ D.T) / lipschitz
        new = new.sub_(threshold).clamp_min_(0.0) if positive else F.softshrink(new, threshold)
        change = new - codes
        if float(torch.vdot((point - new).flatten(), change.flatten())) > 0:
            momentum_steps = 0
        momentum_steps += 1
        point = new + (momentum_steps - 1) / (momentum_steps + 2) * change
        codes = new
        if float(change.norm()) <= tol * max(float(codes.norm()), 1e-12):
            break
    intercept = (X - codes @ D).mean(dim=0)
    return codes, intercept, n_iter
