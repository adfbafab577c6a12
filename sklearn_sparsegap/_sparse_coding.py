"""Iterative sparse coding: dictionary learning by alternating minimisation.

The numeric work is :func:`_alternating_dictionary_learning` (full batch) and
:func:`_online_dictionary_learning` (minibatches, on the library's training loop, with
checkpoints); tensors in, tensors out. :class:`GradientSparseCoder` validates, converts
once and stores the results.
"""

import contextlib
import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._base import BaseSparseEstimator, checkpoint_config
from ._batches import DiskBatches, TensorBatches, is_streamed
from ._compat import Interval, StrOptions, _fit_context
from ._solvers import ALGORITHMS, GREEDY_ALGORITHMS, default_n_nonzero_coefs, fista, ista
from ._solvers._sparse_encode import check_n_nonzero_coefs, encode_tensor
from ._torch_utils import make_generator, serial_if_small, to_numpy, to_tensor, torch_dtype
from ._training import (
    DEAD_WINDOW_ROWS,
    HISTORY_KEYS,
    Checkpoint,
    CountFlops,
    DeadLatents,
    LogHistory,
    ProgressBar,
    WarnIfLong,
    batch_statistics,
    history_arrays,
    make_adam,
    renormalize_atoms,
    train,
)
from ._validation import check_dictionary
from .flops import sparse_coding_training_flops, sparse_encode_flops

# Inner solver iterations per outer iteration: the codes are warm-started and the
# dictionary moves between outer iterations anyway, so solving them exactly is wasted.
_INNER_MAX_ITER = 20
_INNER_TOL = 1e-4
# An atom whose codes have squared norm below this is unused and gets resampled.
_UNUSED_ATOM_TOL = 1e-10
# The paper's exp-parametrised codes start at exp(-10).
_ADAM_LOG_INIT = -10.0
# The alternation starts with _OVERCOMPLETE times ``n_components`` atoms and drops the
# least used ones, in equal steps, from outer iteration _PRUNE_START until _PRUNE_END, so
# spare atoms cover every direction before the fit must choose between them (see
# :ref:`defaults`).
_OVERCOMPLETE = 2
_PRUNE_START = 20
_PRUNE_END = 52
# ``transform_alpha=None`` with a learned dictionary: alpha / _TRANSFORM_ALPHA_DIVISOR.
_TRANSFORM_ALPHA_DIVISOR = 10


@torch.no_grad()
def _update_dictionary(X, codes, components, generator):
    """One block-coordinate sweep over the atoms, in place (cf. scikit-learn's
    ``_update_dict``).

    With the codes fixed, the unit-norm atom minimising the objective is the normalised
    direction ``R_k^T s_k`` of the residual ``R_k = X - S D + s_k d_k`` that excludes
    atom ``k``, so every sweep lowers the objective. The sweep works on the Gram
    matrices ``S^T S`` and ``S^T X``: ``R_k^T s_k = (S^T X)_k - (S^T S)_k D +
    (S^T S)_{kk} d_k``, a few operations on ``(n_components, n_features)`` arrays per
    atom however many samples there are. Unused atoms are pointed at the residual of a
    sample drawn with probability proportional to its squared reconstruction error.

    Returns
    -------
    n_unused : int
        Number of atoms resampled.
    """
    return _sweep_atoms(codes.T @ codes, codes.T @ X, components, X, codes, generator)


@torch.no_grad()
def _sweep_atoms(gram, correlations, components, X, codes, generator):
    """The sweep of :func:`_update_dictionary` from the statistics ``gram = S^T S`` and
    ``correlations = S^T X`` (of the data, or running averages over minibatches);
    unused atoms are resampled from the samples ``X`` with codes ``codes``."""
    usage = gram.diagonal()
    unused = set(torch.nonzero(usage < _UNUSED_ATOM_TOL)[:, 0].tolist())
    # One thread: each atom's few (n_components, n_features) operations are too small
    # for a thread team, whose wake-ups made the sweep 10-30x slower on a busy machine.
    with serial_if_small(components.device, 2 * components.numel()):
        _sweep_atoms_serial(gram, correlations, components, X, codes, generator, unused)
    return len(unused)


def _sweep_atoms_serial(gram, correlations, components, X, codes, generator, unused):
    """The atom loop of :func:`_sweep_atoms` (``unused``: the atoms to resample)."""
    # R_k^T s_k = (S^T X)_k - sum_{j != k} (S^T S)_kj d_j: one product per atom with
    # the Gram rows' diagonal zeroed (a sweep is about 7 operations per atom).
    off_diagonal = gram.clone()
    off_diagonal.diagonal().zero_()
    errors = None
    for atom in range(components.shape[0]):
        if atom in unused:
            # The samples' errors once per sweep, not once per unused atom: an unused
            # atom has no codes, so resampling one leaves them as they were, and one
            # (samples x atoms x features) product per unused atom made a minibatch
            # sweep of 2,304 atoms with ~1,000 unused take ~50 s (SmolLM2, k = 32).
            if errors is None:
                errors = (X - codes @ components).square().sum(dim=1).cpu()
            sample = int(torch.multinomial(errors + 1e-30, 1, generator=generator))
            direction = X[sample] - codes[sample] @ components
            components[atom] = direction / direction.norm().clamp_min(1e-12)
            continue
        direction = torch.addmv(correlations[atom], components.T, off_diagonal[atom], alpha=-1.0)
        norm = torch.linalg.vector_norm(direction)
        # A zero direction (the other atoms explain the residual) keeps the atom.
        components[atom] = torch.where(
            norm > 1e-12, direction.div_(norm.clamp_min(1e-12)), components[atom]
        )


