"""Issue 31, a GPU we cannot see: the device handling of the library.

The tests marked ``cuda`` need a GPU (skipped without one; ``benchmarks/gpu/check.py``
runs every CUDA test of the suite on the day a GPU is there); the others check on the
CPU what is device-independent (the kept device copies of fitted weights).
"""

import pickle

import numpy as np
import pytest
import torch

from sklearn_sparsegap import GradientSparseCoder, SAEEncoder, SAEPlusITO, sparse_encode
from sklearn_sparsegap._base import _DEVICE_COPIES
from sklearn_sparsegap._batches import DiskBatches

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


def requires_cuda(test):
    return pytest.mark.cuda(
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test)
    )


CPU = torch.device("cpu")


def _X(n_rows=120, n_features=10, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).normal(size=(n_rows, n_features)).astype(dtype)


# ------------------------------------------------------------ kept device copies (finding 4)
def test_a_fitted_sae_keeps_one_device_copy_until_refit_or_set_params():
    X = _X()
    est = SAEEncoder(24, activation="topk", n_nonzero_coefs=4, max_iter=3, random_state=0,
                     device="cpu").fit(X)  # fmt: skip
    before = dict(est.__dict__)
    codes = est.transform(X)
    module = est._module(torch.float64, CPU)
    assert est._module(torch.float64, CPU) is module  # kept: no rebuild, no upload
    assert est.__dict__ == before  # transform leaves the estimator as it was
    np.testing.assert_array_equal(est.transform(X), codes)
    # One copy: another dtype replaces it.
    assert est._module(torch.float32, CPU) is not module
    assert est._module(torch.float64, CPU) is not module
    # New parameters and a new fit drop it, and transform follows them.
    module = est._module(torch.float64, CPU)
    est.set_params(n_nonzero_coefs=2)
    assert est._module(torch.float64, CPU) is not module
    assert ((est.transform(X) != 0).sum(axis=1) <= 2).all()
    module = est._module(torch.float64, CPU)
    est.set_params(n_nonzero_coefs=4).fit(X[:60])
    assert est._module(torch.float64, CPU) is not module


def test_device_copies_are_never_pickled():
    X = _X()
    est = SAEEncoder(24, max_iter=3, random_state=0, device="cpu").fit(X)
    size = len(pickle.dumps(est))
    codes = est.transform(X)
    assert "module" in _DEVICE_COPIES[est]
    assert len(pickle.dumps(est)) == size
    copy = pickle.loads(pickle.dumps(est))
    assert copy not in _DEVICE_COPIES
    np.testing.assert_array_equal(copy.transform(X), codes)


def test_sparse_coder_and_ito_keep_their_dictionary_until_it_is_replaced():
    X = _X()
    coder = GradientSparseCoder(8, alpha=0.1, max_iter=5, random_state=0, device="cpu").fit(X)
    codes = coder.transform(X)
    components = _DEVICE_COPIES[coder]["components"][2]
    coder.transform(X)
    assert _DEVICE_COPIES[coder]["components"][2] is components
    # Replaced fitted arrays (a refit, a load) are uploaded again.
    order = np.arange(8)[::-1]
    coder.components_ = coder.components_[order].copy()
    np.testing.assert_allclose(coder.transform(X), codes[:, order], atol=1e-12)
    assert _DEVICE_COPIES[coder]["components"][2] is not components

    sae = SAEEncoder(16, activation="topk", n_nonzero_coefs=3, max_iter=3, random_state=0,
                     device="cpu").fit(X)  # fmt: skip
    ito = SAEPlusITO(sae, prefit=True, device="cpu").fit(X)
    refined = ito.transform(X)
    weights = _DEVICE_COPIES[ito]["weights"][2]
    np.testing.assert_array_equal(ito.transform(X), refined)
    assert _DEVICE_COPIES[ito]["weights"][2] is weights
    assert "module" in _DEVICE_COPIES[sae]  # the encoder's own copy serves ITO too


