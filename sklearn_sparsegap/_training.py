"""The library objective and the one training loop shared by every gradient-trained model."""

import math
import os
import time
import warnings
from numbers import Integral

import numpy as np
import torch
from tqdm.auto import tqdm

from ._torch_utils import state_to_cpu

__all__ = [
    "HISTORY_KEYS",
    "Callback",
    "Checkpoint",
    "CountFlops",
    "DeadLatents",
    "HeldOutHistory",
    "LogHistory",
    "ProgressBar",
    "ResampleDeadLatents",
    "TrainingState",
    "WarnIfLong",
    "batch_statistics",
    "history_arrays",
    "make_adam",
    "objective",
    "cosine_loss",
    "project_atom_gradients",
    "renormalize_atoms",
    "train",
]

HISTORY_KEYS = ("step", "loss", "mse", "l1", "l0", "dead_fraction", "flops")
# Keys added to the history when held-out rows are given (fit(X, X_val=...)).
HELD_OUT_KEYS = ("val_fvu", "val_l0", "val_dead_fraction")
# A latent is dead when it has not fired on the last dead_window training rows; None
# means min(n_samples, DEAD_WINDOW_ROWS): one epoch, capped at 10^6 rows (a latent firing
# on fewer than one row in a million counts as dead, the usual threshold; SAELens's default
# window is 1000 steps of 4096 rows, sparsify's 10^7 rows).
DEAD_WINDOW_ROWS = 10**6

# Full-batch training logs (and checks tol) every this many epochs (steps): each log
# synchronises with the device. Minibatch training logs every epoch.
FULL_BATCH_LOG_EVERY = 10
# tol compares the loss now with the loss at least this many optimiser steps earlier
# (100 epochs in full batch, one epoch of 100 or more minibatches).
TOL_WINDOW_STEPS = 100
# WarnIfLong: warn when a call is estimated to take longer than this (seconds), from
# the time of its first LONG_RUN_PROBE_STEPS steps (or LONG_RUN_PROBE_SECONDS).
LONG_RUN_SECONDS = 600.0
LONG_RUN_PROBE_STEPS = 5
LONG_RUN_PROBE_SECONDS = 10.0


def objective(X, codes, components, intercept=None, alpha=0.0, *, per_sample=False):
    """The library objective ``0.5 * ||x - s @ D - b||^2 + alpha * ||s||_1`` per sample.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
    codes : Tensor of shape (n_samples, n_components)
    components : Tensor of shape (n_components, n_features)
    intercept : Tensor of shape (n_features,) or None
    alpha : float
    per_sample : bool, default=False
        Return the per-sample values instead of their mean.
    """
    reconstruction = codes @ components
    if intercept is not None:
        reconstruction = reconstruction + intercept
    values = 0.5 * (X - reconstruction).square().sum(dim=1) + alpha * codes.abs().sum(dim=1)
    return values if per_sample else values.mean()


def cosine_loss(codes_pred, codes_true, over="sample", eps=1e-8):
    """The known-codes training loss, ``1 - cos`` averaged over samples (``over="sample"``:
    the cosine of each sample's code vectors) or over latents (``"latent"``: the cosine
    of each latent's column across the batch)."""
    dim = 1 if over == "sample" else 0
    return 1.0 - torch.nn.functional.cosine_similarity(
        codes_pred, codes_true, dim=dim, eps=eps
    ).mean()


def make_adam(params, learning_rate):
    """Adam with the fused kernel where this torch build supports it (fewer kernel
    launches per step, which dominate at small problem sizes)."""
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=learning_rate)


@torch.no_grad()
def project_atom_gradients(atoms):
    """Remove from each atom's gradient its component along the atom.

    With unit-norm atoms this keeps the step tangent to the sphere, so renormalising
    afterwards does not fight the optimiser (as modern SAE codebases do).
    """
    if atoms.grad is not None:
        atoms.grad.sub_((atoms.grad * atoms).sum(dim=1, keepdim=True) * atoms)


@torch.no_grad()
def renormalize_atoms(atoms, eps=1e-12):
    """Rescale each row of ``atoms`` to unit L2 norm, in place."""
    atoms.div_(atoms.norm(dim=1, keepdim=True).clamp_min(eps))


