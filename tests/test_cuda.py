"""CUDA-only tests of issue 31 (skipped without a GPU; ``benchmarks/gpu/check.py`` runs
every CUDA test of the suite on the day a GPU is there)."""

import numpy as np
import pytest
import torch

from sklearn_sparsegap._training import (
    Callback,
    Checkpoint,
    CountFlops,
    DeadLatents,
    LogHistory,
    batch_statistics,
    make_adam,
    train,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


class _Interrupt(Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, state):
        if state.step == self.at_step:
            raise KeyboardInterrupt


def _run(device, callbacks, resume_from=None):
    """A tiny quadratic fit (``w`` towards the rows' mean) on ``device`` with a history,
    a dead-latent tracker and fused Adam: every state a checkpoint holds."""
    X = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X = X.to(device)
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64, device=device))
    model = torch.nn.ParameterDict({"w": w})
    optimizer = make_adam([w], 0.1)

    def compute(indices, with_stats):
        batch = X[indices]
        w.grad = None
        residual = w - batch
        loss = 0.5 * residual.square().sum(dim=1).mean()
        loss.backward()
        return batch, batch_statistics(loss, residual, batch) if with_stats else None

    history = LogHistory()
    train(compute, 9, optimizer=optimizer, n_epochs=4, batch_size=3, model=model,
          generator=torch.Generator().manual_seed(0),
          callbacks=[CountFlops(lambda rows: rows), history, DeadLatents(3, 6, device=device),
                     *callbacks],
          resume_from=resume_from)  # fmt: skip
    return w.detach().cpu(), history.history


@pytest.mark.parametrize("resume_device", ["cuda", "cpu"])
def test_a_mid_epoch_checkpoint_saved_on_cuda_resumes_on_cuda_and_on_cpu(tmp_path, resume_device):
    # Finding 3: the history's sums were saved as CUDA tensors and restored on the CPU.
    whole, whole_history = _run("cuda", [])
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        _run("cuda", [_Interrupt(5), Checkpoint(path, every=4)])  # saved after step 4: mid-epoch
    resumed, history = _run(resume_device, [_Interrupt(-1), Checkpoint(path, every=4)],
                            resume_from=path)  # fmt: skip
    torch.testing.assert_close(resumed, whole)
    assert history["step"] == whole_history["step"]
    np.testing.assert_allclose(history["loss"], whole_history["loss"], rtol=1e-6)