# ------------------------------------------------------- the sparse TopK step (finding 9)
def test_the_sync_free_column_count_equals_bincount():
    from sklearn_sparsegap._modules import _column_counts

    flat = torch.randint(0, 50, (700,), generator=torch.Generator().manual_seed(0))
    expected = torch.bincount(flat, minlength=60)
    torch.testing.assert_close(_column_counts(flat, 60, sync_free=True), expected)
    torch.testing.assert_close(_column_counts(flat, 60), expected)


def test_auxk_takes_the_dead_mask_or_its_indices():
    from sklearn_sparsegap._modules import _auxk_gradients

    generator = torch.Generator().manual_seed(0)
    pre = torch.randn(20, 30, generator=generator, dtype=torch.float64)
    residual = torch.randn(20, 8, generator=generator, dtype=torch.float64)
    components = torch.randn(30, 8, generator=generator, dtype=torch.float64)
    dead = torch.zeros(30, dtype=torch.bool)
    dead[[2, 5, 11, 17, 29]] = True
    by_mask = _auxk_gradients(pre, residual, components, dead, 3, 0.5)
    by_index = _auxk_gradients(pre, residual, components, dead.nonzero().squeeze(1), 3, 0.5)
    torch.testing.assert_close(by_index[0].to_dense(), by_mask[0].to_dense(), rtol=0, atol=0)
    torch.testing.assert_close(by_index[2], by_mask[2], rtol=0, atol=0)


# ------------------------------------- bounded device memory, metrics on the device (5, 8)
# On a GPU, ``device_rows`` sizes blocks from the device's free memory; on the CPU it says
# "no limit". Patched to a small figure, the blocked paths run here on the CPU and must
# give what the whole-array path gives.
def _small_device(monkeypatch, rows=7):
    import sklearn_sparsegap._base as base
    import sklearn_sparsegap._batches as batches

    calls = []

    def fake_device_rows(device, bytes_per_row, *, free_bytes=None):
        calls.append(bytes_per_row)
        return rows

    monkeypatch.setattr(base, "device_rows", fake_device_rows)
    monkeypatch.setattr(batches, "device_rows", fake_device_rows)
    return calls


def _disk_batch_sources(monkeypatch, module):
    """The arrays ``module`` builds its ``DiskBatches`` from, as a list filled by fits."""
    sources = []
    original = module.DiskBatches

    def spy(*args, **kwargs):
        sources.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "DiskBatches", spy)
    return sources


def _fitted_coders(X):
    from sklearn_sparsegap import SAETranscoder

    sae = SAEEncoder(24, activation="topk", n_nonzero_coefs=4, max_iter=3, random_state=0,
                     device="cpu").fit(X)  # fmt: skip
    coder = GradientSparseCoder(12, fit_algorithm="omp", transform_algorithm="omp",
                                transform_n_nonzero_coefs=3, max_iter=2,
                                random_state=0).fit(X)  # fmt: skip
    ito = SAEPlusITO(encoder=sae, prefit=True).fit(X)
    transcoder = SAETranscoder(16, activation="topk", n_nonzero_coefs=3, max_iter=2,
                               random_state=0).fit(X, X[:, ::-1] * 2)  # fmt: skip
    return {"sae": sae, "sparse coder": coder, "ito": ito, "transcoder": transcoder}