def active_latents(codes):
    """Boolean mask of the latents with a non-zero code in ``codes``.

    Two max/min reductions, which stream through the codes without a temporary: several
    times faster than ``(codes != 0).any(dim=0)`` on large batches.
    """
    return (codes.amax(dim=0) > 0) | (codes.amin(dim=0) < 0)


def batch_statistics(loss, residual, codes):
    """The 4-vector ``(loss, mse, l1, l0)`` logged in ``history_`` for one batch."""
    with torch.no_grad():
        return torch.stack(
            [
                loss.detach(),
                residual.detach().square().mean(),
                codes.detach().abs().sum(dim=1).mean(),
                (codes.detach() != 0).sum(dim=1).to(residual.dtype).mean(),
            ]
        )


class TrainingState:
    """What the loop knows, handed to every callback (as skorch hands its ``net``).

    Counters are global over successive calls (``partial_fit``, ``warm_start``):
    ``step`` optimiser steps and ``epoch`` completed epochs. Within an epoch, ``batch``
    counts the batches done. After a step, ``indices`` (None for the full batch),
    ``rows``, ``codes`` and ``stats`` describe it; ``stats`` is only computed when a
    callback set ``want_stats`` in ``on_step_begin``. A callback ends training after the
    current epoch by setting ``stop``; ``flops`` is kept by :class:`CountFlops` and
    ``loss`` (the last logged loss) by :class:`LogHistory`.
    """

    def __init__(self, *, optimizer, generator, model, n_samples, batch_size, step, epoch,
                 end_epoch, source=None):
        self.optimizer = optimizer
        self.generator = generator
        self.model = model
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.full_batch = batch_size is None or batch_size >= n_samples
        if source is not None and not self.full_batch:
            self.steps_per_epoch = source.n_batches(batch_size)
        else:
            self.steps_per_epoch = 1 if self.full_batch else math.ceil(n_samples / batch_size)
        self.start_step, self.start_epoch = step, epoch
        self.step, self.epoch, self.end_epoch = step, epoch, end_epoch
        self.batch = 0
        self.indices = self.codes = self.stats = None
        self.rows = 0
        self.want_stats = False
        self.stop = False
        self.flops = 0
        self.loss = None  # the last logged loss (set by LogHistory)
        self.error = None
        # Where this epoch's minibatch order was drawn from (checkpoints replay it).
        self.epoch_generator_state = None

    @property
    def last_epoch(self):
        """Whether the epoch under way is the last one this call runs."""
        return self.epoch == self.end_epoch - 1