def _sweep_flops(n_samples, n_features, n_components):
    """FLOPs of :func:`_update_dictionary`: the two Gram products, then per atom one
    ``(n_components, n_features)`` product."""
    return 2 * n_samples * n_components * (n_components + n_features) + (
        2 * n_components * n_components * n_features
    )


def _initial_dictionary(X, n_components, generator):
    """Unit-norm atoms from randomly chosen samples (Gaussian where a chosen sample is
    zero, or when there are fewer samples than atoms).

    Data-initialised atoms start inside the signal cone, where the alternation reaches
    the true dictionary in fewer outer iterations than from Gaussian atoms.
    """
    atoms = torch.randn(n_components, X.shape[1], generator=generator, dtype=X.dtype)
    atoms = atoms.to(X.device)
    n_drawn = min(n_components, X.shape[0])
    rows = torch.randperm(X.shape[0], generator=generator)[:n_drawn].to(X.device)
    drawn = X[rows]
    nonzero = drawn.norm(dim=1) > 0
    atoms[:n_drawn][nonzero] = drawn[nonzero]
    renormalize_atoms(atoms)
    return atoms


def _n_atoms_after(step, n_start, n_components, max_iter):
    """Atoms kept after outer iteration ``step`` of the pruning schedule: all of them
    until ``_PRUNE_START``, ``n_components`` from ``_PRUNE_END`` on (both pulled in when
    ``max_iter`` is smaller), linear in between."""
    end = min(_PRUNE_END, max_iter)
    start = min(_PRUNE_START, end - 1)
    if step <= start:
        return n_start
    if step >= end:
        return n_components
    extra = n_start - n_components
    return n_components + int(np.ceil(extra * (end - step) / (end - start)))


def _infer_codes(X, components, alpha, *, algorithm, n_nonzero_coefs, positive, init):
    """The inference step of one outer iteration: codes and iterations run."""
    if algorithm in ("fista", "ista"):
        solver = fista if algorithm == "fista" else ista
        return solver(
            X, components, alpha, positive=positive, max_iter=_INNER_MAX_ITER,
            tol=_INNER_TOL, init=init,
        )  # fmt: skip
    n_nonzero = None
    if algorithm in GREEDY_ALGORITHMS:
        n_nonzero = min(n_nonzero_coefs, components.shape[0])
    return encode_tensor(
        X, components, algorithm=algorithm, alpha=alpha, n_nonzero_coefs=n_nonzero,
        positive=positive, max_iter=_INNER_MAX_ITER, tol=_INNER_TOL,
    )  # fmt: skip


def _log_iteration(history, step, X, codes, components, alpha, flops):
    """Append one outer iteration to ``history`` (keys ``HISTORY_KEYS``); return the
    objective. One host synchronisation per call."""
    residual = X - codes @ components
    loss = 0.5 * residual.square().sum(dim=1).mean() + alpha * codes.abs().sum(dim=1).mean()
    dead = 1.0 - (codes != 0).any(dim=0).to(X.dtype).mean()
    values = torch.cat([batch_statistics(loss, residual, codes), dead[None]]).tolist()
    for key, entry in zip(HISTORY_KEYS, (step, *values, flops)):
        history[key].append(entry)
    return values[0]


def _report_objective(progress, value, description, when):
    """Advance the progress bar with the objective; a non-finite one stops the fit."""
    if not np.isfinite(value):
        raise ValueError(
            f"{description} diverged {when} (objective {value}); "
            "check that X is finite and well scaled."
        )
    progress.update(1)
    progress.set_postfix(objective=f"{value:.4g}", refresh=False)


