"""Greedy pursuits: orthogonal matching pursuit, matching pursuit, gradient pursuit, TopK."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from .._torch_utils import device_rows, serial_if_small
from ._common import MAX_GRAM_COMPONENTS, _normalized_atoms, _residual_threshold
from ._common import GRAM_BLOCK_ELEMENTS, MAX_GRAM_BLOCKS, gram_chunk_rows, greedy_gram_form
from ._common import serial_when_small


def _select_signed(scores, positive, magnitudes=None):
    """Per-row best atom and its (signed) score.

    The largest ``|score|`` (computed into ``magnitudes`` if given), or the largest
    ``score`` when ``positive``.
    """
    index = _argmax_rows(scores if positive else torch.abs(scores, out=magnitudes))
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


def _support_least_squares(gram, rhs, used, positive):
    """Least-squares coefficients of each sample on its selected (used) atoms.

    ``gram`` (n, k, k) holds the Gram matrices of each sample's selected atoms and
    ``rhs`` (n, k) their correlations with the sample. With ``positive``, the atom with
    the most negative coefficient is dropped and the system re-solved, batched over the
    samples that still have one, until no coefficient is negative (an active-set
    heuristic for non-negative least squares on the support).
    """
    mask = used.to(rhs.dtype)
    coef = rhs.new_zeros(rhs.shape)
    rows = torch.arange(len(rhs), device=rhs.device)
    for _ in range(rhs.shape[1] + 1):
        row_mask = mask[rows]
        # Unused slots become identity rows with a zero right-hand side: coefficient 0.
        system = gram[rows] * (row_mask[:, :, None] * row_mask[:, None, :])
        system.diagonal(dim1=1, dim2=2).add_(1.0 - row_mask)
        solution = _solve_spd(system, rhs[rows] * row_mask)
        coef[rows] = solution
        if not positive:
            break
        negative = (solution < 0) & (row_mask > 0)
        again = negative.any(dim=1)
        if not bool(again.any()):
            break
        worst = solution.masked_fill(~negative, 0.0).argmin(dim=1)
        rows = rows[again]
        mask[rows, worst[again]] = 0.0
    coef = coef * mask
    if positive:
        coef.clamp_min_(0.0)
    return coef


@serial_when_small
def omp(X, D, n_nonzero_coefs, *, positive=False, gram=None):
    """Orthogonal matching pursuit (Pati et al. 1993), batched over samples.

    Each iteration selects, for every sample, the atom most correlated with its residual
    (``|r . d| / ||d||``, or the largest positive correlation when ``positive``), then
    projects the residual off the selected atoms (batched Gram-Schmidt, so no system is
    solved inside the loop). The coefficients, the least-squares fit on the selected
    atoms, come from one batched back substitution with the Gram-Schmidt triangle. On
    unit-norm atoms this is scikit-learn's ``algorithm="omp"``.

    When the Gram matrix ``G = D D^T`` pays for itself (``n_components <= 4096`` and
    enough samples, see ``greedy_gram_form``) the correlations are updated through ``G``
    from ``D x`` (Batch-OMP, Rubinstein, Zibulevsky & Elad 2008) and no residual is
    formed; otherwise the residual is kept in signal space. Both give the same codes up
    to rounding. A sample stops once its residual has vanished (every correlation below
    ``100 * eps * ||x||`` in the Gram form, residual norm below that in the other; an
    atom too close to the span of the selected ones is skipped); the loop stops when
    every sample has.

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
    gram : bool or None, default=None
        Update correlations through the Gram matrix (True) or the residual (False);
        None chooses by ``greedy_gram_form``.

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
    atoms, norms = _normalized_atoms(D)
    if gram is None:
        gram = greedy_gram_form(X.shape[0], X.shape[1], D.shape[0], n_nonzero_coefs)
    if not gram:
        return _omp_residual(X, atoms, norms, n_nonzero_coefs, positive)
    return _in_row_chunks(_omp_gram, X, atoms, norms, n_nonzero_coefs, positive)


def _omp_residual(X, atoms, norms, n_nonzero_coefs, positive):
    """OMP with the residual kept in signal space (batched Gram-Schmidt on the atoms)."""
    n_samples, n_features = X.shape
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
    magnitudes = None if positive else X.new_empty((n_samples, atoms.shape[0]))
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
    return _omp_codes(X, atoms, norms, lower, projections, support, used, n_iter, positive)