class Callback:
    """Base class of the training-loop callbacks: every hook does nothing.

    Hooks receive the :class:`TrainingState`. A callback whose behaviour depends on
    what it has seen (a running sum, a random generator) returns it from
    ``state_dict`` and restores it in ``load_state_dict``, so that :class:`Checkpoint`
    resumes it exactly.
    """

    def on_train_begin(self, state):
        pass

    def on_epoch_begin(self, state):
        pass

    def on_step_begin(self, state):
        pass

    def on_step_end(self, state):
        pass

    def on_epoch_end(self, state):
        pass

    def on_train_end(self, state):
        """Called last, also when training raised (``state.error`` is then set)."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state_dict):
        pass


class CountFlops(Callback):
    """Keeps ``state.flops``, the training FLOPs so far: ``start`` plus
    ``step_flops(rows)`` for every step."""

    def __init__(self, step_flops, start=0):
        self.step_flops = step_flops
        self.total = start

    def on_train_begin(self, state):
        state.flops = self.total

    def on_step_end(self, state):
        self.total += self.step_flops(state.rows)
        state.flops = self.total

    def state_dict(self):
        return {"total": self.total}

    def load_state_dict(self, state_dict):
        self.total = state_dict["total"]


class LogHistory(Callback):
    """Logs ``(step, loss, mse, l1, l0, dead_fraction, flops)`` into ``history``,
    raises when the loss is not finite, and stops on ``tol``.

    Statistics are averaged over the steps since the last log; logs are at the end of
    every epoch (every ``FULL_BATCH_LOG_EVERY`` epochs in full batch) and of the last
    epoch of a call. ``dead_fraction`` is, with a :class:`DeadLatents` tracker
    ``dead``, the fraction of latents dead at the log (not fired in the tracker's
    window); without one, the fraction with no non-zero code in the steps logged.
    ``tol`` stops training when the running minimum of the logged loss improved by less
    than ``tol`` (relative) over the last ``TOL_WINDOW_STEPS`` optimiser steps (rounded
    up to whole logs); 0 disables it. It must come after :class:`CountFlops`.
    """

    def __init__(self, history=None, *, tol=0.0, description="training", advice="or scale X",
                 dead=None):
        self.history = {key: [] for key in HISTORY_KEYS} if history is None else history
        self.tol = tol
        self.dead = dead
        self.description = description
        # The second fix the divergence error names (the only one without a learning rate).
        self.advice = advice
        self._reset()
        self.best = []

    def _reset(self):
        self.sums, self.active, self.n_logged_steps = None, None, 0

    def on_train_begin(self, state):
        self.log_every = FULL_BATCH_LOG_EVERY if state.full_batch else 1
        steps_per_log = self.log_every * state.steps_per_epoch
        self.window = max(1, math.ceil(TOL_WINDOW_STEPS / steps_per_log))

    def _logs_this_epoch(self, state):
        return (state.epoch + 1) % self.log_every == 0 or state.last_epoch

    def on_step_begin(self, state):
        if self._logs_this_epoch(state):
            state.want_stats = True

    def on_step_end(self, state):
        if state.stats is None:
            return
        if self.sums is None:
            self.sums = state.stats.clone()
        else:
            # A resumed checkpoint's sums come back on the CPU: follow the fit's device.
            self.sums = self.sums.to(state.stats.device)
            self.sums += state.stats
        if self.dead is None:
            active = active_latents(state.codes.detach())
            self.active = (
                active if self.active is None else self.active.to(active.device) | active
            )
        self.n_logged_steps += 1

    def on_epoch_end(self, state):
        if self.n_logged_steps == 0 or not self._logs_this_epoch(state):
            return
        loss, mse, l1, l0 = (self.sums / self.n_logged_steps).tolist()
        if self.dead is not None:
            dead = self.dead.fraction()
        else:
            dead = 1.0 - self.active.to(torch.float64).mean().item()
        self._reset()
        if not all(math.isfinite(v) for v in (loss, mse, l1, l0)):
            learning_rate = state.optimizer.param_groups[0].get("lr")
            fix = (
                f"Lower learning_rate (currently {learning_rate:g}) {self.advice}"
                if learning_rate is not None  # a dictionary update has no step size
                else self.advice[:1].upper() + self.advice[1:]
            )
            raise ValueError(
                f"{self.description} diverged at step {state.step}: the loss is {loss}. {fix}."
            )
        for key, value in zip(HISTORY_KEYS, (state.step, loss, mse, l1, l0, dead, state.flops)):
            self.history[key].append(value)
        state.loss = loss
        # The running minimum: Adam's loss oscillates, and a noisy uptick must not read
        # as convergence.
        self.best.append(min(loss, self.best[-1]) if self.best else loss)
        if self.tol > 0 and len(self.best) > self.window:
            previous = self.best[-self.window - 1]
            if previous - self.best[-1] < self.tol * abs(previous):
                state.stop = True

    def state_dict(self):
        # Tensors on the CPU: the checkpoint resumes on any device (on_step_end moves
        # them back to the device of the running fit).
        return {"history": {k: list(v) for k, v in self.history.items()}, "best": list(self.best),
                "sums": state_to_cpu(self.sums), "active": state_to_cpu(self.active),
                "n_logged_steps": self.n_logged_steps}

    def load_state_dict(self, state_dict):
        for key, values in state_dict["history"].items():
            self.history[key][:] = values
        self.best = list(state_dict["best"])
        self.sums, self.active = state_dict["sums"], state_dict["active"]
        self.n_logged_steps = state_dict["n_logged_steps"]


class DeadLatents(Callback):
    """Tracks, per latent, the training rows since it last fired; a latent is dead when
    that count reaches ``window`` rows (SAELens's ``dead_feature_window``, sparsify's
    ``dead_feature_threshold``, in rows rather than steps so that it does not depend on
    the batch size).

    The one definition of "dead" of a fit: logged by :class:`LogHistory`, used by
    :class:`ResampleDeadLatents` and by the AuxK loss (``mask`` before a step). Before
    ``window`` rows have been seen no latent is dead. ``reduce(active, rows)``, when
    given, returns the mask and row count over every data-parallel rank, so that all
    ranks agree on which latents are dead.
    """

    def __init__(self, n_components, window, device=None, reduce=None):
        self.window = int(window)
        self.reduce = reduce
        self.since = torch.zeros(n_components, dtype=torch.int64, device=device)

    def on_step_end(self, state):
        self.update(active_latents(state.codes.detach()), state.rows)

    def update(self, active, rows):
        """Count a batch of ``rows`` rows on which the latents of ``active`` fired (for
        loops that are not :func:`train`)."""
        if self.reduce is not None:
            active, rows = self.reduce(active, rows)
        self.since += rows
        self.since.masked_fill_(active, 0)

    @property
    def mask(self):
        """Boolean mask of the latents dead now."""
        return self.since >= self.window

    def fraction(self):
        """The fraction of latents dead now, as a float."""
        return self.mask.to(torch.float64).mean().item()

    def revive(self, mask):
        """Restart the window of the latents of ``mask`` (just resampled)."""
        self.since.masked_fill_(mask.to(self.since.device), 0)

    def state_dict(self):
        return {"since": state_to_cpu(self.since)}

    def load_state_dict(self, state_dict):
        self.since.copy_(state_dict["since"])  # onto this tracker's device


class ResampleDeadLatents(Callback):
    """Every ``every`` steps (counted over all calls), calls ``resample(dead)`` with the
    boolean mask of the latents ``dead`` (a :class:`DeadLatents` tracker, which must
    come before this callback) says are dead, when there are any, and restarts their
    window."""

    def __init__(self, resample, every, dead):
        self.resample = resample
        self.every = every
        self.dead = dead

    def on_step_end(self, state):
        if state.step % self.every == 0:
            dead = self.dead.mask
            if bool(dead.any()):
                self.resample(dead)
                self.dead.revive(dead)

    def state_dict(self):
        generator = getattr(self.resample, "generator", None)
        return {"generator": None if generator is None else generator.get_state()}

    def load_state_dict(self, state_dict):
        if state_dict["generator"] is not None:
            self.resample.generator.set_state(state_dict["generator"])


class HeldOutHistory(Callback):
    """After each log of ``history`` (it must come after :class:`LogHistory`), appends
    ``evaluate()``'s figures (a dict keyed by ``HELD_OUT_KEYS``) to it; with
    ``evaluate=None`` it appends NaN, so that the history stays rectangular when one
    call of a warm-started sequence has no held-out rows."""

    def __init__(self, history, evaluate=None):
        self.history = history
        self.evaluate = evaluate

    def on_epoch_end(self, state):
        if len(self.history[HELD_OUT_KEYS[0]]) >= len(self.history["step"]):
            return
        figures = self.evaluate() if self.evaluate is not None else {}
        for key in HELD_OUT_KEYS:
            self.history[key].append(float(figures.get(key, math.nan)))


class WarnIfLong(Callback):
    """Warns once, early, when the call will take longer than ``LONG_RUN_SECONDS``:
    the duration is extrapolated from the first ``LONG_RUN_PROBE_STEPS`` steps (or
    ``LONG_RUN_PROBE_SECONDS``), and the warning gives the estimate and ``advice``."""

    def __init__(self, description="training", advice=""):
        self.description = description
        self.advice = advice
        self.done = True

    def on_train_begin(self, state):
        self.start, self.start_step = time.perf_counter(), state.step
        self.total_steps = (state.end_epoch - state.epoch) * state.steps_per_epoch - state.batch
        self.done = False

    def on_step_end(self, state):
        if self.done:
            return
        steps, elapsed = state.step - self.start_step, time.perf_counter() - self.start
        if steps < LONG_RUN_PROBE_STEPS and elapsed < LONG_RUN_PROBE_SECONDS:
            return
        self.done = True
        estimate = elapsed / steps * self.total_steps
        if estimate > LONG_RUN_SECONDS:
            warnings.warn(
                f"{self.description}: {self.total_steps} steps of "
                f"{state.n_samples if state.full_batch else state.batch_size} rows "
                f"at {elapsed / steps:.2g} s each will take about {estimate / 60:.0f} "
                f"min. {self.advice}",
                UserWarning,
                stacklevel=2,
            )


class ProgressBar(Callback):
    """A tqdm bar over the epochs of the call, showing the last logged loss."""

    def __init__(self, description="training", disable=False):
        self.description = description
        self.disable = disable
        self.bar = None

    def on_train_begin(self, state):
        self.bar = tqdm(
            total=state.end_epoch - state.start_epoch,
            initial=state.epoch - state.start_epoch,
            desc=self.description,
            disable=self.disable,
            leave=False,
        )

    def on_epoch_end(self, state):
        self.bar.update(1)
        if state.loss is not None:
            self.bar.set_postfix(loss=f"{state.loss:.4g}", refresh=False)

    def on_train_end(self, state):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Checkpoint(Callback):
    """Saves everything training depends on to ``path`` every ``every`` steps (None:
    every epoch): the model's and the optimiser's ``state_dict``, the counters, the
    generator state at the start of the epoch under way, each callback's
    ``state_dict`` and ``config``, a dict describing the run (parameters, data) that
    resuming must match: a checkpoint whose ``config`` differs is refused with what
    differs.

    ``train(..., resume_from=path)`` with the arguments of the interrupted call then
    continues from there and ends with the same model as an uninterrupted call. The
    file is written to a temporary name and renamed, so an interruption while saving
    leaves the previous checkpoint intact. With ``write=False`` it writes nothing but
    still names the checkpoint's callbacks and ``config`` for resuming (the ranks of a
    data-parallel fit other than rank 0).
    """

    def __init__(self, path, every=None, config=None, write=True):
        self.path = os.fspath(path)
        self.every = every
        self.config = config
        self.write = write
        self.callbacks = ()

    @property
    def resume_path(self):
        """``path`` when a checkpoint is there (the fit resumes from it), else None: what
        ``train``'s ``resume_from`` takes."""
        return self.path if os.path.exists(self.path) else None

    def on_train_begin(self, state):
        if state.callbacks[-1] is not self:
            # It saves at on_step_end: callbacks after it would miss that step.
            raise ValueError("Checkpoint must be the last of the callbacks.")
        self.callbacks = state.callbacks
        # every=None: once per epoch.
        self._every = self.every if self.every is not None else state.steps_per_epoch

    def on_step_end(self, state):
        if self.write and state.step % self._every == 0:
            if state.batch == state.steps_per_epoch - 1:
                # The epoch's last step: save once the epoch-end callbacks (the history
                # log) have run, so that the resumed fit does not skip them.
                self.pending = True
            else:
                save_checkpoint(self.path, state, self.callbacks)

    def on_epoch_end(self, state):
        if getattr(self, "pending", False):
            self.pending = False
            save_checkpoint(self.path, state, self.callbacks, epoch_done=True)