@torch.no_grad()
def _alternating_dictionary_learning(
    X,
    init_dictionary,
    alpha,
    *,
    n_components,
    algorithm="fista",
    n_nonzero_coefs=None,
    positive=True,
    max_iter=300,
    tol=1e-6,
    generator=None,
    verbose=0,
    description="dictionary learning",
):
    """Learn a dictionary by alternating code inference and dictionary sweeps.

    Minimises ``0.5 * ||x - s @ D||^2 + alpha * ||s||_1`` (averaged over samples) over the
    codes and a dictionary with unit-norm atoms. Each outer iteration infers the codes of
    every sample with ``algorithm`` (warm-started ``"fista"``/``"ista"``, at most
    ``_INNER_MAX_ITER`` iterations; or one greedy encode) and updates the dictionary by
    one block-coordinate sweep (:func:`_update_dictionary`). ``init_dictionary`` may have
    more rows than ``n_components``: the least used atoms are then dropped in equal steps
    between outer iterations ``_PRUNE_START`` and ``_PRUNE_END``. After every sweep the
    dictionary is extrapolated, ``D + beta_t (D - D_prev)`` renormalised, with Nesterov's
    ``beta_t``, restarted whenever the objective went up (so the logged loss is not
    monotone).

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Training data. Not modified.
    init_dictionary : Tensor of shape (n_start, n_features)
        Unit-norm initial atoms, ``n_start >= n_components``. Not modified.
    alpha : float
        L1 penalty.
    n_components : int
        Atoms left at the end.
    algorithm : str, default="fista"
        Inference algorithm (any of ``ALGORITHMS`` but ``"adam"``).
    n_nonzero_coefs : int or None, default=None
        K of the greedy algorithms (capped by the current number of atoms); None means
        :func:`default_n_nonzero_coefs` of the final shape.
    positive : bool, default=True
        Non-negative codes.
    max_iter : int, default=300
        Maximum outer iterations.
    tol : float, default=1e-6
        Stop when, with ``n_components`` atoms left, one outer iteration lowered the
        objective by less than ``tol`` times its previous value.
    generator : torch.Generator or None, default=None
        Draws the samples that replace unused atoms.
    verbose : int, default=0
        Show a tqdm progress bar with the objective.
    description : str, default="dictionary learning"
        Progress-bar label and subject of the divergence error.

    Returns
    -------
    dictionary : Tensor of shape (n_components, n_features)
        The learned atoms.
    codes : Tensor of shape (n_samples, n_components)
        The codes of the last inference step.
    n_iter : int
        Outer iterations run.
    history : dict of lists
        One entry per outer iteration under each of ``HISTORY_KEYS`` (``flops``
        cumulative).
    flops : int
        FLOPs of the inference iterations actually run and of the sweeps.

    Raises
    ------
    ValueError
        If the objective becomes non-finite.
    """
    n_samples, n_features = X.shape
    components = init_dictionary.clone()
    n_start = components.shape[0]
    if n_nonzero_coefs is None:
        n_nonzero_coefs = default_n_nonzero_coefs(n_features, n_components)
    history = {key: [] for key in HISTORY_KEYS}
    codes = None
    previous = np.inf
    flops = 0
    step = 0
    # Nesterov's momentum sequence for the dictionary extrapolation.
    momentum_t = 1.0
    components_before = components.clone()
    progress = tqdm(total=max_iter, desc=description, disable=not verbose, leave=False)
    # An inference iteration is a product of the codes with an (n_start, n_start) or
    # (n_start, n_features) matrix; below the threshold one thread is faster.
    iteration_flops = 2 * n_samples * n_start * min(n_start, n_features)
    with serial_if_small(X.device, iteration_flops), contextlib.closing(progress):
        for _ in range(max_iter):
            n_atoms = components.shape[0]
            codes, n_iter = _infer_codes(
                X, components, alpha, algorithm=algorithm, n_nonzero_coefs=n_nonzero_coefs,
                positive=positive, init=codes,
            )  # fmt: skip
            flops += sparse_encode_flops(
                algorithm, n_features, n_atoms, n_samples, n_iter=max(n_iter, 1),
                n_nonzero_coefs=min(n_nonzero_coefs, n_atoms),
            )  # fmt: skip
            _update_dictionary(X, codes, components, generator)
            flops += _sweep_flops(n_samples, n_features, n_atoms)
            step += 1
            value = _log_iteration(history, step, X, codes, components, alpha, flops)
            _report_objective(progress, value, description, f"at iteration {step}")

            n_keep = _n_atoms_after(step, n_start, n_components, max_iter)
            if n_keep < n_atoms:
                # Drop the least used atoms; tol is judged on the final atom count.
                usage = codes.square().sum(dim=0)
                keep = torch.argsort(usage, descending=True)[:n_keep].sort().values
                components, codes = components[keep].contiguous(), codes[:, keep]
                components_before = components.clone()
                previous = np.inf
                continue
            converged = 0 <= previous - value < tol * abs(previous)
            if n_atoms == n_components and converged:
                break
            # Extrapolate the dictionary; restart the momentum when the objective went up.
            if value > previous:
                momentum_t, beta = 1.0, 0.0
            else:
                next_t = (1.0 + np.sqrt(1.0 + 4.0 * momentum_t**2)) / 2.0
                momentum_t, beta = next_t, (momentum_t - 1.0) / next_t
            current = components.clone()
            if beta:
                components.add_(components - components_before, alpha=beta)
                renormalize_atoms(components)
            components_before = current
            previous = value
    return components, codes, step, history, flops


# Rows of the bounded sample a minibatch fit initialises its atoms from.
_MINIBATCH_SAMPLE_ROWS = 2**14
# Minibatch alternation: the dictionary statistics average the last this many rows'
# worth of batches (older batches were coded with an older dictionary). On SmolLM2
# layer-15 activations (576 atoms, batches of 1024, OMP k=32, held-out FVU) 2**13 reached
# in 3 epochs the FVU that 2**16 reached in 6 (0.1826 against 0.1829); 2**12 did as well,
# 2**11 was much worse (0.194 after 2 epochs); the paper's task was unchanged.
_ONLINE_MEMORY_ROWS = 2**13


