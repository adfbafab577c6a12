"""Data-parallel fits on 2 real CPU ranks (gloo, torch.multiprocessing spawn)."""

import os
import pickle
import sys
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sklearn_sparsegap import MLPEncoder, SAEEncoder, make_sparse_dictionary_data

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
            import sklearn_sparsegap

            sklearn_sparsegap.__version__ = "0.0.0-other"
        if job.get("die_at_step") is not None and rank == 1:
            _die_at_step(job["die_at_step"])
        result = {"fits": []}
        for fit in job["fits"]:
            X = np.load(fit["memmap"], mmap_mode="r") if fit.get("memmap") else _data()
            est = _estimator(fit["kind"], **fit.get("params", {})).fit(X)
            result["fits"].append({"components": est.components_, "history": est.history_,
                                   "encoder": est.transform(_data())})  # fmt: skip
    except BaseException as error:  # noqa: BLE001 (reported to the parent)
        result = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as file:
        pickle.dump(result, file)
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass


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
    import sklearn_sparsegap._sae as sae

    sae.averaged_gradients = dying


def _launch(tmp_path, job, world_size=2):
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    init_file = tmp_path / "init"
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
            np.testing.assert_allclose(fit["components"], single.components_,
                                       rtol=1e-9, atol=1e-11)  # fmt: skip
            np.testing.assert_allclose(fit["encoder"], single.transform(_data()),
                                       rtol=1e-8, atol=1e-10)  # fmt: skip
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