def _callback_key(index, callback):
    return f"{index}:{type(callback).__name__}"


def save_checkpoint(path, state, callbacks, epoch_done=False):
    """Write the training state after the current step (or, with ``epoch_done``, after
    the current epoch) to ``path`` (see :class:`Checkpoint`)."""
    # Every tensor on the CPU (a copy), so that the file resumes on any device:
    # _restore loads it to the CPU and each state goes back to the device of the fit
    # that resumes it (load_state_dict of modules, optimisers and callbacks).
    payload = state_to_cpu({
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "epoch": state.epoch,
        "batch": state.batch + 1,
        "epoch_done": epoch_done,
        "epoch_generator_state": state.epoch_generator_state,
        "generator_state": None if state.generator is None else state.generator.get_state(),
        "callbacks": {
            _callback_key(i, callback): callback.state_dict()
            for i, callback in enumerate(callbacks)
        },
        "config": _checkpoint_config(callbacks),
    })
    temporary = f"{path}.tmp"
    torch.save(payload, temporary)
    os.replace(temporary, path)


def _checkpoint_config(callbacks):
    return next((c.config for c in callbacks if isinstance(c, Checkpoint)), None)


def check_checkpoint_config(path, saved, expected):
    """Raise a ``ValueError`` listing what differs between two checkpoint configs."""
    if saved is None or expected is None or saved == expected:
        return
    differences = [
        f"{key}={saved.get(key, '<unset>')!r} there, {expected.get(key, '<unset>')!r} here"
        for key in sorted(set(saved) | set(expected))
        if saved.get(key, "<unset>") != expected.get(key, "<unset>")
    ]
    raise ValueError(
        f"The checkpoint {os.fspath(path)!r} was saved by another configuration: "
        f"{'; '.join(differences)}. Resume with the same parameters and data, or delete "
        "the file (or choose another path) to start a new fit."
    )


