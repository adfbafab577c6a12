"""Data-parallel training under ``torch.distributed``: what a fit does differently per rank.

When a default process group is initialised (by ``torchrun`` + ``init_process_group``, or
by the user's own launcher) with more than one rank, ``SAEEncoder.fit`` and
``MLPEncoder.fit`` train data-parallel: every rank reads its own contiguous shard of the
rows (uneven shards allowed), computes the gradients of its minibatch, and the gradients
are summed over ranks weighted by each rank's number of rows, so a step follows the
gradient of the union of the ranks' minibatches (exactly what one process would compute
on that union). The initial model is broadcast from rank 0, only rank 0 writes
checkpoints, and library versions are compared across ranks before anything else.

The gradients are all-reduced explicitly rather than by wrapping the module in
``DistributedDataParallel``: the ReLU/TopK encoders compute analytic gradients without
autograd, which DDP's hooks would never see.
"""

import os

import torch


class ProcessGroup:
    """The default process group as a fit sees it: ``rank``, ``world_size``, ``shard``."""

    def __init__(self, rank, world_size):
        self.rank = rank
        self.world_size = world_size

    @property
    def shard(self):
        return (self.rank, self.world_size)

    def collective(self, what, function, *args, **kwargs):
        """Run a collective; if a peer died or timed out, say so in the error."""
        try:
            return function(*args, **kwargs)
        except RuntimeError as error:
            raise RuntimeError(
                f"torch.distributed: rank {self.rank} of {self.world_size} could not "
                f"{what}: another rank failed, exited or timed out ({error}). Every rank "
                "stops; a checkpoint written by rank 0 (checkpoint_path) is intact and "
                "a new launch resumes from it."
            ) from error


def current_group():
    """The default process group if one is initialised with 2+ ranks, else None."""
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return None
    world_size = distributed.get_world_size()
    if world_size < 2:
        return None
    return ProcessGroup(distributed.get_rank(), world_size)


def library_versions():
    """The versions every rank must agree on."""
    import numpy
    import sklearn

    from ._version import __version__

    return {
        "sklearn_sparsegap": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
    }


def check_versions(group, versions=None):
    """Raise on every rank if any rank runs other library versions than rank 0."""
    versions = library_versions() if versions is None else versions
    gathered = [None] * group.world_size
    group.collective("gather the library versions", torch.distributed.all_gather_object,
                     gathered, versions)  # fmt: skip
    differing = {
        rank: {name: (gathered[0].get(name), version) for name, version in other.items()
               if gathered[0].get(name) != version}
        for rank, other in enumerate(gathered)
    }  # fmt: skip
    differing = {rank: names for rank, names in differing.items() if names}
    if differing:
        detail = "; ".join(
            f"rank {rank}: " + ", ".join(f"{name} {mine} (rank 0: {theirs})"
                                         for name, (theirs, mine) in names.items())
            for rank, names in sorted(differing.items())
        )  # fmt: skip
        raise RuntimeError(
            f"torch.distributed: the ranks run different library versions ({detail}); "
            "install the same versions everywhere before training data-parallel."
        )


def rank_device(device):
    """``"auto"``/``"cuda"`` pinned to the rank's local GPU (``LOCAL_RANK``) when CUDA
    is available: one process per device. An explicit ``"cuda:N"`` or ``"cpu"`` is kept."""
    if str(device) in ("auto", "cuda") and torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", torch.distributed.get_rank()))
        device = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    return device


