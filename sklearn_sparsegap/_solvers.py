"""Batched sparse coding: :func:`sparse_encode` and its solvers on torch tensors.

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
not require gradients.
"""

import functools
import math
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F

from ._compat import Interval, StrOptions, validate_params
from ._torch_utils import (
    numpy_dtype,
    resolve_device,
    serial_if_small,
    to_numpy,
    to_tensor,
    torch_dtype,
)
from ._validation import check_dictionary, check_matrix
from .flops import _MAX_GRAM_COMPONENTS, _gram_form

__all__ = [
    "adam_codes",
    "default_n_nonzero_coefs",
    "fista",
    "fista_with_intercept",
    "gradient_pursuit",
    "ista",
    "lipschitz_constant",
    "matching_pursuit",
    "omp",
    "sparse_encode",
    "topk_encode",
]

ALGORITHMS = ("ista", "fista", "omp", "mp", "gradient_pursuit", "topk", "adam")
_GREEDY = ("omp", "mp", "gradient_pursuit", "topk")
# Greedy pursuits that fit a support by least squares or gradient steps: a support larger
# than n_features is linearly dependent there.
_SUPPORT_FITTING = ("omp", "gradient_pursuit")

# Defaults of sparse_encode when max_iter is None: enough for FISTA to converge on the
# paper's problems; the paper's test-time Adam runs 10,000 iterations.
_DEFAULT_MAX_ITER = {"ista": 1000, "fista": 1000, "adam": 10_000}

# Convergence is tested after each of the first _CHECK_FIRST iterations (so a warm start
# at the solution stops at once) and then every _CHECK_EVERY: a test costs a host sync and
# a few reductions, as much as an iteration on small problems.
_CHECK_FIRST = 10
_CHECK_EVERY = 10

# Rows per block: one (rows, width) working array holds at most this many elements.
_MAX_BLOCK_ELEMENTS = 2**24
_MIN_BLOCK_ROWS = 1024
_MAX_BLOCK_ROWS = 65536

# The paper's Adam inference: log-codes start at -10; a warm start uses log(init + 1e-10).
_ADAM_LOG_INIT = -10.0
_ADAM_INIT_OFFSET = 1e-10
_LOG2_E = 1.0 / math.log(2.0)


# ------------------------------------------------------------------------- helpers
def _matmul_flops(X, D):
    """FLOPs of one ``(n_samples, n_features) @ (n_features, n_components)`` product."""
    return 2 * X.shape[0] * X.shape[1] * D.shape[0]


def _serial_when_small(solver):
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