def _restore(path, state, callbacks):
    payload = torch.load(path, map_location="cpu", weights_only=False)
    check_checkpoint_config(path, payload.get("config"), _checkpoint_config(callbacks))
    keys = [_callback_key(i, callback) for i, callback in enumerate(callbacks)]
    if sorted(keys) != sorted(payload["callbacks"]):
        raise ValueError(
            f"resume_from={path!r} was saved with the callbacks {sorted(payload['callbacks'])}, "
            f"not {sorted(keys)}: resume with the arguments of the interrupted call."
        )
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.step, state.epoch, state.batch = payload["step"], payload["epoch"], payload["batch"]
    if payload["epoch_done"]:
        # Saved after an epoch: the next epoch draws a new order.
        state.epoch, state.batch = state.epoch + 1, 0
        generator_state = payload["generator_state"]
    else:
        # Mid-epoch: draw this epoch's order again, then skip the batches done.
        generator_state = payload["epoch_generator_state"]
    if generator_state is not None:
        state.generator.set_state(generator_state)
    for key, callback in zip(keys, callbacks):
        callback.load_state_dict(payload["callbacks"][key])


def train(
    compute_gradients, data, *, optimizer, n_epochs, batch_size=None, generator=None,
    atoms=None, model=None, callbacks=(), start_step=0, start_epoch=0, resume_from=None,
    max_grad_norm=None,
):  # fmt: skip
    """Minimise a loss with ``optimizer`` for ``n_epochs`` passes over the data.

    This is the only training loop of the library. An epoch is one full-batch step when
    ``batch_size`` is None (or at least ``n_samples``), else one pass over the samples
    in shuffled minibatches. The model enters through
    ``compute_gradients(batch, with_stats) -> (codes, stats)``: it fills the ``.grad``
    of the optimised parameters for ``batch`` and when ``with_stats`` is true also
    returns the 4-vector
    ``(loss, mse, l1, l0)`` of :func:`batch_statistics` from the same forward pass
    (else ``None``). A step is that call, the optimiser step and the atoms'
    renormalisation; everything else (logging, FLOPs, resampling, progress,
    checkpoints) is a :class:`Callback`, notified in order at
    ``on_train_begin``, ``on_epoch_begin``, ``on_step_begin``, ``on_step_end``,
    ``on_epoch_end`` and ``on_train_end``.

    Parameters
    ----------
    compute_gradients : callable
        See above.
    data : int or batch source
        The number of training samples: ``batch`` is then the LongTensor of the samples'
        indices (``None`` for the full batch). Or a batch source
        (:class:`~sklearn_sparsegap._batches.TensorBatches`, ``DiskBatches``): ``batch``
        is then what its ``batches(batch_size, generator=, skip=, device=)`` yields for
        the epoch (rows, or ``(rows, target rows)``), ``skip`` being the batches a
        mid-epoch checkpoint had already done.
    optimizer : torch.optim.Optimizer
    n_epochs : int
        Epochs this call runs (fewer if a callback sets ``state.stop``).
    batch_size : int or None
    generator : torch.Generator or None
        Draws the minibatch order.
    atoms : Parameter or None
        Decoder atoms kept at unit norm (gradient projected, then renormalised each step).
    model : object with ``state_dict``/``load_state_dict`` or None
        What :class:`Checkpoint` saves and ``resume_from`` restores besides the
        optimiser.
    callbacks : sequence of Callback
    start_step, start_epoch : int
        Counters carried over from earlier calls (``partial_fit``, ``warm_start``).
    resume_from : str or path-like or None
        A :class:`Checkpoint` file of an interrupted call with these same arguments:
        restore it and continue.
    max_grad_norm : float or None
        Clip the global norm of every step's gradient (all the optimised parameters
        together, after the atoms' projection) to this value before the step.

    Returns
    -------
    state : TrainingState
        The final state (``step``, ``epoch``, ``flops``...).
    """
    source = None if isinstance(data, Integral) else data
    n_samples = int(data) if source is None else source.n_samples
    state = TrainingState(
        optimizer=optimizer, generator=generator, model=model, n_samples=n_samples,
        batch_size=batch_size, step=start_step, epoch=start_epoch,
        end_epoch=start_epoch + n_epochs, source=source,
    )  # fmt: skip
    callbacks = tuple(callbacks)
    state.callbacks = callbacks
    device = optimizer.param_groups[0]["params"][0].device
    project = atoms is not None and atoms.requires_grad
    if resume_from is not None:
        _restore(resume_from, state, callbacks)
    batches = None
    try:
        _notify(callbacks, "on_train_begin", state)
        while state.epoch < state.end_epoch and not state.stop:
            _notify(callbacks, "on_epoch_begin", state)
            batches = _epoch_batches(state, source, device)
            for batch in batches:
                _train_step(state, batch, compute_gradients, callbacks, atoms if project else None,
                            max_grad_norm)
            state.batch = 0
            _notify(callbacks, "on_epoch_end", state)
            state.epoch += 1
    except BaseException as error:
        state.error = error
        raise
    finally:
        if hasattr(batches, "close"):  # stop a source's read-ahead
            batches.close()
        _notify(callbacks, "on_train_end", state)
    return state