def _in_row_chunks(solver, X, atoms, norms, n_nonzero_coefs, positive):
    """Run a Gram-form solver on chunks of rows; the iteration count is the maximum.

    The Gram matrix and the correlations ``X D^T``, large products, are formed before
    with every thread, and so are the tables the chunks' correlation updates read
    (:class:`_GramTables`). The chunks, whose operations are too small for a thread
    team, each run on one thread, and on the CPU up to ``torch.get_num_threads()``
    chunks run at once (torch releases the GIL in its kernels). Each chunk writes its
    codes into its rows of the result.
    """
    G = atoms @ atoms.T
    correlations = X @ atoms.T
    tables = _GramTables(G, correlations)
    codes = X.new_zeros(correlations.shape)
    threads = torch.get_num_threads() if X.device.type == "cpu" else 1
    rows = chunk_rows(atoms.shape[0], X.shape[0], X.device, threads=threads,
                      itemsize=X.element_size())  # fmt: skip
    chunks = [slice(start, start + rows) for start in range(0, X.shape[0], rows)]

    def run(chunk):
        return solver(
            X[chunk], correlations[chunk], atoms, norms, G, tables.rows(chunk),
            n_nonzero_coefs, positive, codes[chunk],
        )  # fmt: skip

    workers = min(threads, len(chunks))
    if workers > 1:

        # Inference and grad modes are per thread: the workers take the caller's, else
        # writing the codes of a call made under torch.inference_mode() would raise.
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def serial_run(chunk):
            torch.set_num_threads(1)  # OpenMP's team size is per thread
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return run(chunk)

        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                n_iter = list(pool.map(serial_run, chunks))
        finally:
            torch.set_num_threads(threads)
    else:
        chunk_flops = 2 * min(rows, X.shape[0]) * n_nonzero_coefs * atoms.shape[0]
        with serial_if_small(X.device, chunk_flops):
            n_iter = [run(chunk) for chunk in chunks]
    return codes, max(n_iter)


# On CUDA a chunk of the Gram forms is sized from the device's free memory rather than
# from a CPU cache: each chunk iteration is ~20 kernel launches and a host sync, whatever
# its rows, so the fewer chunks the better. A chunk holds about CUDA_CHUNK_ARRAYS
# (rows, n_components) arrays (scores, magnitudes, correlations, codes, temporaries).
CUDA_CHUNK_ARRAYS = 8


