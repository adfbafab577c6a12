"""Data-parallel fits on 2 real CPU ranks (gloo, torch.multiprocessing spawn)."""

import contextlib
import os
import pickle
import sys
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sklearn_sparsegap._autoencoder as autoencoder_module
from sklearn_sparsegap import MLPEncoder, SAEEncoder, make_sparse_dictionary_data
from sklearn_sparsegap._autoencoder import DeadLatentResampler
from sklearn_sparsegap._batches import DiskBatches, TensorBatches
from sklearn_sparsegap._distributed import RankBatches

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

# 101 rows over 2 ranks: shards of 50 and 51 (uneven on purpose).
N_SAMPLES = 101


def _data():
    X, _, _ = make_sparse_dictionary_data(N_SAMPLES, n_components=12, n_features=8,
                                          n_nonzero_coefs=2, random_state=0)  # fmt: skip
    return X


def _estimator(kind, **params):
    common = {"n_components": 12, "max_iter": 15, "random_state": 0, "device": "cpu", **params}
    if kind == "mlp":
        return MLPEncoder(hidden_layer_sizes=(8,), **common)
    return SAEEncoder(**common)


def _rank_main(rank, world_size, init_file, out_dir, job):
    sys.path.insert(0, os.path.dirname(__file__))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                world_size=world_size, timeout=_timedelta(job.get("timeout", 60)))
        if job.get("fake_version") and rank == 1:
            import sklearn_sparsegap._version

            sklearn_sparsegap._version.__version__ = "0.0.0-other"
        if job.get("die_at_step") is not None and rank == 1:
            _die_at_step(job["die_at_step"])
        result = {"fits": []}
        for fit in job["fits"]:
            X = np.load(fit["memmap"], mmap_mode="r") if fit.get("memmap") else _data()
            with _small_blocks(fit.get("small_blocks", False)):
                est = _estimator(fit["kind"], **fit.get("params", {})).fit(X)
            result["fits"].append({"components": est.components_, "history": est.history_,
                                   "encoder": est.transform(_data()),
                                   "threshold": getattr(est, "threshold_", None)})  # fmt: skip
    except BaseException as error:  # noqa: BLE001 (reported to the parent)
        result = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as file:
        pickle.dump(result, file)
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass


@contextlib.contextmanager
def _small_blocks(enabled=True):
    """Stream even this small file from disk, in 8-row blocks, 3 blocks per buffer:
    the path a large activation set takes (block order, buffers, a batch spanning two
    buffers, the smaller shard's wrap-around)."""
    import sklearn_sparsegap._batches as batches

    saved = batches.IN_MEMORY_BYTES, batches.BLOCK_BYTES, batches.BUFFER_BYTES
    if enabled:
        row_bytes = 8 * 8  # 8 float64 features
        batches.IN_MEMORY_BYTES, batches.BLOCK_BYTES, batches.BUFFER_BYTES = (
            0, 8 * row_bytes, 24 * row_bytes)
    try:
        yield
    finally:
        batches.IN_MEMORY_BYTES, batches.BLOCK_BYTES, batches.BUFFER_BYTES = saved


def _timedelta(seconds):
    from datetime import timedelta

    return timedelta(seconds=seconds)


def _die_at_step(step):
    """Make this rank exit abruptly inside its ``step``-th gradient computation."""
    import sklearn_sparsegap._distributed as module

    original = module.averaged_gradients

    def dying(group, compute_gradients, params):
        calls = {"n": 0}
        wrapped = original(group, compute_gradients, params)

        def compute(batch, with_stats):
            calls["n"] += 1
            if calls["n"] == step:
                os._exit(3)
            return wrapped(batch, with_stats)

        return compute

    module.averaged_gradients = dying
    import sklearn_sparsegap._autoencoder as autoencoder

    autoencoder.averaged_gradients = dying