def test_transform_score_and_inverse_transform_in_device_blocks_match_the_whole(monkeypatch):
    X = _X(n_rows=50)
    coders = _fitted_coders(X)
    whole = {
        name: (est.transform(X), est.inverse_transform(est.transform(X)),
               None if name == "transcoder" else est.score(X))
        for name, est in coders.items()
    }  # fmt: skip
    whole_prediction = coders["transcoder"].predict(X)
    calls = _small_device(monkeypatch)
    for name, est in coders.items():
        codes, reconstruction, score = whole[name]
        blocked = est.transform(X)
        # Same codes (a block's product may round differently in the last bit).
        np.testing.assert_allclose(blocked, codes, rtol=1e-12, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(est.inverse_transform(blocked), reconstruction,
                                   rtol=1e-12, atol=1e-12, err_msg=name)  # fmt: skip
        if score is not None:
            assert est.score(X) == pytest.approx(score, rel=1e-12), name
    np.testing.assert_allclose(coders["transcoder"].predict(X), whole_prediction, rtol=1e-12)
    assert calls  # the blocks were sized from the (patched) device memory


def test_in_memory_X_too_large_for_the_device_trains_from_host_minibatches(monkeypatch):
    import sklearn_sparsegap._autoencoder as autoencoder

    X = _X(n_rows=400, n_features=8)
    reference = SAEEncoder(16, activation="topk", n_nonzero_coefs=3, batch_size=64,
                           max_iter=10, random_state=0, device="cpu").fit(X)  # fmt: skip
    sources = _disk_batch_sources(monkeypatch, autoencoder)
    _small_device(monkeypatch, rows=100)  # 400 rows do not fit; batches of 64 do
    X_before = X.copy()
    est = SAEEncoder(16, activation="topk", n_nonzero_coefs=3, batch_size=64, max_iter=10,
                     random_state=0, device="cpu").fit(X)  # fmt: skip
    assert sources and sources[0] is X  # read from the host array, not copied whole
    np.testing.assert_array_equal(X, X_before)
    # Another batch order than the in-memory path, the same quality.
    assert est.history_["loss"][-1] == pytest.approx(reference.history_["loss"][-1], rel=0.25)
    assert np.isfinite(est.components_).all()


def test_a_full_batch_fit_is_never_streamed(monkeypatch):
    from sklearn_sparsegap._autoencoder import AutoencoderData, streamed_from_host

    _small_device(monkeypatch, rows=1)
    data = AutoencoderData(X=_X(n_rows=30))

    class Settings:
        batch_size, dtype, device = 30, torch.float64, CPU

    assert streamed_from_host(data, Settings()) is data
    Settings.batch_size = 8
    assert streamed_from_host(data, Settings()).streamed


def test_minibatch_sparse_coding_too_large_for_the_device_streams_from_host(monkeypatch):
    import sklearn_sparsegap._sparse_coding as sparse_coding

    X = _X(n_rows=300, n_features=8)
    sources = _disk_batch_sources(monkeypatch, sparse_coding)
    _small_device(monkeypatch, rows=100)
    est = GradientSparseCoder(12, fit_algorithm="omp", transform_n_nonzero_coefs=3,
                              batch_size=32, max_iter=2, random_state=0).fit(X)  # fmt: skip
    assert sources and sources[0] is X
    assert np.isfinite(est.components_).all()


def test_reconstruction_metrics_on_the_device_match_transform_then_inverse_transform():
    from sklearn.base import BaseEstimator, TransformerMixin

    from sklearn_sparsegap.activations import reconstruction_metrics

    X = _X(n_rows=60)
    sae = SAEEncoder(24, activation="topk", n_nonzero_coefs=4, max_iter=3, random_state=0,
                     device="cpu").fit(X)  # fmt: skip

    class ThroughNumpy(TransformerMixin, BaseEstimator):  # the generic path
        def transform(self, X):
            return sae.transform(X)

        def inverse_transform(self, codes):
            return sae.inverse_transform(codes)

    on_device = reconstruction_metrics(sae, X, batch_size=16)
    generic = reconstruction_metrics(ThroughNumpy(), X, batch_size=16)
    assert on_device["fvu"] == pytest.approx(generic["fvu"], rel=1e-10)
    assert on_device["mean_l0"] == generic["mean_l0"]
    np.testing.assert_array_equal(on_device["frequency"], generic["frequency"])


def test_loss_splice_of_a_coder_checks_the_width_and_keeps_the_dtype():
    from sklearn_sparsegap.activations._evaluation import _as_reconstructor

    X = _X(n_rows=40, dtype=np.float32)
    sae = SAEEncoder(24, activation="topk", n_nonzero_coefs=4, max_iter=3, random_state=0,
                     device="cpu").fit(X)  # fmt: skip
    splice = _as_reconstructor(sae)
    rows = torch.tensor(X[:5], dtype=torch.bfloat16)
    out = splice(rows)
    assert out.dtype == torch.bfloat16 and out.shape == rows.shape
    np.testing.assert_allclose(splice(torch.tensor(X[:5])).numpy(),
                               sae.inverse_transform(sae.transform(X[:5])), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="fitted on 10 features but the activations have 3"):
        splice(torch.zeros(2, 3))


# ------------------------------------------------------------------------------ CUDA only


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


@requires_cuda
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


@requires_cuda
def test_transform_keeps_one_device_copy_that_is_not_pickled():
    X = np.random.default_rng(0).normal(size=(200, 12)).astype(np.float32)
    est = SAEEncoder(n_components=24, max_iter=5, random_state=0, device="cuda").fit(X)
    first = est.transform(X)
    module = _DEVICE_COPIES[est]["module"][2]
    assert module.components.device.type == "cuda"
    np.testing.assert_array_equal(est.transform(X), first)
    assert _DEVICE_COPIES[est]["module"][2] is module
    clone = pickle.loads(pickle.dumps(est))
    assert clone not in _DEVICE_COPIES
    np.testing.assert_allclose(clone.transform(X), first, rtol=1e-5, atol=1e-6)


@requires_cuda
def test_float16_input_trains_in_float32_on_cuda():
    X = np.random.default_rng(0).normal(size=(200, 12)).astype(np.float16)
    est = SAEEncoder(n_components=24, max_iter=3, random_state=0, device="cuda").fit(X)
    assert est.components_.dtype == np.float32
    assert est.transform(X).dtype == np.float32


@requires_cuda
def test_omp_on_cuda_matches_the_cpu_with_device_sized_chunks():
    rng = np.random.default_rng(0)
    dictionary = rng.normal(size=(64, 32))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    X = rng.normal(size=(3000, 32))
    cpu = sparse_encode(X, dictionary, algorithm="omp", n_nonzero_coefs=5, device="cpu")
    gpu = sparse_encode(X, dictionary, algorithm="omp", n_nonzero_coefs=5, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-8)


@requires_cuda
def test_the_sparse_topk_step_on_cuda_matches_the_cpu_with_auxk():
    from sklearn_sparsegap._modules import SparseAutoencoderModule, sae_gradients

    grads = {}
    for device in ("cpu", "cuda"):
        module = SparseAutoencoderModule((16, 128), activation="topk", k=4).double()
        with torch.no_grad():
            for param in module.parameters():
                param.normal_(generator=torch.Generator().manual_seed(0))
        module.to(device)
        x = torch.randn(256, 16, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64).to(device)  # fmt: skip
        dead = torch.zeros(128, dtype=torch.bool, device=device)
        dead[::3] = True
        sae_gradients(module, x, 0.0, auxk=(dead, 8, 0.5), sparse=True)
        grads[device] = [p.grad.cpu() for p in module.parameters() if p.grad is not None]
    assert len(grads["cuda"]) == len(grads["cpu"]) > 0
    for a, b in zip(grads["cpu"], grads["cuda"]):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)


@requires_cuda
def test_disk_batches_upload_pinned_and_match_the_cpu_batches(tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32,
                                  shape=(1000, 8))  # fmt: skip
    X[:] = np.random.default_rng(0).normal(size=X.shape)
    X.flush()
    source = DiskBatches(np.load(tmp_path / "X.npy", mmap_mode="r"), block_rows=64,
                         buffer_rows=256)  # fmt: skip
    cpu = list(source.batches(100, generator=torch.Generator().manual_seed(0), device="cpu"))
    gpu = list(source.batches(100, generator=torch.Generator().manual_seed(0), device="cuda"))
    assert all(b.device.type == "cuda" for b in gpu)
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)
