"""Dictionary learning numerics of :class:`~sklearn_sparsegap.GradientSparseCoder`.

Tensors in, tensors out (as scikit-learn's ``_dict_learning`` under its estimators):
:func:`_alternating_dictionary_learning` (full batch: code inference and block-coordinate
dictionary sweeps), :func:`_online_dictionary_learning` (the same alternation over
minibatches, on the library's training loop, with checkpoints) and
:func:`_adam_dictionary_learning` (the paper's procedure: exp-parametrised codes and the
dictionary trained jointly by Adam).
"""

import contextlib
import functools

import numpy as np
import torch
from tqdm.auto import tqdm

from ._solvers import GREEDY_ALGORITHMS, default_n_nonzero_coefs, fista, ista
from ._solvers._sparse_encode import encode_tensor
from ._torch_utils import serial_if_small
from ._training import (
    DEAD_WINDOW_ROWS,
    HISTORY_KEYS,
    CountFlops,
    DeadLatents,
    LogHistory,
    ProgressBar,
    WarnIfLong,
    batch_statistics,
    make_adam,
    renormalize_atoms,
    train,
)
from .flops import sparse_coding_training_flops, sparse_encode_flops

# Inner solver iterations per outer iteration: the codes are warm-started and the
# dictionary moves between outer iterations anyway, so solving them exactly is wasted.
_INNER_MAX_ITER = 20
_INNER_TOL = 1e-4
# An atom whose codes have squared norm below this is unused and gets resampled.
_UNUSED_ATOM_TOL = 1e-10
# The paper's exp-parametrised codes start at exp(-10).
_ADAM_LOG_INIT = -10.0
# The alternation drops the least used of its spare atoms, in equal steps, from outer
# iteration _PRUNE_START until _PRUNE_END (see :ref:`defaults`).
_PRUNE_START = 20
_PRUNE_END = 52


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


def _batch_objective(X, codes, components, alpha):
    """``(loss, mse, l1, l0)`` of :func:`batch_statistics` for ``codes`` of ``X``, the loss
    being the mean of ``0.5 * ||x - s @ D||^2 + alpha * ||s||_1``."""
    residual = X - codes @ components
    loss = 0.5 * residual.square().sum(dim=1).mean() + alpha * codes.abs().sum(dim=1).mean()
    return batch_statistics(loss, residual, codes)


def _log_iteration(history, step, X, codes, components, alpha, flops):
    """Append one outer iteration to ``history`` (keys ``HISTORY_KEYS``); return the
    objective. One host synchronisation per call."""
    dead = 1.0 - (codes != 0).any(dim=0).to(X.dtype).mean()
    values = torch.cat([_batch_objective(X, codes, components, alpha), dead[None]]).tolist()
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
    X, init_dictionary, alpha, *, n_components, algorithm="fista", n_nonzero_coefs=None,
    positive=True, max_iter=300, tol=1e-6, generator=None, verbose=0,
    description="dictionary learning",
):  # fmt: skip
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
    codes, flops, step = None, 0, 0
    extrapolation = _DictionaryExtrapolation(components)
    progress = tqdm(total=max_iter, desc=description, disable=not verbose, leave=False)
    # An inference iteration is a product of the codes with an (n_start, n_start) or
    # (n_start, n_features) matrix; below the threshold one thread is faster.
    iteration_flops = 2 * n_samples * n_start * min(n_start, n_features)
    with serial_if_small(X.device, iteration_flops), contextlib.closing(progress):
        for step in range(1, max_iter + 1):
            n_atoms = components.shape[0]
            codes, step_flops = _alternation_step(
                X, components, alpha, codes, algorithm=algorithm,
                n_nonzero_coefs=n_nonzero_coefs, positive=positive, generator=generator,
            )  # fmt: skip
            flops += step_flops
            value = _log_iteration(history, step, X, codes, components, alpha, flops)
            _report_objective(progress, value, description, f"at iteration {step}")
            n_keep = _n_atoms_after(step, n_start, n_components, max_iter)
            if n_keep < n_atoms:
                components, codes = _drop_least_used_atoms(components, codes, n_keep)
                extrapolation.reset(components)  # tol is judged on the final atom count
                continue
            if n_atoms == n_components and extrapolation.converged(value, tol):
                break
            extrapolation.step(components, value)
    return components, codes, step, history, flops


def _alternation_step(X, components, alpha, codes, *, algorithm, n_nonzero_coefs, positive,
                      generator):  # fmt: skip
    """One outer iteration of the alternation: infer the codes of ``X`` (warm-started
    from ``codes``), then sweep the atoms of ``components`` in place.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_atoms)
        The codes inferred (before the sweep).
    flops : int
        FLOPs of the inference iterations run and of the sweep.
    """
    n_samples, n_features = X.shape
    n_atoms = components.shape[0]
    codes, n_iter = _infer_codes(
        X, components, alpha, algorithm=algorithm, n_nonzero_coefs=n_nonzero_coefs,
        positive=positive, init=codes,
    )  # fmt: skip
    flops = sparse_encode_flops(
        algorithm, n_features, n_atoms, n_samples, n_iter=max(n_iter, 1),
        n_nonzero_coefs=min(n_nonzero_coefs, n_atoms),
    )  # fmt: skip
    _update_dictionary(X, codes, components, generator)
    return codes, flops + _sweep_flops(n_samples, n_features, n_atoms)