def _launch(tmp_path, job, world_size=2):
    # A fresh rendezvous file and output folder per launch: a dead launch leaves both.
    out_dir = tmp_path / f"launch{len(list(tmp_path.glob('launch*')))}"
    out_dir.mkdir()
    init_file = out_dir / "init"
    # Plain processes, not mp.spawn: its join kills the survivors when one rank dies,
    # and the survivors' own error is what the failure test checks.
    context = mp.get_context("spawn")
    processes = [context.Process(target=_rank_main,
                                 args=(rank, world_size, str(init_file), str(out_dir), job))
                 for rank in range(world_size)]  # fmt: skip
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=600)
        if process.is_alive():
            process.kill()
    results = {}
    for rank in range(world_size):
        path = out_dir / f"rank{rank}.pkl"
        results[rank] = pickle.loads(path.read_bytes()) if path.exists() else None
    return results


def _assert_same_model(fit, single):
    """A rank's fitted dictionary and codes equal the single-process estimator's."""
    np.testing.assert_allclose(fit["components"], single.components_, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(fit["encoder"], single.transform(_data()), rtol=1e-8, atol=1e-10)


def test_two_ranks_equal_one_process_on_the_same_global_batches(tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, _data().astype(np.float32))
    minibatches = {"batch_size": 16, "resample_dead_every": 7, "max_iter": 3}
    # Full-batch steps: the global batch of every step is all 101 rows, split 50/51.
    # A TopK SAE with AuxK: the dead latents are tracked over both ranks' rows.
    topk = {"n_components": 64, "activation": "topk", "n_nonzero_coefs": 1, "alpha": 0.0,
            "auxk_alpha": 0.5}
    fits = [{"kind": "sae"}, {"kind": "mlp"},
            {"kind": "sae", "memmap": str(path), "params": minibatches},
            {"kind": "sae", "params": topk}]  # fmt: skip
    results = _launch(tmp_path, {"fits": fits})
    for rank in (0, 1):
        assert "error" not in results[rank], results[rank]
    for index, kind, params in [(0, "sae", {}), (1, "mlp", {}), (3, "sae", topk)]:
        single = _estimator(kind, **params).fit(_data())
        for rank in (0, 1):
            fit = results[rank]["fits"][index]
            _assert_same_model(fit, single)
            np.testing.assert_allclose(fit["history"]["loss"], single.history_["loss"],
                                       rtol=1e-9)  # fmt: skip
            np.testing.assert_array_equal(fit["history"]["dead_fraction"],
                                          single.history_["dead_fraction"])  # fmt: skip
    # Minibatches streamed from a memmap, with resampling: both ranks stay identical.
    first, second = (results[rank]["fits"][2] for rank in (0, 1))
    np.testing.assert_array_equal(first["components"], second["components"])
    # 51 rows per rank at most: ceil(51 / 16) = 4 steps per epoch on each rank.
    assert first["history"]["step"][-1] == 12
    assert first["components"].dtype == np.float32


def test_batchtopk_ranks_keep_one_global_threshold(tmp_path):
    # Each rank sees its own share of the batch; the threshold's running estimate moves
    # towards the smallest kept code over every rank's share, so the ranks end with one
    # threshold and encode alike (without the all-reduce each rank kept its own).
    params = {"n_components": 24, "activation": "batchtopk", "n_nonzero_coefs": 2,
              "alpha": 0.0, "batch_size": 16, "max_iter": 3}
    results = _launch(tmp_path, {"fits": [{"kind": "sae", "params": params}]})
    for rank in (0, 1):
        assert "error" not in results[rank], results[rank]
    first, second = (results[rank]["fits"][0] for rank in (0, 1))
    assert np.isfinite(first["threshold"]).all()
    np.testing.assert_array_equal(first["threshold"], second["threshold"])
    np.testing.assert_array_equal(first["components"], second["components"])
    np.testing.assert_array_equal(first["encoder"], second["encoder"])


def test_mismatched_library_versions_raise_on_every_rank(tmp_path):
    results = _launch(tmp_path, {"fits": [{"kind": "sae"}], "fake_version": True})
    for rank in (0, 1):
        assert "different library versions" in results[rank]["error"]
        assert "rank 1: sklearn_sparsegap 0.0.0-other" in results[rank]["error"]


def test_a_failing_rank_stops_the_others_with_a_clear_error(tmp_path):
    checkpoint = tmp_path / "fit.ckpt"
    params = {"batch_size": 16, "max_iter": 4, "checkpoint_path": str(checkpoint),
              "checkpoint_every": 2}  # fmt: skip
    results = _launch(tmp_path, {"fits": [{"kind": "sae", "params": params}],
                                 "die_at_step": 6, "timeout": 20})  # fmt: skip
    assert results[1] is None  # it died without a word
    error = results[0]["error"]
    assert "rank 0 of 2 could not all-reduce the gradients" in error, results[0]
    # Rank 0's last checkpoint (step 4) is whole: it loads and names its step.
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert payload["step"] == 4


class _GlobalBatches:
    """What one process sees of a 2-rank fit: every step's batch is the concatenation
    of the ranks' batches (rank 0's rows first), each rank's drawn exactly as that
    rank draws it (its own shard source, wrapped in RankBatches, from a copy of the
    training generator: the ranks' generators start equal and stay in step)."""

    def __init__(self, X, target=None, *, dtype=None, shard=None, kind="disk"):
        assert shard is None
        self.full = DiskBatches(X, target, dtype=dtype)
        self.n_samples = self.full.n_samples
        if kind == "disk":
            self.ranks = [RankBatches(DiskBatches(X, target, dtype=dtype, shard=(rank, 2)), rank)
                          for rank in range(2)]  # fmt: skip
        else:
            rows = torch.from_numpy(np.array(X)).to(dtype)
            self.ranks = [RankBatches(TensorBatches(rows, shard=(rank, 2)), rank)
                          for rank in range(2)]  # fmt: skip

    def n_batches(self, batch_size):
        counts = {source.n_batches(batch_size) for source in self.ranks}
        assert len(counts) == 1  # every rank makes as many steps
        return counts.pop()

    def sample(self, n_rows, device=None):
        return self.full.sample(n_rows, device)

    def batches(self, batch_size, *, generator=None, skip=0, device=None):
        start = generator.get_state()
        streams = []
        for source in self.ranks:
            copy = torch.Generator()
            copy.set_state(start)
            streams.append(source.batches(batch_size, generator=copy, skip=skip, device=device))
        generator.set_state(copy.get_state())
        for pieces in zip(*streams, strict=True):
            yield torch.cat(pieces)


def _one_process_on_global_batches(monkeypatch, path, kind, estimator_kind, params):
    """The single-process fit on the 2-rank fit's global batches (streamed from the
    file, as the union of what each rank reads)."""
    resampled = []
    original = DeadLatentResampler.__call__

    def counting(self, dead):
        resampled.append(int(dead.sum()))
        return original(self, dead)

    with monkeypatch.context() as patch:
        patch.setattr(autoencoder_module, "DiskBatches",
                      lambda *args, **kwargs: _GlobalBatches(*args, kind=kind, **kwargs))
        patch.setattr(DeadLatentResampler, "__call__", counting)
        with _small_blocks():
            est = _estimator(estimator_kind, **params).fit(np.load(path, mmap_mode="r"))
    est.resampled_ = resampled  # latents resampled at each resampling
    return est


def test_minibatch_ranks_equal_one_process_on_the_same_global_batches(tmp_path, monkeypatch):
    # 101 rows: shards of 50 and 51 rows, 4 batches of 16 per epoch on each rank (the
    # 50-row shard repeats one row); TopK with k=1 leaves latents dead, resampled every
    # 3 steps (dead: not fired on the last 2 steps): they must be counted over the global
    # batch, as one process counts them.
    path = tmp_path / "X.npy"
    np.save(path, _data())
    params = {"batch_size": 16, "max_iter": 4, "resample_dead_every": 3, "dead_window": 32,
              "activation": "topk", "n_nonzero_coefs": 1}  # fmt: skip
    fits = [
        # Streamed from disk (DiskBatches shards), in memory (TensorBatches shards).
        {"kind": "sae", "memmap": str(path), "small_blocks": True, "params": params},
        {"kind": "sae", "params": params},
        {"kind": "mlp", "params": {"batch_size": 16, "max_iter": 4}},
    ]
    results = _launch(tmp_path, {"fits": fits})
    for rank in (0, 1):
        assert "error" not in results[rank], results[rank]
    references = [
        _one_process_on_global_batches(monkeypatch, path, "disk", "sae", params),
        _one_process_on_global_batches(monkeypatch, path, "memory", "sae", params),
        _one_process_on_global_batches(monkeypatch, path, "memory", "mlp", fits[2]["params"]),
    ]
    for index, single in enumerate(references):
        assert single.history_["step"][-1] == 16
        for rank in (0, 1):
            fit = results[rank]["fits"][index]
            _assert_same_model(fit, single)
            for key in ("loss", "dead_fraction"):
                np.testing.assert_allclose(fit["history"][key], single.history_[key],
                                           rtol=1e-9, atol=1e-12)  # fmt: skip
    # Latents were dead at a log and resampled (else the dead-latent part would test nothing).
    assert np.max(references[0].history_["dead_fraction"]) > 0
    assert sum(references[0].resampled_) > 0 and sum(references[1].resampled_) > 0


def test_resume_with_uneven_shards_equals_the_uninterrupted_fit(tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, _data())
    params = {"batch_size": 16, "max_iter": 5, "resample_dead_every": 2,
              "activation": "topk", "n_nonzero_coefs": 1, "checkpoint_every": 3}  # fmt: skip

    def job(checkpoint, **extra):
        fit = {"kind": "sae", "memmap": str(path), "small_blocks": True,
               "params": {**params, "checkpoint_path": str(checkpoint)}}  # fmt: skip
        return {"fits": [fit], **extra}

    # Rank 1 dies in step 11; rank 0's last checkpoint is after step 9, the first step
    # of the third epoch: the ranks' shuffles after two epochs of 50 and 51 rows.
    interrupted = tmp_path / "interrupted.ckpt"
    results = _launch(tmp_path, job(interrupted, die_at_step=11, timeout=20))
    assert results[1] is None and "error" in results[0]
    assert torch.load(interrupted, map_location="cpu", weights_only=False)["step"] == 9
    resumed = _launch(tmp_path, job(interrupted))
    uninterrupted = _launch(tmp_path, job(tmp_path / "fresh.ckpt"))
    for rank in (0, 1):
        assert "error" not in resumed[rank], resumed[rank]
        expected, got = uninterrupted[rank]["fits"][0], resumed[rank]["fits"][0]
        np.testing.assert_allclose(got["components"], expected["components"], rtol=1e-12)
        np.testing.assert_allclose(got["history"]["loss"], expected["history"]["loss"],
                                   rtol=1e-12)  # fmt: skip
        assert got["history"]["step"][-1] == 20


def test_a_checkpoint_resumes_only_on_as_many_ranks(tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, _data())
    checkpoint = tmp_path / "fit.ckpt"
    params = {"batch_size": 16, "max_iter": 1, "checkpoint_path": str(checkpoint)}
    single = _estimator("sae", **params).fit(np.load(path))
    assert checkpoint.exists() and single.history_["step"][-1] == 7
    results = _launch(tmp_path, {"fits": [{"kind": "sae", "memmap": str(path),
                                           "params": params}]})  # fmt: skip
    for rank in (0, 1):
        assert "world_size='<unset>' there, 2 here" in results[rank]["error"]