def _notify(callbacks, hook, state):
    """Call the method ``hook`` of every callback, in order, with ``state``."""
    for callback in callbacks:
        getattr(callback, hook)(state)


def _epoch_batches(state, source, device):
    """The batches of the epoch under way, less the ``state.batch`` already done (a
    resumed mid-epoch checkpoint): from ``source`` when given, else LongTensors of
    sample indices in an order drawn from ``state.generator`` (``[None]`` for the full
    batch). Before drawing a minibatch order it keeps the generator's state in
    ``state.epoch_generator_state``, from which a checkpoint replays the order."""
    generator = state.generator
    if source is not None:
        if generator is not None and not state.full_batch:
            state.epoch_generator_state = generator.get_state()
        return source.batches(
            None if state.full_batch else state.batch_size, generator=generator,
            skip=state.batch, device=device,
        )  # fmt: skip
    if state.full_batch:
        return [None][state.batch :]
    if generator is not None:
        state.epoch_generator_state = generator.get_state()
    order = torch.randperm(state.n_samples, generator=generator).to(device)
    return order.split(state.batch_size)[state.batch :]


def _train_step(state, batch, compute_gradients, callbacks, atoms=None, max_grad_norm=None):
    """One optimiser step on ``batch``: ``compute_gradients``, then the step; ``atoms``
    (when given) have their gradient projected on the sphere's tangent before it and
    are renormalised after it; with ``max_grad_norm`` the gradient's global norm is
    clipped to it (on the device, no host synchronisation). Notifies ``on_step_begin``
    and ``on_step_end`` and advances ``state``'s counters."""
    state.want_stats = False
    _notify(callbacks, "on_step_begin", state)
    state.codes, state.stats = compute_gradients(batch, state.want_stats)
    if atoms is not None:
        project_atom_gradients(atoms)
    if max_grad_norm is not None:  # (parameters without a gradient are skipped)
        torch.nn.utils.clip_grad_norm_(
            [p for group in state.optimizer.param_groups for p in group["params"]],
            max_grad_norm)  # fmt: skip
    state.optimizer.step()
    if atoms is not None:
        renormalize_atoms(atoms)
    state.indices = batch
    state.rows = _batch_rows(batch, state.n_samples)
    state.step += 1
    _notify(callbacks, "on_step_end", state)
    state.batch += 1


def _batch_rows(batch, n_samples):
    if batch is None:
        return n_samples
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    return batch.shape[0] if batch.ndim > 1 else batch.numel()


def history_arrays(history):
    """Convert a history of lists into the public dict of equal-length 1-D arrays."""
    return {
        key: np.asarray(values, dtype=np.int64 if key in ("step", "flops") else np.float64)
        for key, values in history.items()
    }