def _drop_least_used_atoms(components, codes, n_keep):
    """Keep the ``n_keep`` atoms with the largest squared code norm, in their order, and
    their columns of ``codes``."""
    usage = codes.square().sum(dim=0)
    keep = torch.argsort(usage, descending=True)[:n_keep].sort().values
    return components[keep].contiguous(), codes[:, keep]


class _DictionaryExtrapolation:
    """Nesterov extrapolation of the dictionary between sweeps of the alternation.

    ``step(components, value)``, after a sweep that reached objective ``value``, moves
    ``components`` in place to ``D + beta_t (D - D_prev)`` renormalised, with Nesterov's
    ``beta_t``; when ``value`` is above the previous objective the sequence restarts
    (``beta = 0``, no move). ``converged(value, tol)``: the objective went down by less
    than ``tol`` times its previous value. ``reset(components)`` starts over from
    ``components`` with no previous objective (after atoms were dropped); the momentum
    sequence carries on.
    """

    def __init__(self, components):
        self.momentum_t = 1.0
        self.reset(components)

    def reset(self, components):
        self.before = components.clone()
        self.previous = np.inf

    def converged(self, value, tol):
        return 0 <= self.previous - value < tol * abs(self.previous)

    @torch.no_grad()
    def step(self, components, value):
        if value > self.previous:
            self.momentum_t, beta = 1.0, 0.0
        else:
            next_t = (1.0 + np.sqrt(1.0 + 4.0 * self.momentum_t**2)) / 2.0
            self.momentum_t, beta = next_t, (self.momentum_t - 1.0) / next_t
        current = components.clone()
        if beta:
            components.add_(components - self.before, alpha=beta)
            renormalize_atoms(components)
        self.before = current
        self.previous = value


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
    source, components, alpha, *, algorithm="fista", n_nonzero_coefs=None, positive=True,
    n_epochs=1, batch_size=1024, tol=0.0, generator=None, checkpoint=None, verbose=0,
    description="dictionary learning",
):  # fmt: skip
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
    update = _OnlineDictionaryUpdate(components, batch_size=batch_size,
                                     memory_rows=_ONLINE_MEMORY_ROWS,
                                     generator=_resampling_generator(generator))  # fmt: skip
    model = torch.nn.Module()
    model.register_buffer("components", components)  # the same tensor, restored in place
    coding = _MinibatchCoding(components, alpha, update, algorithm=algorithm,
                              n_nonzero_coefs=n_nonzero_coefs, positive=positive)  # fmt: skip
    history = {key: [] for key in HISTORY_KEYS}
    callbacks = _online_callbacks(
        history, n_components, min(source.n_samples, DEAD_WINDOW_ROWS), components.device,
        step_flops=coding.step_flops, tol=tol, description=description, verbose=verbose,
        checkpoint=checkpoint,
    )  # fmt: skip
    resume_from = None if checkpoint is None else checkpoint.resume_path
    iteration_flops = 2 * batch_size * n_components * min(n_components, n_features)
    with serial_if_small(components.device, iteration_flops):
        state = train(
            coding, source, optimizer=update, n_epochs=n_epochs, batch_size=batch_size,
            generator=generator, model=model, callbacks=callbacks, resume_from=resume_from,
        )  # fmt: skip
    return components, state.epoch, history, state.flops


def _resampling_generator(generator):
    """A CPU generator for the atoms minibatch alternation resamples, seeded by one draw
    of ``generator``.

    Its own generator: a checkpoint taken mid-epoch replays the batch order from the
    epoch's start, which must not replay the resampling draws as well.
    """
    resampling = torch.Generator(device="cpu")
    resampling.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    return resampling


class _MinibatchCoding:
    """The ``compute_gradients`` of :func:`~sklearn_sparsegap._training.train` for
    minibatch alternation: the codes of a batch on the current ``components`` (inferred
    from zero), handed to ``update.observe``, with the batch's objective statistics
    when asked; ``step_flops(rows)`` counts a step (the inference iterations of the
    last batch and the sweep)."""

    def __init__(self, components, alpha, update, *, algorithm, n_nonzero_coefs, positive):
        self.components = components
        self.alpha = alpha
        self.update = update
        self.algorithm = algorithm
        self.n_nonzero_coefs = n_nonzero_coefs
        self.positive = positive
        self.n_iter = 1

    def __call__(self, batch, with_stats):
        codes, self.n_iter = _infer_codes(
            batch, self.components, self.alpha, algorithm=self.algorithm,
            n_nonzero_coefs=self.n_nonzero_coefs, positive=self.positive, init=None,
        )  # fmt: skip
        self.update.observe(batch, codes)
        if not with_stats:
            return codes, None
        return codes, _batch_objective(batch, codes, self.components, self.alpha)

    def step_flops(self, rows):
        n_components, n_features = self.components.shape
        return sparse_encode_flops(
            self.algorithm, n_features, n_components, rows, n_iter=max(self.n_iter, 1),
            n_nonzero_coefs=self.n_nonzero_coefs,
        ) + _sweep_flops(rows, n_features, n_components)  # fmt: skip