def chunk_rows(n_components, n_samples, device, *, threads=1, itemsize=4, free_bytes=None):
    """Rows per chunk of the Gram-form solvers on ``device``.

    On the CPU, as many rows as keep a chunk's arrays in cache (``gram_chunk_rows``) and
    at least one chunk per thread. On CUDA, as many rows as ``device_rows`` allows
    (``DEVICE_MEMORY_FRACTION`` of ``free_bytes``, default: the device's free memory
    now), never fewer than the CPU figure: usually every row in one chunk.
    """
    cache_rows = gram_chunk_rows(n_components)
    per_row = CUDA_CHUNK_ARRAYS * max(n_components, 1) * itemsize
    memory_rows = device_rows(device, per_row, free_bytes=free_bytes)
    if memory_rows is None:
        return max(1, min(cache_rows, -(-n_samples // max(threads, 1))))
    return max(1, min(n_samples, max(cache_rows, memory_rows)))


class _GramTables:
    """The rows the correlation updates of :class:`_GramCorrelations` sum, for all chunks.

    Row ``j < n_components`` is the Gram row of atom ``j``, row ``n_components + i`` is
    sample ``i``'s ``D x`` (taken with weight 1, so one ``embedding_bag`` call gives
    ``D x - G[:, support] coef``). On the CPU in float64 they are kept in float32 (the
    float32 ``embedding_bag`` kernel is vectorised, the float64 one is not), and there
    they are split into blocks of columns whose Gram part fits in a core's L2 cache
    (``GRAM_BLOCK_ELEMENTS``): the Gram rows are re-read by every sample, and from
    memory a call ran 2.5-4.5 times slower (docs/_defaults_greedy.rst).
    """

    def __init__(self, G, correlations):
        on_cpu = G.device.type == "cpu"
        self.screen = on_cpu and G.dtype == torch.float64
        dtype = torch.float32 if self.screen else G.dtype
        n_components = G.shape[0]
        width = n_components
        if on_cpu:
            width = max(GRAM_BLOCK_ELEMENTS // n_components, 1)
            # Each block is one call per update, with a fixed dispatch cost: few blocks.
            width = max(width, -(-n_components // MAX_GRAM_BLOCKS))
        n_samples = correlations.shape[0]
        self.blocks = []
        for start in range(0, n_components, width):
            columns = slice(start, start + width)
            block = G.new_empty((n_components + n_samples, G[:, columns].shape[1]), dtype=dtype)
            block[:n_components] = G[:, columns]
            block[n_components:] = correlations[:, columns]
            self.blocks.append(block)
        self.n_components, self.n_samples = n_components, n_samples

    def rows(self, chunk):
        """The tables and the table row of each sample of ``chunk`` (a slice of rows)."""
        start, stop, _ = chunk.indices(self.n_samples)
        own_row = torch.arange(start, stop, device=self.blocks[0].device) + self.n_components
        return self, own_row


def _vanished(X):
    """Correlation size below which a sample's residual has vanished (unit atoms).

    ``|r . d| <= ||r||`` for a unit atom, so once every correlation is below
    ``100 * eps * ||x||`` no atom can reduce the residual by more than rounding.
    """
    return 100 * torch.finfo(X.dtype).eps * torch.linalg.vector_norm(X, dim=1)


def _argmax_rows(scores):
    """Per row, the index of the first largest entry.

    torch's CPU ``argmax`` over rows is not vectorised: on (256, 1000) rows it took ten
    times as long as ``amax`` and dominated the Gram forms; numpy's is vectorised.
    """
    if scores.device.type == "cpu":
        return torch.from_numpy(np.argmax(scores.numpy(), axis=1))
    return scores.argmax(dim=1)


class _GramCorrelations:
    """Correlations of unit atoms with the residuals ``x - coef @ atoms[support]``.

    They are ``D x - G[:, support] coef``: one weighted sum of Gram rows per sample
    (``embedding_bag`` over the :class:`_GramTables`, one call per block of columns),
    so neither a per-sample matrix product nor a signal-space vector is formed. When the
    tables are float32 copies of float64 data they only screen the atoms: the float32
    winner is the float64 one when it leads the runner-up by more than twice a bound on
    the float32 error, and rows where it does not (near-ties, vanished residuals) are
    recomputed in float64. The selected atom's correlation is always computed in the
    working precision.
    """

    def __init__(self, X, alpha, G, tables, positive, n_nonzero_coefs):
        self.alpha, self.G, self.positive = alpha, G, positive
        tables, own_row = tables
        self.blocks, self.screen = tables.blocks, tables.screen
        n_samples = alpha.shape[0]
        dtype = self.blocks[0].dtype
        # What the selection ranks, |correlation| (the correlation itself if positive),
        # is all that is kept of the correlations.
        self.scores = alpha.to(dtype, copy=True)
        if not positive:
            self.scores.abs_()
        self.columns = [0]
        for block in self.blocks:
            self.columns.append(self.columns[-1] + block.shape[1])
        # Each sample's own D x row with weight 1, then its support with -coef.
        self.indices = own_row.new_zeros((n_samples, n_nonzero_coefs + 1))
        self.indices[:, 0] = own_row
        self.weights = self.scores.new_ones((n_samples, n_nonzero_coefs + 1))
        if self.screen:
            # With unit atoms (|G| <= 1, |D x| <= ||x||), rounding D x, G and coef to
            # float32 and summing the k + 1 terms errs by at most
            # u (k + 3) (||x|| + ||coef||_1), u = eps / 2.
            self.unit = torch.finfo(dtype).eps  # 2u: a factor 2 of safety
            self.x_norms = torch.linalg.vector_norm(X, dim=1)

    def update(self, support, coef):
        """Recompute the correlations for codes ``coef`` on ``support`` (both (n, k))."""
        k = support.shape[1]
        self.indices[:, 1 : k + 1] = support
        self.weights[:, 1 : k + 1] = coef
        self.weights[:, 1 : k + 1].neg_()
        # Contiguous copies: with strided weights torch leaves its vectorised kernel.
        indices = self.indices[:, : k + 1].contiguous()
        weights = self.weights[:, : k + 1].contiguous()
        for block, start, stop in zip(self.blocks, self.columns, self.columns[1:]):
            values = F.embedding_bag(indices, block, per_sample_weights=weights, mode="sum")
            if len(self.blocks) == 1:
                self.scores = values if self.positive else values.abs_()
            elif self.positive:
                self.scores[:, start:stop] = values
            else:
                torch.abs(values, out=self.scores[:, start:stop])

    def select(self, support, coef, vanished, done):
        """Per row: the best atom (largest ``|c|``, or largest ``c`` if positive), its
        correlation and its Gram entries with the support, ``G[support, index]``.

        Rows in ``done`` (vanished residuals) may get any atom.
        """
        scores = self.scores
        index = _argmax_rows(scores)
        if self.screen:
            best = scores.gather(1, index[:, None])[:, 0]
            scores.scatter_(1, index[:, None], -math.inf)
            second = scores.amax(dim=1)
            size = self.x_norms + coef.abs().sum(1)
            margin = self.unit * (support.shape[1] + 3) * size
            unsure = ((second >= best - 2 * margin) | (best <= vanished + margin)) & ~done
            if bool(unsure.any()):
                rows = torch.nonzero(unsure)[:, 0]
                exact = self.alpha[rows]
                if support.shape[1]:
                    exact = exact - F.embedding_bag(
                        support[rows], self.G, per_sample_weights=coef[rows], mode="sum"
                    )
                index[rows] = _argmax_rows(exact if self.positive else exact.abs())
        value = self.alpha.gather(1, index[:, None])[:, 0]
        cross = torch.take(self.G, support * self.G.shape[0] + index[:, None])
        if support.shape[1]:
            value = value - torch.linalg.vecdot(cross, coef)
        return index, value, cross


def _omp_gram(X, alpha, atoms, norms, G, tables, n_nonzero_coefs, positive, out):
    """Batch-OMP (Rubinstein, Zibulevsky & Elad 2008): correlations through ``G``.

    The same Gram-Schmidt as :func:`_omp_residual`, with each orthonormal basis vector
    kept as its coefficients on the selected atoms (``inverse``, the inverse of the
    Gram-Schmidt triangle): the overlap of a new atom with the basis is ``inverse`` times
    its Gram entries with the support, and the least-squares codes so far are
    ``inverse^T`` times the projections, from which :class:`_GramCorrelations` updates
    the correlations. No signal-space vector is formed after ``D x``.
    """
    n_samples, n_components = alpha.shape
    K = n_nonzero_coefs
    vanished = _vanished(X)
    eps = torch.finfo(X.dtype).eps
    # An atom whose squared distance to the span of the selected ones is below this is
    # skipped (it also catches re-selection once the residual is at rounding level).
    # The squared length comes from 1 - ||overlap||^2, exact only to ~K eps.
    dependent = 1000 * eps
    correlations = _GramCorrelations(X, alpha, G, tables, positive, K)
    inverse = X.new_zeros((n_samples, K, K))
    lower = X.new_zeros((n_samples, K, K))
    projections = X.new_zeros((n_samples, K))
    coef = X.new_zeros((n_samples, K))
    support = torch.zeros((n_samples, K), dtype=torch.long, device=X.device)
    used = torch.zeros((n_samples, K), dtype=torch.bool, device=X.device)
    done = torch.zeros(n_samples, dtype=torch.bool, device=X.device)
    diagonal = torch.diagonal(G)
    n_iter = 0
    for k in range(K):
        index, correlation, cross = correlations.select(
            support[:, :k], coef[:, :k], vanished, done
        )
        active = (correlation if positive else correlation.abs()) > vanished
        done |= ~active  # a vanished residual stays vanished
        if not bool(active.any()):
            break
        n_iter = k + 1
        length_sq = diagonal[index]
        if k:
            earlier = inverse[:, :k, :k]
            overlap = torch.bmm(earlier, cross[:, :, None])[:, :, 0]
            lower[:, k, :k] = overlap
            length_sq = length_sq - torch.linalg.vecdot(overlap, overlap)
        keep = (length_sq > dependent) & active
        length = length_sq.clamp_min(dependent).sqrt_()
        scale = keep / length
        if k:
            # q_k = (d - sum_j overlap_j q_j) / length, in coefficients on the atoms.
            row = torch.bmm(overlap[:, None, :], earlier)[:, 0]
            inverse[:, k, :k] = row * -scale[:, None]
        inverse[:, k, k] = scale
        # The residual is orthogonal to the earlier basis vectors: its projection on the
        # new one is the atom's correlation over the length.
        projection = correlation * scale
        coef[:, : k + 1].addcmul_(inverse[:, k, : k + 1], projection[:, None])
        lower[:, k, k] = torch.where(keep, length, 1.0)
        projections[:, k] = projection
        support[:, k] = index
        used[:, k] = keep
        if k + 1 < K:
            correlations.update(support[:, : k + 1], coef[:, : k + 1])
    _omp_codes(
        X, atoms, norms, lower, projections, support, used, n_iter, positive, out, (G, alpha)
    )
    return n_iter


def _omp_codes(
    X, atoms, norms, lower, projections, support, used, n_iter, positive, out=None, gram=None
):
    """Least squares on the selected atoms from the Gram-Schmidt triangle (then NNLS).

    The codes are added to ``out`` (zeros) if given. ``gram``, the Gram matrix of the
    unit atoms and the correlations ``X D^T`` if known, gives the non-negative refit its
    systems without touching the atoms.
    """
    codes = X.new_zeros((X.shape[0], atoms.shape[0])) if out is None else out
    if n_iter:
        support, used = support[:, :n_iter], used[:, :n_iter]
        # lower^T @ coef = basis @ x, one batched back substitution.
        coef = torch.linalg.solve_triangular(
            lower[:, :n_iter, :n_iter].mT, projections[:, :n_iter, None], upper=True
        )[:, :, 0]
        if positive:
            # Only the rows with a negative coefficient need the non-negative refit.
            rows = torch.nonzero((coef < 0).any(dim=1))[:, 0]
            if len(rows):
                selected = support[rows]
                if gram is None:
                    vectors = atoms[selected]  # (rows, k, M)
                    system = torch.bmm(vectors, vectors.mT)
                    rhs = torch.bmm(vectors, X[rows][:, :, None])[:, :, 0]
                else:
                    G, alpha = gram
                    system = torch.take(G, selected[:, :, None] * len(G) + selected[:, None, :])
                    rhs = alpha[rows].gather(1, selected)
                coef[rows] = _support_least_squares(system, rhs, used[rows], positive)
        codes.scatter_add_(1, support, coef / norms[support])
    return codes, n_iter


@serial_when_small
def matching_pursuit(
    X, D, n_nonzero_coefs, *, positive=False, tol=None, stop_on_repeat=False, normalize=True
):
    """Matching pursuit (Mallat & Zhang 1993), batched over samples.

    Each of the K iterations adds, for every sample, the projection of the residual on
    its most correlated atom (``|r . d| / ||d||``; the largest positive correlation when
    ``positive``, adding nothing once none is positive), without re-fitting earlier
    coefficients. An atom can be chosen again, so there are at most K non-zeros. The
    residual norm never increases. Correlations are updated from rows of the Gram matrix
    when ``n_components <= 4096``, else recomputed from the residual.

    ``tol``, ``stop_on_repeat`` and ``normalize=False`` give the stopping rules and the
    steps of SAELens's matching-pursuit SAE (``saes/matching_pursuit_sae.py``): K is
    then a cap on the iterations, a sample stops *after* the step in which its residual
    norm fell below ``tol`` or its support (the set of non-zero codes) did not change,
    and the residual is kept and correlated with every atom at each iteration (no Gram
    updates), so the norm compared with ``tol`` is the residual's own.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Signals.
    D : Tensor of shape (n_components, n_features)
        Dictionary, same device and dtype as ``X``.
    n_nonzero_coefs : int
        K, the number of iterations (their maximum with ``tol`` or ``stop_on_repeat``).
    positive : bool, default=False
        Non-negative codes.
    tol : float or None, default=None
        Residual-norm tolerance: a sample stops once ``||x - s @ D|| < tol`` (checked
        after each step, so every sample takes at least one; 0 never stops). None: no
        such stop.
    stop_on_repeat : bool, default=False
        Stop a sample once a step leaves its support unchanged: the selected atom was
        already in it, or the step added nothing (that step's value is kept).
    normalize : bool, default=True
        True: rank atoms by ``|r . d| / ||d||`` and take projections (``r . d /
        ||d||^2`` times ``d``). False: use the atoms as they are, as SAELens does: ``r .
        d`` ranks them and is the code added, and the residual loses ``(r . d) d``.
        Both are the same on unit-norm atoms.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
        The codes.
    n_iter : int
        Iterations run (fewer than K when every residual vanished, or every sample
        stopped).

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._solvers import matching_pursuit
    >>> D = torch.eye(3, dtype=torch.float64)
    >>> matching_pursuit(torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float64), D, 2)[0]
    tensor([[ 0., -2.,  1.]], dtype=torch.float64)
    >>> X = torch.tensor([[0.5, 2.0, 1.0]], dtype=torch.float64)
    >>> matching_pursuit(X, D, 3, positive=True, tol=0.6)  # ||(0.5, 0, 0)|| < 0.6
    (tensor([[0., 2., 1.]], dtype=torch.float64), 2)
    """
    if tol is not None or stop_on_repeat or not normalize:
        return _matching_pursuit_stopping(
            X, D, n_nonzero_coefs, positive, tol, stop_on_repeat, normalize
        )
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


def _matching_pursuit_stopping(X, D, n_nonzero_coefs, positive, tol, stop_on_repeat, normalize):
    """:func:`matching_pursuit` with per-sample stops (``tol``, ``stop_on_repeat``) or the
    atoms as they are (``normalize=False``), the residual kept in signal space.

    The order of operations is that of SAELens's ``_encode_matching_pursuit``: select on
    the residual's correlations, take the step from the residual and the selected atom,
    update, then decide which samples stop. A sample that has stopped takes zero steps.
    """
    atoms, norms = _normalized_atoms(D) if normalize else (D, None)
    residual = X.clone()
    codes = X.new_zeros((X.shape[0], atoms.shape[0]))  # coefficients on ``atoms``
    done = torch.zeros(X.shape[0], dtype=torch.bool, device=X.device)
    n_iter = 0
    for k in range(n_nonzero_coefs):
        n_iter = k + 1
        # Correlations from the residual itself, as SAELens: Gram updates drift by
        # rounding relative to ||x||, which matters once the residual is small.
        _, index = _select_signed(residual @ atoms.T, positive)
        selected = torch.index_select(atoms, 0, index)
        step = torch.linalg.vecdot(residual, selected)
        if positive:
            step.clamp_min_(0.0)
        step.masked_fill_(done, 0.0)
        before = codes.gather(1, index[:, None])[:, 0]
        codes.scatter_add_(1, index[:, None], step[:, None])
        residual.addcmul_(selected, step[:, None], value=-1.0)
        if stop_on_repeat:
            # Only the selected entry changed: the support is the same when that entry
            # is non-zero after the step exactly when it was before.
            done |= (before != 0) == (before + step != 0)
        if tol is not None:
            done |= torch.linalg.vector_norm(residual, dim=1) < tol
        if bool(done.all()):
            break
    if normalize:
        codes /= norms
    return codes, n_iter


@serial_when_small
def gradient_pursuit(X, D, n_nonzero_coefs, *, positive=False, gram=None):
    """Gradient pursuit (Blumensath & Davies 2008), batched over samples.

    Each of the K iterations adds the atom most correlated with the residual to the
    support (as matching pursuit), then moves the coefficients of the whole support along
    the gradient restricted to it, ``g = (D_S r)``, with the exact line-search step
    ``||g||^2 / ||g D_S||^2``. With ``positive``, coordinates at zero with a negative
    gradient are frozen and the step is capped so no coefficient becomes negative. The
    residual norm never increases; the codes have at most K non-zeros. Atoms are
    normalised internally (the pursuit runs on unit atoms). As in :func:`omp`, the
    correlations are updated through the Gram matrix when it pays for itself, else
    recomputed from the residual.

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
    gram : bool or None, default=None
        Update correlations through the Gram matrix (True) or the residual (False);
        None chooses by ``greedy_gram_form``.

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
    atoms, norms = _normalized_atoms(D)
    if gram is None:
        gram = greedy_gram_form(X.shape[0], X.shape[1], D.shape[0], n_nonzero_coefs)
    if not gram:
        return _gradient_pursuit_residual(X, atoms, norms, n_nonzero_coefs, positive)
    return _in_row_chunks(_gradient_pursuit_gram, X, atoms, norms, n_nonzero_coefs, positive)


def _gradient_pursuit_residual(X, atoms, norms, n_nonzero_coefs, positive):
    """Gradient pursuit with the residual kept in signal space."""
    n_samples, n_features = X.shape
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
    codes = X.new_zeros((n_samples, atoms.shape[0]))
    if n_iter:
        support = support[:, :n_iter]
        codes.scatter_add_(1, support, coef[:, :n_iter] * slots[:, :n_iter] / norms[support])
    return codes, n_iter


def _gradient_pursuit_gram(X, alpha, atoms, norms, G, tables, n_nonzero_coefs, positive, out):
    """Gradient pursuit with correlations through the Gram matrix.

    The gradient on the support is the correlations there, ``D_S x - G_SS coef``; the
    exact line search needs ``g^T G_SS g``; the correlations with every atom come from
    :class:`_GramCorrelations`. No signal-space vector is formed after ``D x``.
    """
    n_samples, n_components = alpha.shape
    K = n_nonzero_coefs
    vanished = _vanished(X)
    correlations = _GramCorrelations(X, alpha, G, tables, positive, K)
    support = torch.zeros((n_samples, K), dtype=torch.long, device=X.device)
    slots = X.new_zeros((n_samples, K))  # 1 where a slot holds a new atom
    support_gram = X.new_zeros((n_samples, K, K))
    coef = X.new_zeros((n_samples, K))
    done = torch.zeros(n_samples, dtype=torch.bool, device=X.device)
    diagonal = torch.diagonal(G)
    tiny = torch.finfo(X.dtype).tiny
    n_iter = 0
    for k in range(K):
        index, best, cross = correlations.select(support[:, :k], coef[:, :k], vanished, done)
        active = (best if positive else best.abs()) > vanished
        done |= ~active
        if not bool(active.any()):
            break
        n_iter = k + 1
        # A re-selected atom does not take a new slot (the support is a set).
        taken = ((support[:, :k] == index[:, None]) & (slots[:, :k] > 0)).any(dim=1)
        new = ~taken & active
        support[:, k] = index
        slots[:, k] = new
        support_gram[:, k, :k] = cross
        support_gram[:, :k, k] = cross
        support_gram[:, k, k] = diagonal[index]
        system = support_gram[:, : k + 1, : k + 1]
        fitted = torch.bmm(system, coef[:, : k + 1, None])[:, :, 0]
        gradient = (alpha.gather(1, support[:, : k + 1]) - fitted) * slots[:, : k + 1]
        if positive:
            gradient = gradient.masked_fill_((coef[:, : k + 1] <= 0) & (gradient < 0), 0.0)
        # r . (g D_S) = ||g||^2, so the exact line search is ||g||^2 / (g^T G_SS g).
        descent = torch.linalg.vecdot(gradient, gradient)
        curved = torch.bmm(system, gradient[:, :, None])[:, :, 0]
        curvature = torch.linalg.vecdot(gradient, curved).clamp_min_(tiny)
        step = descent / curvature
        if positive:
            limit = torch.where(gradient < 0, -coef[:, : k + 1] / gradient, math.inf)
            step = torch.minimum(step, limit.amin(dim=1))
        step = step * active
        coef[:, : k + 1].addcmul_(gradient, step[:, None])
        if k + 1 < K:
            correlations.update(support[:, : k + 1], coef[:, : k + 1])
    if n_iter:
        support = support[:, :n_iter]
        out.scatter_add_(1, support, coef[:, :n_iter] * slots[:, :n_iter] / norms[support])
    return n_iter


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
