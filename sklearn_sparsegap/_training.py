"""The library objective and the one training loop shared by every gradient-trained model."""

import contextlib
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ._torch_utils import serial_if_small

__all__ = [
    "HISTORY_KEYS",
    "make_adam",
    "objective",
    "cosine_loss",
    "project_atom_gradients",
    "renormalize_atoms",
    "train",
]

HISTORY_KEYS = ("step", "loss", "mse", "l1", "l0", "dead_fraction", "flops")

# Full-batch training logs (and checks tol) every this many steps; minibatch training
# logs once per epoch.
_FULL_BATCH_LOG_EVERY = 10
# tol compares the loss now with the loss this many logs ago (100 full-batch steps).
_FULL_BATCH_TOL_WINDOW = 10


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


class _Log:
    """Accumulates per-step statistics between two log points without syncing."""

    def __init__(self):
        self.sums = None
        self.active = None
        self.n_steps = 0

    def add(self, stats, active):
        if self.sums is None:
            self.sums, self.active = stats.clone(), active
        else:
            self.sums += stats
            self.active |= active
        self.n_steps += 1

    def flush(self):
        loss, mse, l1, l0 = (self.sums / self.n_steps).tolist()
        dead = 1.0 - self.active.to(torch.float64).mean().item()
        self.sums, self.active, self.n_steps = None, None, 0
        return loss, mse, l1, l0, dead


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


def train(
    compute_gradients,
    n_samples,
    *,
    optimizer,
    max_iter,
    batch_size=None,
    tol=0.0,
    generator=None,
    atoms=None,
    step_flops=0,
    history=None,
    start_step=0,
    start_flops=0,
    resample=None,
    resample_every=None,
    verbose=0,
    description="training",
):
    """Minimise a loss with ``optimizer`` over full or shuffled minibatches.

    This is the only training loop of the library. The model enters through
    ``compute_gradients(indices, with_stats) -> (codes, stats)``: it fills the ``.grad``
    of the optimised parameters for the samples ``indices`` (a LongTensor, or ``None`` for
    the full batch), by autograd or analytically, and when ``with_stats`` is true also
    returns the 4-vector ``(loss, mse, l1, l0)`` of :func:`batch_statistics` from the same
    forward pass (else ``None``). Statistics are only requested at log points on the full
    batch, so a step stays a handful of tensor operations.

    Parameters
    ----------
    compute_gradients : callable
        See above.
    n_samples : int
        Number of training samples.
    optimizer : torch.optim.Optimizer
    max_iter : int
        Full-batch steps when ``batch_size`` is None (or >= ``n_samples``), else epochs.
    batch_size : int or None
    tol : float
        Stop when the lowest logged loss improved by less than ``tol`` (relative) over the
        last window (100 steps full batch, one epoch with minibatches). 0 disables it.
    generator : torch.Generator
        Draws the minibatch order.
    atoms : Parameter or None
        Decoder atoms kept at unit norm (gradient projected, then renormalised each step).
    step_flops : callable
        FLOPs of one step as a function of the batch size.
    history : dict of lists or None
        Appended to in place (keys ``HISTORY_KEYS``).
    start_step, start_flops : int
        Counters carried over from earlier calls (``partial_fit``).
    resample : callable or None
        ``resample(dead_mask)`` reinitialises dead latents; called every
        ``resample_every`` steps with the latents that never fired since the last call.
    verbose : int
        Show a tqdm progress bar with the current loss.
    description : str
        Progress bar label and error-message subject.

    Returns
    -------
    n_iter : int
        Iterations (steps or epochs) run.
    n_steps : int
        Optimiser steps run.
    flops : int
        Training FLOPs of this call.
    """
    history = {key: [] for key in HISTORY_KEYS} if history is None else history
    full_batch = batch_size is None or batch_size >= n_samples
    log_every = _FULL_BATCH_LOG_EVERY if full_batch else 1
    window = _FULL_BATCH_TOL_WINDOW if full_batch else 1
    learning_rate = optimizer.param_groups[0]["lr"]
    device = optimizer.param_groups[0]["params"][0].device
    project = atoms is not None and atoms.requires_grad
    log = _Log()

    step, flops, n_iter = start_step, 0, 0
    fired = None
    best = []
    progress = tqdm(total=max_iter, desc=description, disable=not verbose, leave=False)
    rows_per_step = n_samples if full_batch else batch_size
    with contextlib.ExitStack() as stack:
        # A step's forward and backward passes are about six products of similar size;
        # the size of one product decides whether a second thread helps.
        stack.enter_context(serial_if_small(device, step_flops(rows_per_step) // 6))
        stack.callback(progress.close)
        for iteration in range(max_iter):
            last = iteration == max_iter - 1
            logging = full_batch and ((iteration + 1) % log_every == 0 or last)
            if full_batch:
                batches = [None]
            else:
                order = torch.randperm(n_samples, generator=generator).to(device)
                batches = order.split(batch_size)
            for indices in batches:
                codes, stats = compute_gradients(indices, logging or not full_batch)
                if project:
                    project_atom_gradients(atoms)
                optimizer.step()
                if project:
                    renormalize_atoms(atoms)
                flops += step_flops(n_samples if indices is None else indices.numel())
                step += 1
                if stats is not None or resample is not None:
                    active = active_latents(codes.detach())
                if stats is not None:
                    log.add(stats, active)
                if resample is not None:
                    fired = active if fired is None else fired | active
                    if step % resample_every == 0:
                        if not bool(fired.all()):
                            resample(~fired)
                        fired = None
            n_iter += 1
            progress.update(1)
            if log.n_steps == 0 or (full_batch and not logging):
                continue
            values = log.flush()
            if not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"{description} diverged at step {step}: the loss is {values[0]}. "
                    f"Lower learning_rate (currently {learning_rate:g}) or scale X."
                )
            for key, value in zip(HISTORY_KEYS, (step, *values, start_flops + flops)):
                history[key].append(value)
            # The running minimum: Adam's loss oscillates, and a noisy uptick must not
            # read as convergence.
            best.append(min(values[0], best[-1]) if best else values[0])
            progress.set_postfix(loss=f"{values[0]:.4g}", refresh=False)
            if tol > 0 and len(best) > window:
                previous = best[-window - 1]
                if previous - best[-1] < tol * abs(previous):
                    break
    return n_iter, step - start_step, flops


def history_arrays(history):
    """Convert a history of lists into the public dict of equal-length 1-D arrays."""
    return {
        key: np.asarray(values, dtype=np.int64 if key in ("step", "flops") else np.float64)
        for key, values in history.items()
    }