class _OnlineDictionaryUpdate:
    """The dictionary step of minibatch alternation, shaped as a torch optimiser so that
    the one training loop (:func:`~sklearn_sparsegap._training.train`) runs it.

    ``observe(batch, codes)`` hands it a minibatch and its codes; ``step()`` then updates
    the running averages ``A = mean s s^T`` and ``B = mean s^T x`` over the last
    ``memory_rows`` rows' worth of batches (older batches were coded with an older
    dictionary) and gives the atoms one block-coordinate sweep on ``(A, B)``
    (:func:`_sweep_atoms`, unused atoms resampled from the batch with ``generator``).
    ``state_dict`` holds the averages and the generator, so a checkpoint resumes it
    exactly.
    """

    def __init__(self, components, *, batch_size, memory_rows, generator):
        n_components, n_features = components.shape
        self.components = components
        self.param_groups = [{"params": [components]}]  # where train() finds the device
        options = dict(dtype=components.dtype, device=components.device)
        self.gram = torch.zeros(n_components, n_components, **options)
        self.correlations = torch.zeros(n_components, n_features, **options)
        self.memory = max(1, memory_rows // batch_size)
        self.generator = generator
        self.n_updates = 0
        self._observed = None

    def observe(self, batch, codes):
        self._observed = batch, codes

    @torch.no_grad()
    def step(self):
        batch, codes = self._observed
        self._observed = None
        self.n_updates += 1
        weight = 1.0 / min(self.n_updates, self.memory)
        rows = batch.shape[0]
        self.gram.mul_(1.0 - weight).add_(codes.T @ codes, alpha=weight / rows)
        self.correlations.mul_(1.0 - weight).add_(codes.T @ batch, alpha=weight / rows)
        _sweep_atoms(self.gram, self.correlations, self.components, batch, codes,
                     self.generator)  # fmt: skip

    def state_dict(self):
        return {"gram": self.gram.clone(), "correlations": self.correlations.clone(),
                "n_updates": self.n_updates, "generator": self.generator.get_state()}

    def load_state_dict(self, state_dict):
        self.gram.copy_(state_dict["gram"])
        self.correlations.copy_(state_dict["correlations"])
        self.n_updates = state_dict["n_updates"]
        self.generator.set_state(state_dict["generator"])


@torch.no_grad()
def _online_dictionary_learning(
    source,
    components,
    alpha,
    *,
    algorithm="fista",
    n_nonzero_coefs=None,
    positive=True,
    n_epochs=1,
    batch_size=1024,
    tol=0.0,
    generator=None,
    checkpoint=None,
    verbose=0,
    description="dictionary learning",
):
    """Learn a dictionary by minibatch alternation (online dictionary learning,
    Mairal et al. 2010), with the library's training loop.

    Each step infers the codes of one minibatch of ``source`` (a batch source of
    ``_batches``, rows only) with ``algorithm`` on the current dictionary (from zero, at
    most ``_INNER_MAX_ITER`` iterations, or one greedy encode), then updates the
    dictionary (:class:`_OnlineDictionaryUpdate`). Memory is
    ``O(n_components * (n_components + n_features))`` plus one batch, whatever the
    number of samples.

    Parameters
    ----------
    source : TensorBatches or DiskBatches
        The training rows.
    components : Tensor of shape (n_components, n_features)
        Unit-norm initial atoms; updated in place and returned.
    alpha : float
        L1 penalty of the inference (and of the logged objective).
    algorithm, n_nonzero_coefs, positive
        As in :func:`_alternating_dictionary_learning`.
    n_epochs : int
        Passes over the data at most.
    batch_size : int
        Rows per minibatch.
    tol : float
        Stop when the lowest epoch-mean objective improved by less than ``tol`` times
        it over the last ``TOL_WINDOW_STEPS`` steps, rounded up to whole epochs (the
        autoencoders' rule; 0: run every epoch).
    generator : torch.Generator
        Draws the minibatch order; the resampled atoms are drawn from a generator
        seeded from it.
    checkpoint : Checkpoint or None
        Saves the fit as it goes; when its file exists, the fit resumes from it and
        ends with the dictionary an uninterrupted fit gives.

    Returns
    -------
    dictionary : Tensor of shape (n_components, n_features)
    n_epochs : int
        Epochs run.
    history : dict of lists
        One entry per epoch (statistics averaged over its batches, measured before each
        batch's dictionary update; ``dead_fraction`` the latents not used on the last
        ``min(n_samples, DEAD_WINDOW_ROWS)`` rows, as the autoencoders count them).
    flops : int
    """
    n_components, n_features = components.shape
    # Its own generator: a checkpoint taken mid-epoch replays the batch order from the
    # epoch's start, which must not replay the resampling draws as well.
    resampling = torch.Generator(device="cpu")
    resampling.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    update = _OnlineDictionaryUpdate(components, batch_size=batch_size,
                                     memory_rows=_ONLINE_MEMORY_ROWS, generator=resampling)
    model = torch.nn.Module()
    model.register_buffer("components", components)  # the same tensor, restored in place
    n_iter = [1]

    def infer_codes(batch, with_stats):
        codes, n_iter[0] = _infer_codes(
            batch, components, alpha, algorithm=algorithm,
            n_nonzero_coefs=n_nonzero_coefs, positive=positive, init=None,
        )  # fmt: skip
        update.observe(batch, codes)
        if not with_stats:
            return codes, None
        residual = batch - codes @ components
        loss = (0.5 * residual.square().sum(dim=1).mean()
                + alpha * codes.abs().sum(dim=1).mean())
        return codes, batch_statistics(loss, residual, codes)

    def step_flops(rows):
        return sparse_encode_flops(
            algorithm, n_features, n_components, rows, n_iter=max(n_iter[0], 1),
            n_nonzero_coefs=n_nonzero_coefs,
        ) + _sweep_flops(rows, n_features, n_components)  # fmt: skip

    history = {key: [] for key in HISTORY_KEYS}
    dead = DeadLatents(n_components, min(source.n_samples, DEAD_WINDOW_ROWS), components.device)
    callbacks = [
        CountFlops(step_flops),
        dead,
        LogHistory(history, tol=tol, description=description, dead=dead,
                   advice="check that X is finite and well scaled"),
        WarnIfLong(description, "Set max_iter (epochs) lower, or fit on a subset of X, "
                                "to shorten it."),
        ProgressBar(description, disable=not verbose),
    ]  # fmt: skip
    resume_from = None
    if checkpoint is not None:
        callbacks.append(checkpoint)
        resume_from = checkpoint.resume_path
    iteration_flops = 2 * batch_size * n_components * min(n_components, n_features)
    with serial_if_small(components.device, iteration_flops):
        state = train(
            infer_codes, source, optimizer=update, n_epochs=n_epochs, batch_size=batch_size,
            generator=generator, model=model, callbacks=callbacks, resume_from=resume_from,
        )  # fmt: skip
    return components, state.epoch, history, state.flops


def _last_dead_fraction(history):
    """``dead_fraction_``: the last logged dead fraction (0.0 without a log)."""
    values = history["dead_fraction"]
    return float(values[-1]) if len(values) else 0.0


class GradientSparseCoder(BaseSparseEstimator):
    """Sparse coding: dictionary learning by alternating minimisation, iterative inference.

    Minimises the library objective ``0.5 * ||x - s @ D||^2 + alpha * ||s||_1`` (per
    sample, averaged) over both the codes and a dictionary with unit-norm atoms. Each
    outer iteration infers the codes of all training samples with ``fit_algorithm``
    (warm-started, batched on the torch device) and updates the dictionary by one
    block-coordinate sweep over the atoms; atoms that fall unused are resampled from the
    worst-reconstructed samples. ``transform`` infers codes for new data with
    ``transform_algorithm`` (at ``transform_alpha``), so there is no amortisation gap,
    only the cost of iterations.

    Two measures keep the alternation out of the local optima where one true atom is
    missed and make it converge in fewer iterations (see the Notes).

    ``fit_algorithm="adam"`` instead reproduces the paper's sparse coding: one
    exp-parametrised code matrix and the dictionary trained jointly with Adam (the
    library's training loop), and Adam inference at ``transform``.

    Parameters
    ----------
    n_components : int, default=None
        Number of atoms; None means ``n_features`` (or the rows of ``dictionary``).
    alpha : float, default=0.03
        L1 penalty of the objective minimised by ``fit``. The default is chosen on the
        paper's task; see :ref:`defaults`.
    transform_alpha : float, default=None
        L1 penalty of the inference in ``transform``. None means ``alpha / 10`` when the
        dictionary is learned by the alternating algorithms (less shrinkage recovers the
        codes better on a learned dictionary, at the price of more active latents), and
        ``alpha`` itself with a given ``dictionary`` or ``fit_algorithm="adam"`` (the
        paper's procedure). Set it to ``alpha`` or above when sparsity matters more than
        recovery. The value used is ``transform_alpha_``.
    dictionary : array-like of shape (n_components, n_features), default=None
        A known dictionary: ``fit`` only stores it (``components_`` equals it) and
        ``transform`` is pure sparse inference.
    fit_algorithm : {"fista", "ista", "omp", "mp", "gradient_pursuit", "topk", "adam"}, \
            default="fista"
        Algorithm of the codes during fitting (see :func:`sparse_encode`); greedy
        algorithms keep ``transform_n_nonzero_coefs`` atoms per sample. ``"adam"`` is the
        paper's procedure: codes and dictionary trained jointly by Adam.
    transform_algorithm : {"fista", "ista", "omp", "mp", "gradient_pursuit", "topk", \
            "adam"} or None, default=None
        Algorithm of :meth:`transform` (any :func:`sparse_encode` algorithm). None means
        ``fit_algorithm``; the value used is ``transform_algorithm_``.
    transform_n_nonzero_coefs : int, default=None
        Atoms per sample (K) of the greedy algorithms, in ``fit`` and ``transform``; None
        uses ``max(1, n_features // 10)`` capped by ``n_components``. It must not exceed
        ``n_components``, nor ``n_features`` for ``"omp"`` and ``"gradient_pursuit"``.
    positive_code : bool, default=True
        Constrain the codes to be non-negative (the paper's codes are).
    max_iter : int, default=300
        What one iteration is depends on ``fit_algorithm``:

        - ``"fista"``, ``"ista"`` and the greedy algorithms: the maximum number of outer
          iterations, each one inference of the codes of every training sample (at most
          20 warm-started solver iterations, or one greedy encode) followed by one sweep
          of dictionary updates; ``n_iter_`` outer iterations are run;
        - ``"adam"``: the number of full-batch Adam steps, each a step on every code and
          on the dictionary.

        - with ``batch_size`` (minibatch alternation): the maximum number of epochs,
          passes over the training data in minibatches.

        Unused with a given ``dictionary``.
    batch_size : int, default=None
        None alternates on the whole training set (codes of every sample, then a
        sweep). An int learns the dictionary by minibatch alternation instead (online
        dictionary learning, Mairal et al. 2010, as scikit-learn's
        ``MiniBatchDictionaryLearning``): the codes of each minibatch of this many rows,
        inferred with ``fit_algorithm`` from zero (at most 20 iterations, or one greedy
        encode), update running averages of ``s s^T`` and ``s^T x``, then one sweep
        updates the atoms. Memory is then bounded by the batch and the dictionary: this
        is the mode for data that does not fit in memory (an on-disk ``X``, e.g. from
        :func:`~sklearn_sparsegap.activations.load_activations`, is streamed from disk
        and requires it). There is no pruning of a larger start. Stored, capped at ``n_samples``, as
        ``batch_size_``. ``fit_algorithm="adam"`` has no minibatch mode.
    transform_max_iter : int, default=1000
        Iteration budget of the inference in ``transform`` for ``"fista"``, ``"ista"``
        and ``"adam"`` (iterations over all samples, each sample stopping at
        ``tol=1e-4`` of :func:`sparse_encode`); the greedy algorithms ignore it and take
        ``transform_n_nonzero_coefs`` steps.
    tol : float, default=1e-6
        Stopping rule of ``fit``, relative to the objective:

        - ``"fista"``, ``"ista"`` and the greedy algorithms: stop when, once the pruning
          has left ``n_components`` atoms, one outer iteration lowered the objective by
          less than ``tol`` times its previous value;
        - ``"adam"``: stop when the lowest objective logged (every 10 steps) improved by
          less than ``tol`` times its value over the last 100 steps; 0 runs all
          ``max_iter`` steps;
        - with ``batch_size``: the same rule on the objective averaged over each epoch
          (over the last 100 minibatches, rounded up to whole epochs), as the
          autoencoders stop.
    learning_rate : float, default=3e-3
        Adam step size, used only by ``fit_algorithm="adam"``.
    checkpoint_path : str or path-like, default=None
        With ``batch_size`` (minibatch alternation) only: where ``fit`` saves its
        training state (dictionary, running statistics, counters, random generators,
        history), every ``checkpoint_every`` minibatches. When the file exists at the
        start of ``fit`` training resumes from it, mid-epoch too, and ends with the
        dictionary an uninterrupted fit with the same seed gives. A checkpoint saved
        with other parameters or other data is refused with a ``ValueError`` saying
        what differs; delete the file to start over. The file is kept after the fit.
    checkpoint_every : int, default=None
        Minibatches between checkpoints; None saves at the end of every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the dictionary initialisation and atom resampling.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    verbose : int, default=0
        Show a progress bar with the current objective.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The dictionary, unit-norm rows (or the given ``dictionary``).
    n_components_ : int
        Number of atoms (``n_components`` resolved).
    n_iter_ : int
        Outer iterations (or Adam steps) run.
    history_ : dict of ndarray
        Training log with keys ``step``, ``loss``, ``mse``, ``l1``, ``l0``,
        ``dead_fraction`` and ``flops`` (cumulative).
    dead_fraction_ : float
        The fraction of atoms dead at the end of training: used by no code of the
        last ``min(n_samples, 10**6)`` training rows, the autoencoders' definition
        (with full-batch alternation, of the last step's codes of all rows). 0.0 with a
        given ``dictionary``; always 0.0 with ``fit_algorithm="adam"``, whose codes
        are positive.
    training_flops_ : int
        Training FLOPs, counting the inference iterations actually run.
    inference_n_iter_ : int
        Iterations the final inference on the training data (with ``batch_size``: on
        ``batch_size`` evenly spaced rows of it) needed; the default iteration count of
        :meth:`inference_flops`.
    batch_size_ : int
        The minibatch size used (only with ``batch_size``).
    transform_alpha_ : float
        The L1 penalty ``transform`` uses (``transform_alpha`` resolved).
    transform_algorithm_ : str
        The algorithm ``transform`` uses (``transform_algorithm`` resolved).
    device_ : str
        The device used.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sparse_encode : The inference step on its own.
    SAEPlusITO : Amortised codes refined by the same solvers.

    Notes
    -----
    The fit starts with ``2 * n_components`` atoms and drops the least used atom (the
    smallest squared code norm) in equal steps over outer iterations 20-52, so the spare
    atoms can cover every direction in the data before the fit has to choose between
    them; ``tol`` is only checked once ``n_components`` atoms are left. The dictionary is
    also extrapolated after every sweep, ``D + beta_t (D - D_prev)`` renormalised, with
    Nesterov's ``beta_t`` sequence, restarted whenever the objective went up, so
    ``history_["loss"]`` is not monotone. Together they avoid the fits that miss one
    true atom and shorten the fit; the measurements are in :ref:`defaults`.

    Examples
    --------
    >>> from sklearn_sparsegap import (GradientSparseCoder, dictionary_mcc,
    ...                                make_sparse_dictionary_data)
    >>> X, dictionary, codes = make_sparse_dictionary_data(512, random_state=0)
    >>> coder = GradientSparseCoder(n_components=16, random_state=0).fit(X)
    >>> coder.transform(X).shape
    (512, 16)
    >>> bool(dictionary_mcc(dictionary, coder.components_) > 0.99)
    True
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "transform_alpha": [Interval(Real, 0, None, closed="left"), None],
        "dictionary": ["array-like", None],
        "fit_algorithm": [StrOptions(set(ALGORITHMS))],
        "transform_algorithm": [StrOptions(set(ALGORITHMS)), None],
        "transform_n_nonzero_coefs": [Interval(Integral, 1, None, closed="left"), None],
        "positive_code": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "transform_max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "checkpoint_path": [str, os.PathLike, None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "device": [str],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_components=None,
        *,
        alpha=0.03,
        transform_alpha=None,
        dictionary=None,
        fit_algorithm="fista",
        transform_algorithm=None,
        transform_n_nonzero_coefs=None,
        positive_code=True,
        max_iter=300,
        batch_size=None,
        transform_max_iter=1000,
        tol=1e-6,
        learning_rate=3e-3,
        checkpoint_path=None,
        checkpoint_every=None,
        random_state=None,
        device="auto",
        verbose=0,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.transform_alpha = transform_alpha
        self.dictionary = dictionary
        self.fit_algorithm = fit_algorithm
        self.transform_algorithm = transform_algorithm
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.positive_code = positive_code
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.transform_max_iter = transform_max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the dictionary (or store the given one) from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used; accepted so that ``GridSearchCV(..., scoring=mcc_scorer)`` can pass
            the true codes.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._validate_X(X, reset=True)
        n_samples, n_features = X.shape
        device = self._resolved_device()
        self.device_ = str(device)
        self.transform_alpha_ = self._resolved_transform_alpha()
        self.transform_algorithm_ = self._resolved_transform_algorithm()
        self.history_ = {key: [] for key in HISTORY_KEYS}
        self.training_flops_ = 0
        self.n_iter_ = 0
        if self.dictionary is not None:
            dictionary = check_dictionary(self.dictionary, n_features=n_features)
            if self.n_components is not None and dictionary.shape[0] != self.n_components:
                raise ValueError(
                    f"dictionary has {dictionary.shape[0]} rows (atoms) but "
                    f"n_components={self.n_components}."
                )
            self._check_n_nonzero_coefs(n_features, dictionary.shape[0])
            self.components_ = dictionary.astype(X.dtype, copy=True)
            self.n_components_ = self.components_.shape[0]
            self.history_ = history_arrays(self.history_)
            self.dead_fraction_ = 0.0
            self.inference_n_iter_ = self.transform_max_iter
            return self

        n_components = n_features if self.n_components is None else self.n_components
        self._check_n_nonzero_coefs(n_features, n_components)
        generator = make_generator(self.random_state)
        if self.batch_size is not None or is_streamed(X):
            return self._fit_minibatch(X, n_components, generator, device)
        if self.checkpoint_path is not None:
            raise ValueError(
                "checkpoint_path is only used by minibatch alternation: set batch_size "
                "(e.g. 1024), or checkpoint_path=None for a full-batch fit."
            )
        X_tensor = to_tensor(X, device=device, dtype=torch_dtype(X.dtype))
        if self.fit_algorithm == "adam":
            components = _initial_dictionary(X_tensor, n_components, generator)
            components, _ = self._fit_adam(X_tensor, components, generator)
        else:
            components, _, self.n_iter_, history, self.training_flops_ = (
                _alternating_dictionary_learning(
                    X_tensor,
                    _initial_dictionary(X_tensor, _OVERCOMPLETE * n_components, generator),
                    self.alpha,
                    n_components=n_components,
                    algorithm=self.fit_algorithm,
                    n_nonzero_coefs=self._n_nonzero(n_features, n_components),
                    positive=self.positive_code,
                    max_iter=self.max_iter,
                    tol=self.tol,
                    generator=generator,
                    verbose=self.verbose,
                    description=type(self).__name__,
                )
            )
            self.history_ = history
            # The iterations inference on the final dictionary takes: inference_flops'
            # default.
            _, self.inference_n_iter_ = self._codes(X_tensor, components)
        self.components_ = to_numpy(components)
        self.n_components_ = n_components
        self.history_ = history_arrays(self.history_)
        self.dead_fraction_ = _last_dead_fraction(self.history_)
        return self

    def _fit_minibatch(self, X, n_components, generator, device):
        """Online dictionary learning over minibatches of ``X`` (in memory or streamed
        from disk); see :func:`_online_dictionary_learning`."""
        n_samples, n_features = X.shape
        streamed = is_streamed(X)
        if self.fit_algorithm == "adam":
            raise ValueError(
                "fit_algorithm='adam' trains one code per training sample, which needs "
                "them all in memory: it has no minibatch mode (batch_size=None, X in memory)."
            )
        if self.batch_size is None:
            raise ValueError(
                f"X is on disk ({X.nbytes / 2**30:.1f} GiB, {n_samples} rows) and is "
                "streamed in minibatches: set batch_size (e.g. 1024)."
            )
        batch_size = min(self.batch_size, n_samples)
        dtype = torch_dtype(X.dtype)
        if streamed:
            source = DiskBatches(X, dtype=dtype)
            sample = source.sample(_MINIBATCH_SAMPLE_ROWS, device)
        else:
            source = TensorBatches(to_tensor(X, device=device, dtype=dtype))
            sample = source.sample(_MINIBATCH_SAMPLE_ROWS)
        n_nonzero = self._n_nonzero(n_features, n_components)
        checkpoint = None
        if self.checkpoint_path is not None:
            checkpoint = Checkpoint(self.checkpoint_path, self.checkpoint_every,
                                    config=checkpoint_config(self, X))  # fmt: skip
        components, self.n_iter_, history, self.training_flops_ = (
            _online_dictionary_learning(
                source,
                _initial_dictionary(sample, n_components, generator),
                self.alpha,
                algorithm=self.fit_algorithm,
                n_nonzero_coefs=n_nonzero if self.fit_algorithm in GREEDY_ALGORITHMS else None,
                positive=self.positive_code,
                n_epochs=self.max_iter,
                batch_size=batch_size,
                tol=self.tol,
                generator=generator,
                checkpoint=checkpoint,
                verbose=self.verbose,
                description=type(self).__name__,
            )
        )
        # inference_flops' default: the iterations inference takes on one batch of the
        # (evenly spaced) sample.
        _, self.inference_n_iter_ = self._codes(sample[:batch_size], components)
        self.components_ = to_numpy(components)
        self.n_components_ = n_components
        self.batch_size_ = batch_size
        self.history_ = history_arrays(history)
        self.dead_fraction_ = _last_dead_fraction(self.history_)
        return self

    def _resolved_transform_alpha(self):
        if self.transform_alpha is not None:
            return float(self.transform_alpha)
        if self.dictionary is not None or self.fit_algorithm == "adam":
            return float(self.alpha)
        return self.alpha / _TRANSFORM_ALPHA_DIVISOR

    def _resolved_transform_algorithm(self):
        if self.transform_algorithm is None:
            return self.fit_algorithm
        return self.transform_algorithm

    def _check_n_nonzero_coefs(self, n_features, n_components):
        """Reject a ``transform_n_nonzero_coefs`` that a greedy algorithm cannot use."""
        fitting = self.dictionary is None and self.fit_algorithm != "adam"
        algorithms = {self.transform_algorithm_} | ({self.fit_algorithm} if fitting else set())
        for algorithm in sorted(algorithms & set(GREEDY_ALGORITHMS)):
            check_n_nonzero_coefs(
                self.transform_n_nonzero_coefs, n_features, n_components, algorithm,
                name="transform_n_nonzero_coefs",
            )  # fmt: skip

    def _n_nonzero(self, n_features, n_components):
        if self.transform_n_nonzero_coefs is not None:
            return self.transform_n_nonzero_coefs
        return default_n_nonzero_coefs(n_features, n_components)

    def _fit_adam(self, X, components, generator):
        """The paper's sparse coding: Adam on exp-parametrised codes and the dictionary."""
        n_samples, n_features = X.shape
        n_components = components.shape[0]
        log_codes = torch.nn.Parameter(
            torch.full((n_samples, n_components), _ADAM_LOG_INIT, dtype=X.dtype, device=X.device)
        )
        atoms = torch.nn.Parameter(components.clone())
        optimizer = make_adam([log_codes, atoms], self.learning_rate)
        alpha = self.alpha

        def compute_gradients(indices, with_stats):
            log_codes.grad, atoms.grad = None, None
            rows = log_codes if indices is None else log_codes[indices]
            batch = X if indices is None else X[indices]
            codes = rows.exp()
            residual = batch - codes @ atoms
            loss = 0.5 * residual.square().sum(dim=1).mean() + alpha * codes.sum(dim=1).mean()
            # The loop averages over the batch; the code gradients of each sample should
            # not shrink with the number of samples.
            (loss * batch.shape[0]).backward()
            if not with_stats:
                return codes, None
            return codes, batch_statistics(loss, residual, codes)

        def step_flops(rows):
            return sparse_coding_training_flops(n_features, n_components, rows)

        callbacks = [
            CountFlops(step_flops),
            LogHistory(self.history_, tol=self.tol, description=type(self).__name__),
            ProgressBar(type(self).__name__, disable=not self.verbose),
        ]
        # A step is about six products of the size of one: that decides the threads.
        with serial_if_small(X.device, step_flops(n_samples) // 6):
            state = train(
                compute_gradients, n_samples, optimizer=optimizer, n_epochs=self.max_iter,
                atoms=atoms, callbacks=callbacks,
            )  # fmt: skip
        self.n_iter_ = state.epoch
        self.training_flops_ = state.flops
        self.inference_n_iter_ = self.transform_max_iter
        return atoms.detach(), log_codes.detach().exp()

    def _codes(self, X, components):
        """Codes of ``X`` on ``components`` with the transform settings, and the
        iterations run (tensors in, tensors out)."""
        return encode_tensor(
            X,
            components,
            algorithm=self.transform_algorithm_,
            alpha=self.transform_alpha_,
            n_nonzero_coefs=self._n_nonzero(X.shape[1], components.shape[0]),
            positive=self.positive_code,
            max_iter=self.transform_max_iter,
        )

    def _encode(self, X):
        components = to_tensor(self.components_, device=X.device, dtype=X.dtype)
        return self._codes(X, components)[0]

    def inference_flops(self, n_samples, n_iter=None):
        """FLOPs of inferring codes for ``n_samples`` with this estimator's solver.

        Parameters
        ----------
        n_samples : int
            Number of samples.
        n_iter : int, default=None
            Solver iterations; None uses ``inference_n_iter_``, the iterations the
            final inference on the training data actually ran.

        Returns
        -------
        flops : int
            ``flops.sparse_encode_flops`` for this solver.
        """
        check_is_fitted(self)
        n_components, n_features = self.components_.shape
        return sparse_encode_flops(
            self.transform_algorithm_, n_features, n_components, n_samples,
            n_iter=self.inference_n_iter_ if n_iter is None else n_iter,
            n_nonzero_coefs=self._n_nonzero(n_features, n_components),
        )  # fmt: skip