def broadcast_module(group, module):
    """Every rank starts from rank 0's parameters and buffers."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            group.collective("receive the initial model from rank 0",
                             torch.distributed.broadcast, tensor, 0)  # fmt: skip


def _batch_rows(batch):
    rows = batch[0] if isinstance(batch, (tuple, list)) else batch
    return rows.shape[0]


def averaged_gradients(group, compute_gradients, params):
    """Wrap ``compute_gradients(batch, with_stats)`` so that the ``.grad`` it fills, and
    the statistics it returns, are the row-weighted means over all ranks' batches (the
    codes stay the rank's own; which latents fired is reduced by ``active_reducer``)."""

    def compute(batch, with_stats):
        codes, stats = compute_gradients(batch, with_stats)
        rows = _batch_rows(batch)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # One flat buffer, one all-reduce per step: the row count rides along.
        flat = torch.cat([g.reshape(-1) * rows for g in grads]
                         + [torch.tensor([float(rows)], dtype=grads[0].dtype,
                                         device=grads[0].device)])  # fmt: skip
        if with_stats:
            flat = torch.cat([flat, stats.to(flat.dtype) * rows])
        group.collective("all-reduce the gradients", torch.distributed.all_reduce, flat)
        n_stats = stats.numel() if with_stats else 0
        total = flat[-1 - n_stats]
        at = 0
        for param, grad in zip(params, grads):
            size = grad.numel()
            param.grad = (flat[at : at + size] / total).view_as(grad)
            at += size
        if with_stats:
            stats = (flat[-n_stats:] / total).to(stats.dtype)
        return codes, stats

    return compute


class RankBatches:
    """A rank's batch source whose shuffling keeps every rank's generator in step.

    Each epoch draws one seed from the training generator (the same draw on every
    rank, whatever the size of its shard) and shuffles the rank's shard with a
    generator seeded by that seed and the rank. Shuffling the shard with the training
    generator itself would advance it by an amount that depends on the shard's size:
    with uneven shards the ranks' generators would drift apart, and rank 0's
    checkpoint (the only one written) would resume the other ranks on other orders.
    """

    def __init__(self, source, rank):
        self.source, self.rank = source, rank
        self.n_samples = source.n_samples

    def n_batches(self, batch_size):
        return self.source.n_batches(batch_size)

    def sample(self, *args, **kwargs):
        return self.source.sample(*args, **kwargs)

    def batches(self, batch_size, *, generator=None, skip=0, device=None):
        # The seed is drawn now, not when iteration starts.
        return self.source.batches(batch_size, generator=rank_generator(generator, self.rank),
                                   skip=skip, device=device)  # fmt: skip


def rank_generator(generator, rank):
    """The epoch's shuffling generator of ``rank``: one draw from ``generator``."""
    if generator is None:
        return None
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator().manual_seed(seed + rank)


def active_reducer(group):
    """``reduce(active, rows)`` for ``DeadLatents``: the latents active on any rank's
    batch and the rows of all ranks' batches, so that every rank tracks the same dead
    latents (the AuxK loss and resampling then agree)."""

    def reduce(active, rows):
        flat = torch.cat([active.to(torch.float64),
                          torch.tensor([float(rows)], dtype=torch.float64, device=active.device)])
        group.collective("all-reduce the active latents", torch.distributed.all_reduce, flat)
        return flat[:-1] > 0, int(flat[-1])

    return reduce


def minimum_reducer(group):
    """``reduce(value)``: a tensor's minimum over every rank, for a statistic each rank
    estimates from its own batch that all must agree on (a BatchTopK SAE's global
    threshold moves towards the smallest kept code of the global batch, not of each
    rank's share)."""

    def reduce(value):
        flat = value.reshape(1).clone()
        group.collective("agree on the BatchTopK threshold", torch.distributed.all_reduce,
                         flat, op=torch.distributed.ReduceOp.MIN)  # fmt: skip
        return flat.reshape(value.shape)

    return reduce


def broadcast_after(group, module, optimizer):
    """After a step that changed rank 0's model outside the gradients (dead-latent
    resampling draws from rank 0's rows), copy its parameters and Adam moments to all."""
    broadcast_module(group, module)
    with torch.no_grad():
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    group.collective("receive the resampled model from rank 0",
                                     torch.distributed.broadcast, value, 0)  # fmt: skip


def sync_after_resampling(group, module, optimizer, every):
    """A training callback (after ``ResampleDeadLatents``) applying ``broadcast_after``
    at every resampling step."""
    from ._training import Callback

    class SyncAfterResampling(Callback):
        def on_step_end(self, state):
            if state.step % every == 0:
                broadcast_after(group, module, optimizer)

    return SyncAfterResampling()
