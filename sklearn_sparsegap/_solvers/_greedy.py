"""Greedy pursuits: orthogonal matching pursuit, matching pursuit, gradient pursuit, TopK."""

import math

import torch

from ._common import MAX_GRAM_COMPONENTS, _normalized_atoms, _residual_threshold
from ._common import serial_when_small


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


@serial_when_small
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


@serial_when_small
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
    use_gram = D.shape[0] <= MAX_GRAM_COMPONENTS
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


@serial_when_small
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