def _online_callbacks(history, n_components, dead_window, device, *, step_flops, tol,
                      description, verbose, checkpoint):  # fmt: skip
    """The callbacks of minibatch alternation, in order: FLOPs, the dead-latent tracker
    (window ``dead_window`` rows), the log into ``history`` (with ``tol``), the warning
    for long fits, the progress bar and, last, ``checkpoint`` when given."""
    dead = DeadLatents(n_components, dead_window, device)
    callbacks = [
        CountFlops(step_flops),
        dead,
        LogHistory(history, tol=tol, description=description, dead=dead,
                   advice="check that X is finite and well scaled"),
        WarnIfLong(description, "Set max_iter (epochs) lower, or fit on a subset of X, "
                                "to shorten it."),
        ProgressBar(description, disable=not verbose),
    ]  # fmt: skip
    if checkpoint is not None:
        callbacks.append(checkpoint)
    return callbacks


def _adam_dictionary_learning(
    X, init_dictionary, alpha, *, learning_rate=3e-3, n_epochs=300, tol=0.0, verbose=0,
    description="dictionary learning",
):  # fmt: skip
    """Learn a dictionary the paper's way: Adam on exp-parametrised codes and the atoms.

    One code matrix ``exp(log_codes)`` (positive, from ``exp(_ADAM_LOG_INIT)``) and the
    dictionary are trained jointly by full-batch Adam on
    ``0.5 * ||x - s @ D||^2 + alpha * ||s||_1`` (averaged over samples), with the library's
    training loop; the atoms are kept at unit norm.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Training data. Not modified.
    init_dictionary : Tensor of shape (n_components, n_features)
        Unit-norm initial atoms. Not modified.
    alpha : float
        L1 penalty.
    learning_rate : float, default=3e-3
        Adam step size.
    n_epochs : int, default=300
        Full-batch Adam steps at most.
    tol : float, default=0.0
        Stopping rule of :class:`~sklearn_sparsegap._training.LogHistory` (0: run every
        step).
    verbose, description
        As in :func:`_alternating_dictionary_learning`.

    Returns
    -------
    dictionary : Tensor of shape (n_components, n_features)
    codes : Tensor of shape (n_samples, n_components)
    n_iter : int
        Adam steps run.
    history : dict of lists
        One entry per log (every ``FULL_BATCH_LOG_EVERY`` steps) under each of
        ``HISTORY_KEYS``.
    flops : int
    """
    n_samples, n_features = X.shape
    n_components = init_dictionary.shape[0]
    log_codes = torch.nn.Parameter(
        torch.full((n_samples, n_components), _ADAM_LOG_INIT, dtype=X.dtype, device=X.device)
    )
    atoms = torch.nn.Parameter(init_dictionary.clone())
    optimizer = make_adam([log_codes, atoms], learning_rate)

    def step_flops(rows):
        return sparse_coding_training_flops(n_features, n_components, rows)

    history = {key: [] for key in HISTORY_KEYS}
    callbacks = [
        CountFlops(step_flops),
        LogHistory(history, tol=tol, description=description),
        ProgressBar(description, disable=not verbose),
    ]
    # A step is about six products of the size of one: that decides the threads.
    with serial_if_small(X.device, step_flops(n_samples) // 6):
        state = train(
            functools.partial(_exp_codes_gradients, X, log_codes, atoms, alpha), n_samples,
            optimizer=optimizer, n_epochs=n_epochs, atoms=atoms, callbacks=callbacks,
        )  # fmt: skip
    return atoms.detach(), log_codes.detach().exp(), state.epoch, history, state.flops


def _exp_codes_gradients(X, log_codes, atoms, alpha, indices, with_stats):
    """Fill the gradients of ``log_codes`` (the rows ``indices``, None for all) and of
    ``atoms`` for the objective of the codes ``exp(log_codes)``; the ``compute_gradients``
    of :func:`_adam_dictionary_learning`.

    The loss is summed over the batch rather than averaged, so that each sample's code
    gradient does not shrink with the number of samples.
    """
    log_codes.grad, atoms.grad = None, None
    rows = log_codes if indices is None else log_codes[indices]
    batch = X if indices is None else X[indices]
    codes = rows.exp()
    residual = batch - codes @ atoms
    loss = 0.5 * residual.square().sum(dim=1).mean() + alpha * codes.sum(dim=1).mean()
    (loss * batch.shape[0]).backward()
    if not with_stats:
        return codes, None
    return codes, batch_statistics(loss, residual, codes)