def default_n_nonzero_coefs(n_features, n_components):
    """Return scikit-learn's default K, ``min(max(n_features // 10, 1), n_components)``.

    Parameters
    ----------
    n_features : int
        M.
    n_components : int
        N.

    Returns
    -------
    n_nonzero_coefs : int
        The default K of the greedy algorithms.

    Examples
    --------
    >>> from sklearn_sparsegap._solvers import default_n_nonzero_coefs
    >>> default_n_nonzero_coefs(200, 1000)
    20
    """
    return min(max(n_features // 10, 1), n_components)


# --------------------------------------------------------------- proximal gradient
def _forward_backward_operator(X, D, alpha, positive, lipschitz):
    """``step(y, data) = prox_{alpha/L}(y - grad(y) / L)`` in a few fused ops.

    Returns ``(step, data)``: ``data`` holds one row per sample (``X D^T / L`` shifted by
    the threshold, or ``X``), so that the rows of finished samples can be dropped.
    """
    n_components, n_features = D.shape
    if _gram_form(n_features, n_components):
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
    # Samples stop one by one: a finished sample's codes go to ``out`` and its rows leave
    # the working arrays, so late iterations only pay for the slow samples.
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
            uphill = torch.linalg.vecdot(point - new, change) > 0
            count = torch.where(uphill, 1.0, count + 1.0)
            beta = (count - 1.0) / (count + 2.0)
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
                if out is None:
                    out = codes.clone()
                    rows = torch.arange(len(codes), device=codes.device)
                out[rows[finished]] = codes[finished]
                keep = torch.nonzero(~finished)[:, 0]
                rows, codes, point, data = rows[keep], codes[keep], point[keep], data[keep]
                if restart:
                    count = count[keep]
    if out is None:
        return codes, n_iter
    out[rows] = codes
    return out, n_iter


@_serial_when_small
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


@_serial_when_small
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
    it does not raise ``L``). Alternating codes and intercept converges far more slowly
    (measured: 60 alternations to reach what this reaches in one solve). The mean couples
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


# ------------------------------------------------------------------------ greedy
def _select_signed(scores, positive, magnitudes=None):
    """Per-row best atom and its (signed) score.

    The largest ``|score|`` (computed into ``magnitudes`` if given), or the largest
    ``score`` when ``positive``. ``argmax`` is used rather than ``max(dim=...)``, which
    starts a thread team even on tiny inputs, costing milliseconds on a busy machine.
    """
    if positive:
        index = scores.argmax(dim=1)
    else:
        index = torch.abs(scores, out=magnitudes).argmax(dim=1)
    return scores.gather(1, index[:, None])[:, 0], index


def _solve_spd(system, rhs):
    """Batched solve of symmetric positive definite systems; least squares if singular."""
    factor, info = torch.linalg.cholesky_ex(system)
    solution = torch.cholesky_solve(rhs[:, :, None], factor)[:, :, 0]
    failed = info != 0
    if bool(failed.any()):
        solution[failed] = torch.linalg.lstsq(
            system[failed].cpu(), rhs[failed][:, :, None].cpu()
        ).solution[:, :, 0].to(solution.device)
    return solution


def _support_least_squares(X, atoms, support, used, positive):
    """Least-squares coefficients of each sample on its selected (used) atoms.

    With ``positive``, the atom with the most negative coefficient is dropped and the
    system re-solved, batched, until no coefficient is negative (an active-set heuristic
    for non-negative least squares on the support).
    """
    selected = atoms[support]  # (n, k, M)
    gram = torch.bmm(selected, selected.transpose(1, 2))
    rhs = torch.bmm(selected, X[:, :, None])[:, :, 0]
    mask = used.to(X.dtype)
    for _ in range(support.shape[1] + 1):
        # Unused slots become identity rows with a zero right-hand side: coefficient 0.
        system = gram * (mask[:, :, None] * mask[:, None, :])
        system.diagonal(dim1=1, dim2=2).add_(1.0 - mask)
        coef = _solve_spd(system, rhs * mask)
        if not positive:
            break
        negative = (coef < 0) & (mask > 0)
        rows = negative.any(dim=1)
        if not bool(rows.any()):
            break
        worst = coef.masked_fill(~negative, 0.0).argmin(dim=1)
        mask[rows, worst[rows]] = 0.0
    coef = coef * mask
    if positive:
        coef.clamp_min_(0.0)
    return coef


@_serial_when_small
def omp(X, D, n_nonzero_coefs, *, positive=False):
    """Orthogonal matching pursuit (Pati et al. 1993), batched over samples.

    Each iteration selects, for every sample, the atom most correlated with its residual
    (``|r . d| / ||d||``, or the largest positive correlation when ``positive``), then
    projects the residual off the selected atoms (batched Gram-Schmidt, so no system is
    solved inside the loop). The coefficients, the least-squares fit on the selected
    atoms, come from one batched back substitution with the Gram-Schmidt triangle. A
    sample stops once its residual norm is below ``100 * eps * ||x||`` (an atom within
    ``sqrt(eps)`` of the span of the selected ones is skipped); the loop stops when every
    sample has. On unit-norm atoms this is scikit-learn's ``algorithm="omp"``.

    With ``positive=True`` the atoms are selected on the unconstrained residual (largest
    positive correlation; none is added once no correlation is positive), and the final
    fit is non-negative: where the least-squares fit has negative coefficients, the atom
    with the most negative one is dropped and the fit repeated (batched Cholesky) until
    none is negative, an active-set heuristic for non-negative least squares.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary, same device and dtype as ``X``.
    n_nonzero_coefs : int
        K, at most ``min(n_features, n_components)``.
    positive : bool, default=False
        Non-negative codes.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        Codes with at most K non-zeros per row.
    n_iter : int
        Iterations run (at most K).

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap import make_sparse_dictionary_data
    >>> from sklearn_sparsegap._solvers import omp
    >>> X, D, S = make_sparse_dictionary_data(32, n_components=24, n_features=32,
    ...                                       random_state=0)
    >>> codes, n_iter = omp(torch.tensor(X, dtype=torch.float64),
    ...                     torch.tensor(D, dtype=torch.float64), 3)
    >>> bool(torch.allclose(codes, torch.tensor(S, dtype=torch.float64), atol=1e-8))
    True
    """
    n_samples, n_features = X.shape
    atoms, norms = _normalized_atoms(D)
    residual = X.clone()
    energy = torch.linalg.vecdot(X, X)  # squared residual norms
    threshold = _residual_threshold(X)
    # Below this the downdated energy is too inexact to decide on stopping: recompute.
    recompute_below = 10 * torch.finfo(X.dtype).eps * energy
    basis = X.new_zeros((n_samples, n_nonzero_coefs, n_features))
    # Gram-Schmidt factor, lower-triangular: selected atoms = lower @ basis. A skipped
    # slot has a zero basis row and a unit diagonal, so its coefficient comes out 0.
    lower = X.new_zeros((n_samples, n_nonzero_coefs, n_nonzero_coefs))
    projections = X.new_zeros((n_samples, n_nonzero_coefs))
    support = torch.zeros((n_samples, n_nonzero_coefs), dtype=torch.long, device=X.device)
    used = torch.zeros((n_samples, n_nonzero_coefs), dtype=torch.bool, device=X.device)
    # An atom within this distance of the span of the selected ones is skipped. This also
    # covers re-selecting an atom: the residual is orthogonal to the selected atoms, so one
    # can only win when every correlation is at rounding level (the residual has
    # vanished); no masking pass over the scores is needed.
    dependent = math.sqrt(torch.finfo(X.dtype).eps)
    magnitudes = None if positive else X.new_empty((n_samples, D.shape[0]))
    n_iter = 0
    # Each pass over a (n_samples, n_features) or larger array costs a thread-team
    # wake-up on a busy CPU whatever its size, so the loop keeps them few.
    for k in range(n_nonzero_coefs):
        active = energy > threshold
        if not bool(active.any()):
            break
        n_iter = k + 1
        scores = residual @ atoms.T
        correlation, index = _select_signed(scores, positive, magnitudes)
        direction = torch.index_select(atoms, 0, index)
        if k:
            # Gram-Schmidt; (1, M) @ (M, k) and (1, k) @ (k, M) batches read the basis
            # row by row, faster than the (k, M) @ (M, 1) layout on CPU.
            previous = basis[:, :k]
            overlap = torch.bmm(
                direction[:, None, :], previous.transpose(1, 2), out=lower[:, k : k + 1, :k]
            )
            direction = torch.baddbmm(direction[:, None, :], overlap, previous, alpha=-1.0)
            direction = direction[:, 0]
        length = torch.linalg.vector_norm(direction, dim=1)
        keep = (length > dependent) & active
        if positive:
            keep &= correlation > 0
        scale = keep / length.clamp_min(dependent)
        torch.mul(direction, scale[:, None], out=basis[:, k])
        # The residual is orthogonal to the previous basis vectors, so its projection on
        # the new one is the atom's correlation over the length: no extra pass over X.
        projection = correlation * scale
        residual.addcmul_(basis[:, k], projection[:, None], value=-1.0)
        energy = energy - projection.square()
        if bool((energy <= recompute_below).any()):
            energy = torch.linalg.vector_norm(residual, dim=1).square_()
        lower[:, k, k] = torch.where(keep, length, 1.0)
        projections[:, k] = projection
        support[:, k] = index
        used[:, k] = keep
    codes = X.new_zeros((n_samples, D.shape[0]))
    if n_iter:
        support, used = support[:, :n_iter], used[:, :n_iter]
        # Least squares on the selected atoms: lower^T @ coef = basis @ x.
        coef = torch.linalg.solve_triangular(
            lower[:, :n_iter, :n_iter].mT, projections[:, :n_iter, None], upper=True
        )[:, :, 0]
        if positive and bool((coef < 0).any()):
            coef = _support_least_squares(X, atoms, support, used, positive)
        codes.scatter_add_(1, support, coef / norms[support])
    return codes, n_iter


@_serial_when_small
def matching_pursuit(X, D, n_nonzero_coefs, *, positive=False):
    """Matching pursuit (Mallat & Zhang 1993), batched over samples.

    Each of the K iterations adds, for every sample, the projection of the residual on
    its most correlated atom (``|r . d| / ||d||``; the largest positive correlation when
    ``positive``, adding nothing once none is positive), without re-fitting earlier
    coefficients. An atom can be chosen again, so there are at most K non-zeros. The
    residual norm never increases. Correlations are updated from rows of the Gram matrix
    when ``n_components <= 4096``, else recomputed from the residual.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary, same device and dtype as ``X``.
    n_nonzero_coefs : int
        K, the number of iterations.
    positive : bool, default=False
        Non-negative codes.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The codes.
    n_iter : int
        Iterations run (fewer than K when every residual vanished).

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers import matching_pursuit
    >>> D = torch.eye(3, dtype=torch.float64)
    >>> matching_pursuit(torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float64), D, 2)[0]
    tensor([[ 0., -2.,  1.]], dtype=torch.float64)
    """
    atoms, norms = _normalized_atoms(D)
    use_gram = D.shape[0] <= _MAX_GRAM_COMPONENTS
    correlations = X @ atoms.T
    gram = atoms @ atoms.T if use_gram else None
    residual = None if use_gram else X.clone()
    # The squared residual norm drops by the squared step: tracked for early stopping.
    energy = torch.linalg.vecdot(X, X)
    threshold = _residual_threshold(X)
    codes = X.new_zeros(correlations.shape)
    n_iter = 0
    for k in range(n_nonzero_coefs):
        active = energy > threshold
        if not bool(active.any()):
            break
        n_iter = k + 1
        step, index = _select_signed(correlations, positive)
        step = step * active
        if positive:
            step.clamp_min_(0.0)
        codes.scatter_add_(1, index[:, None], (step / norms[index])[:, None])
        energy -= step.square()
        if use_gram:
            correlations.addcmul_(gram[index], step[:, None], value=-1.0)
        else:
            residual.addcmul_(atoms[index], step[:, None], value=-1.0)
            correlations = residual @ atoms.T
    return codes, n_iter


@_serial_when_small
def gradient_pursuit(X, D, n_nonzero_coefs, *, positive=False):
    """Gradient pursuit (Blumensath & Davies 2008), batched over samples.

    Each of the K iterations adds the atom most correlated with the residual to the
    support (as matching pursuit), then moves the coefficients of the whole support along
    the gradient restricted to it, ``g = (D_S r)``, with the exact line-search step
    ``||g||^2 / ||g D_S||^2``. With ``positive``, coordinates at zero with a negative
    gradient are frozen and the step is capped so no coefficient becomes negative. The
    residual norm never increases; the codes have at most K non-zeros. Atoms are
    normalised internally (the pursuit runs on unit atoms).

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary, same device and dtype as ``X``.
    n_nonzero_coefs : int
        K, the number of iterations.
    positive : bool, default=False
        Non-negative codes.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The codes.
    n_iter : int
        Iterations run (fewer than K when every residual vanished).

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers import gradient_pursuit
    >>> D = torch.eye(3, dtype=torch.float64)
    >>> gradient_pursuit(torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float64), D, 2)[0]
    tensor([[ 0., -2.,  1.]], dtype=torch.float64)
    """
    n_samples, n_features = X.shape
    atoms, norms = _normalized_atoms(D)
    residual = X.clone()
    threshold = _residual_threshold(X)
    support = torch.zeros((n_samples, n_nonzero_coefs), dtype=torch.long, device=X.device)
    slots = X.new_zeros((n_samples, n_nonzero_coefs))  # 1 where a slot holds a new atom
    selected = X.new_zeros((n_samples, n_nonzero_coefs, n_features))
    coef = X.new_zeros((n_samples, n_nonzero_coefs))
    correlations = X @ atoms.T
    tiny = torch.finfo(X.dtype).tiny
    energy = torch.linalg.vecdot(X, X)  # squared residual norms
    # Below this the downdated energy is too inexact to decide on stopping: recompute.
    recompute_below = 10 * torch.finfo(X.dtype).eps * energy
    n_iter = 0
    for k in range(n_nonzero_coefs):
        active = energy > threshold
        if not bool(active.any()):
            break
        n_iter = k + 1
        best, index = _select_signed(correlations, positive)
        # A re-selected atom does not take a new slot (the support is a set).
        taken = ((support[:, :k] == index[:, None]) & (slots[:, :k] > 0)).any(dim=1)
        new = ~taken & active
        if positive:
            new &= best > 0
        support[:, k] = index
        slots[:, k] = new
        torch.index_select(atoms, 0, index, out=selected[:, k])
        gradient = correlations.gather(1, support[:, : k + 1]) * slots[:, : k + 1]
        if positive:
            gradient = gradient.masked_fill_((coef[:, : k + 1] <= 0) & (gradient < 0), 0.0)
        direction = torch.bmm(gradient[:, None, :], selected[:, : k + 1])[:, 0]
        # r . (g D_S) = ||g||^2, so the exact line search is ||g||^2 / ||g D_S||^2.
        descent = torch.linalg.vecdot(gradient, gradient)
        curvature = torch.linalg.vector_norm(direction, dim=1).square_().clamp_min_(tiny)
        step = descent / curvature
        if positive:
            limit = torch.where(gradient < 0, -coef[:, : k + 1] / gradient, math.inf)
            step = torch.minimum(step, limit.amin(dim=1))
        step = step * active
        coef[:, : k + 1].addcmul_(gradient, step[:, None])
        residual.addcmul_(direction, step[:, None], value=-1.0)
        # ||r - a g D_S||^2 = ||r||^2 - a (2 ||g||^2 - a ||g D_S||^2).
        energy = energy - step * (2.0 * descent - step * curvature)
        if bool((energy <= recompute_below).any()):
            energy = torch.linalg.vector_norm(residual, dim=1).square_()
        if k + 1 < n_nonzero_coefs:
            correlations = residual @ atoms.T
    codes = X.new_zeros((n_samples, D.shape[0]))
    if n_iter:
        support = support[:, :n_iter]
        codes.scatter_add_(1, support, coef[:, :n_iter] * slots[:, :n_iter] / norms[support])
    return codes, n_iter


def topk_encode(X, D, n_nonzero_coefs, *, positive=False):
    """One correlation step ``X D^T`` keeping the K largest entries per sample.

    Atoms are ranked by ``|x . d| / ||d||`` (by ``x . d / ||d||`` when ``positive``, whose
    negative correlations are zeroed, so fewer than K entries may be non-zero) and each
    kept value is the projection coefficient ``x . d / ||d||^2`` (the correlation itself
    for unit atoms): a TopK SAE with tied weights.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary, same device and dtype as ``X``.
    n_nonzero_coefs : int
        K.
    positive : bool, default=False
        Non-negative codes.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The codes.
    n_iter : int
        Always 1.

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers import topk_encode
    >>> D = torch.eye(3, dtype=torch.float64)
    >>> topk_encode(torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float64), D, 2)[0]
    tensor([[ 0., -2.,  1.]], dtype=torch.float64)
    """
    atoms, norms = _normalized_atoms(D)
    correlations = X @ atoms.T
    if positive:
        correlations.clamp_min_(0.0)
        _, index = correlations.topk(n_nonzero_coefs, dim=1)
    else:
        _, index = correlations.abs().topk(n_nonzero_coefs, dim=1)
    values = correlations.gather(1, index) / norms[index]
    codes = torch.zeros_like(correlations).scatter_(1, index, values)
    return codes, 1


# -------------------------------------------------------------------------- adam
@_serial_when_small
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
    n_components, n_features = D.shape
    beta1, beta2 = betas
    shape = (X.shape[0], n_components)
    # The iterate is stored as log2(codes) = log(codes) * log2(e), and Adam's step on
    # log(codes) is scaled to match. exp2, unlike exp and sqrt, is not routed to MKL's
    # vector math library, whose threading costs milliseconds per call on a busy machine.
    if init is None:
        log_codes = X.new_full(shape, _ADAM_LOG_INIT * _LOG2_E)
    else:
        log_codes = torch.log2(init.clamp_min(0.0) + _ADAM_INIT_OFFSET)
    if _gram_form(n_features, n_components):
        gram = D @ D.T
        bias = torch.mm(X, D.T).neg_().add_(alpha)  # alpha - X D^T

        def gradient(codes):
            return torch.addmm(bias, codes, gram)

    else:

        def gradient(codes):
            return torch.mm(torch.addmm(X, codes, D, beta=-1.0), D.T).add_(alpha)

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
        # sqrt(v) as v * rsqrt(v) (0 where v is 0), see above.
        denominator = second.clamp_min(tiny).rsqrt_().mul_(second).add_(eps * correction2)
        step = learning_rate * correction2 / correction1 * _LOG2_E
        log_codes.addcdiv_(first, denominator, value=-step)
        new = log_codes.exp2()
        done = tol > 0 and _iteration_checked(n_iter) and _converged(new - codes, codes, tol)
        codes = new
        if done:
            break
    return codes, n_iter


# ------------------------------------------------------------------ sparse_encode
def _check_n_nonzero_coefs(n_nonzero_coefs, n_features, n_components, algorithm):
    if n_nonzero_coefs is None:
        return default_n_nonzero_coefs(n_features, n_components)
    if n_nonzero_coefs > n_components:
        raise ValueError(
            f"n_nonzero_coefs={n_nonzero_coefs} exceeds n_components={n_components} "
            f"(the number of dictionary atoms); algorithm={algorithm!r} needs "
            f"n_nonzero_coefs <= {n_components}."
        )
    if algorithm in _SUPPORT_FITTING and n_nonzero_coefs > n_features:
        raise ValueError(
            f"n_nonzero_coefs={n_nonzero_coefs} exceeds n_features={n_features}: "
            f"algorithm={algorithm!r} fits the codes on the selected atoms, and more than "
            f"n_features atoms are linearly dependent; use n_nonzero_coefs <= {n_features}."
        )
    return int(n_nonzero_coefs)


def _block_rows(width):
    return int(np.clip(_MAX_BLOCK_ELEMENTS // max(width, 1), _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS))


@validate_params(
    {
        "X": ["array-like"],
        "dictionary": ["array-like"],
        "algorithm": [StrOptions(set(ALGORITHMS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "n_nonzero_coefs": [Interval(Integral, 1, None, closed="left"), None],
        "positive": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "init": ["array-like", None],
        "device": [str, torch.device],
        "return_n_iter": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def sparse_encode(
    X,
    dictionary,
    *,
    algorithm="fista",
    alpha=0.01,
    n_nonzero_coefs=None,
    positive=False,
    max_iter=None,
    tol=1e-4,
    init=None,
    device="auto",
    return_n_iter=False,
):
    """Sparse codes of ``X`` on a fixed dictionary, with batched torch solvers.

    Solves, per sample, ``min_s 0.5 * ||x - s @ dictionary||^2 + alpha * ||s||_1``
    (scikit-learn's convention: ``alpha`` means what it means in
    :func:`sklearn.decomposition.sparse_encode`), or a greedy K-sparse approximation of
    it. All samples are encoded at once, in blocks of rows that bound the memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals. Not modified.
    dictionary : array-like of shape (n_components, n_features)
        Atoms as rows; any non-zero norms (the greedy algorithms rank atoms by
        correlation divided by the atom norm).
    algorithm : {"fista", "ista", "omp", "mp", "gradient_pursuit", "topk", "adam"}, \
            default="fista"
        - ``"fista"``: accelerated proximal gradient with adaptive restart (the lasso);
        - ``"ista"``: proximal gradient (the lasso);
        - ``"omp"``: orthogonal matching pursuit, K atoms with a least-squares fit;
        - ``"mp"``: matching pursuit, K greedy steps without re-fit;
        - ``"gradient_pursuit"``: greedy selection with exact gradient steps on the
          support (Blumensath & Davies 2008);
        - ``"topk"``: one correlation step keeping the K largest;
        - ``"adam"``: the paper's exp-parametrised Adam (always non-negative codes; see
          ``max_iter``).
    alpha : float, default=0.01
        L1 penalty of ``"fista"``, ``"ista"`` and ``"adam"`` (the paper's ``lambda`` is
        ``paper_l1_to_alpha(lambda, n_features, n_components)``). 0.01 is where the
        positive lasso recovers the paper's N=16, M=8, K=3 codes best.
    n_nonzero_coefs : int or None, default=None
        K of the greedy algorithms; None means ``min(max(n_features // 10, 1),
        n_components)`` as in scikit-learn. It must not exceed ``n_components`` and, for
        ``"omp"`` and ``"gradient_pursuit"``, ``n_features``.
    positive : bool, default=False
        Non-negative codes (``"adam"`` codes always are).
    max_iter : int or None, default=None
        Maximum iterations of ``"fista"``, ``"ista"`` (None: 1000) and ``"adam"`` (None:
        10000, the paper's test-time count; Adam's step of at most ``3e-3`` in
        log-space needs thousands of iterations to grow codes from ``exp(-10)``).
    tol : float, default=1e-4
        ``"fista"`` and ``"ista"`` stop a sample once its codes change by
        ``||s_new - s|| <= tol * max(||s||, eps)`` in one iteration; ``"adam"`` stops
        when every sample's codes do (0 runs ``max_iter`` iterations).
    init : array-like of shape (n_samples, n_components), default=None
        Warm start of ``"fista"``, ``"ista"`` and ``"adam"`` (e.g. an SAE's codes);
        ignored by the greedy algorithms.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    return_n_iter : bool, default=False
        Also return the number of iterations run (the maximum over blocks), e.g. for
        :func:`sklearn_sparsegap.flops.sparse_encode_flops`.

    Returns
    -------
    codes : ndarray of shape (n_samples, n_components)
        The codes; float64 if ``X`` is float64, else float32.
    n_iter : int
        Iterations run; returned when ``return_n_iter`` is True.

    See Also
    --------
    sklearn.decomposition.sparse_encode : The scikit-learn equivalent (same objective).
    sklearn_sparsegap.flops.sparse_encode_flops : FLOPs of a call.

    Examples
    --------
    >>> from sklearn_sparsegap import make_sparse_dictionary_data, mean_corr_coef
    >>> from sklearn_sparsegap import sparse_encode
    >>> X, D, S = make_sparse_dictionary_data(256, n_components=32, n_features=24,
    ...                                       n_nonzero_coefs=3, random_state=0)
    >>> codes = sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=3, device="cpu")
    >>> round(mean_corr_coef(S, codes), 3)
    1.0
    >>> codes, n_iter = sparse_encode(X, D, alpha=0.001, positive=True, device="cpu",
    ...                               return_n_iter=True)
    >>> codes.dtype, mean_corr_coef(S, codes) > 0.99
    (dtype('float64'), True)
    """
    X = check_matrix(X, "X")
    dictionary = check_dictionary(dictionary, n_features=X.shape[1])
    n_samples, n_features = X.shape
    n_components = dictionary.shape[0]
    if init is not None:
        init = check_matrix(init, "init")
        if init.shape != (n_samples, n_components):
            raise ValueError(
                f"init must have shape (n_samples, n_components) = "
                f"({n_samples}, {n_components}), got {init.shape}."
            )
    n_nonzero = None
    if algorithm in _GREEDY:
        n_nonzero = _check_n_nonzero_coefs(n_nonzero_coefs, n_features, n_components, algorithm)
    if max_iter is None:
        max_iter = _DEFAULT_MAX_ITER.get(algorithm, 1)

    device = resolve_device(device)
    dtype = torch_dtype(X.dtype)
    D = to_tensor(dictionary, device=device, dtype=dtype)
    width = n_components
    if algorithm in _SUPPORT_FITTING:
        width = max(n_components, n_nonzero * n_features)
    rows = _block_rows(width)

    with torch.no_grad():
        lipschitz = None
        if algorithm in ("ista", "fista") and n_samples > rows:
            lipschitz = lipschitz_constant(D)

        def solve(X_block, init_block):
            if algorithm in ("ista", "fista"):
                function = fista if algorithm == "fista" else ista
                return function(
                    X_block, D, alpha, positive=positive, max_iter=max_iter, tol=tol,
                    init=init_block, lipschitz=lipschitz,
                )  # fmt: skip
            if algorithm == "adam":
                return adam_codes(X_block, D, alpha, max_iter=max_iter, tol=tol, init=init_block)
            function = {
                "omp": omp,
                "mp": matching_pursuit,
                "gradient_pursuit": gradient_pursuit,
                "topk": topk_encode,
            }[algorithm]
            return function(X_block, D, n_nonzero, positive=positive)

        codes = np.empty((n_samples, n_components), dtype=numpy_dtype(X.dtype))
        n_iter = 0
        for start in range(0, n_samples, rows):
            stop = min(start + rows, n_samples)
            X_block = to_tensor(X[start:stop], device=device, dtype=dtype)
            init_block = None
            if init is not None and algorithm not in _GREEDY:
                init_block = to_tensor(init[start:stop], device=device, dtype=dtype)
            block_codes, block_iter = solve(X_block, init_block)
            codes[start:stop] = to_numpy(block_codes)
            n_iter = max(n_iter, block_iter)
    if return_n_iter:
        return codes, n_iter
    return codes


def lasso_intercept(X, dictionary, *, alpha, positive=False, max_iter=1000, tol=1e-4, init=None,
                    device="auto"):  # fmt: skip
    """The intercept ``b`` that, jointly with lasso codes, minimises the objective.

    NumPy front end of :func:`fista_with_intercept` (inputs validated by the caller):
    ``min_{S, b} sum_n 0.5 * ||x_n - s_n D - b||^2 + alpha * ||s_n||_1``.

    Returns
    -------
    intercept : ndarray of shape (n_features,)
        In the dtype of ``X``.
    """
    device = resolve_device(device)
    dtype = torch_dtype(X.dtype)
    with torch.no_grad(), serial_if_small(
        device, 4 * X.shape[0] * dictionary.shape[0] * X.shape[1]
    ):
        _, intercept, _ = fista_with_intercept(
            to_tensor(X, device=device, dtype=dtype),
            to_tensor(dictionary, device=device, dtype=dtype),
            alpha,
            positive=positive,
            max_iter=max_iter,
            tol=tol,
            init=None if init is None else to_tensor(init, device=device, dtype=dtype),
        )
    return to_numpy(intercept)
