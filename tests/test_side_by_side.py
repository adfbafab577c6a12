"""The side-by-side harness of the peers (benchmarks/peers/side_by_side.py) and the peers'
trainers behind it (benchmarks/_bench/peer_saes.py): the settings a unit names are the
ones its trainer runs with, units resume, the L1 sweep feeds the penalty grid, and the
record holds tables (a) and (b)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

# Found, not imported: _bench.peer_saes turns sparsify's GPU-only Triton decoder off
# before sparsify's first import.
for peer in ("sae_lens", "sparsify", "dictionary_learning"):
    if importlib.util.find_spec(peer) is None:
        pytest.skip(f"{peer} is in the benchmark extra", allow_module_level=True)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS / "peers")]
from _bench.peer_saes import DictionaryLearningSAE, SparsifySAE, shuffled_batches  # noqa: E402
import side_by_side  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(32, 8))

    def rows(n):
        codes = rng.exponential(size=(n, 32)) * (rng.random((n, 32)) < 0.1)
        return (codes @ atoms + 2.0).astype(np.float32)

    folder = tmp_path_factory.mktemp("side_by_side")
    np.save(folder / "train.npy", rows(9000))  # one batch of dictionary_learning's 8,192
    np.save(folder / "test.npy", rows(512))
    return folder


def test_shuffled_batches_reshuffle_each_epoch_and_drop_the_last_incomplete_batch():
    import torch

    X = torch.arange(10)[:, None]
    batches = list(shuffled_batches(X, 4, 2, seed=0))
    assert len(batches) == 4 and all(len(b) == 4 for b in batches)
    first, second = torch.cat(batches[:2]).ravel(), torch.cat(batches[2:]).ravel()
    assert len(set(first.tolist())) == 8 and not torch.equal(first, second)


def test_peer_wrappers_train_with_the_settings_they_are_given(data):
    X = np.load(data / "train.npy")
    sparsify = SparsifySAE(32, k=3, batch_size=512, sequence_length=64, epochs=2,
                           lr_warmup_steps=3, auxk_alpha=1 / 32,
                           dead_feature_threshold=4096).fit(X)  # fmt: skip
    # 140 sequences of 64 rows an epoch, 8 a step; sparsify also steps on the last 3
    assert sparsify.n_steps_ == -(-2 * (9000 // 64) // 8)
    assert sparsify.rows_seen_ == 2 * (9000 // 64) * 64
    assert sparsify.settings_["lr_warmup_steps"] == 3
    assert sparsify.settings_["auxk_alpha"] == 1 / 32
    assert sparsify.settings_["dead_feature_threshold"] == 4096
    codes = sparsify.transform(X[:50])
    assert (np.count_nonzero(codes, axis=1) <= 3).all()
    dl = DictionaryLearningSAE(32, k=3, batch_size=512, epochs=2, warmup_steps=2,
                               dead_feature_threshold=4096).fit(X)  # fmt: skip
    assert dl.settings_["warmup_steps"] == 2 and dl.settings_["dead_feature_threshold"] == 4096
    assert np.isfinite(dl.inverse_transform(dl.transform(X[:50]))).all()
    with pytest.raises(AssertionError, match="warmup_steps"):  # its own refusal, kept
        DictionaryLearningSAE(32, k=3, batch_size=512, epochs=1).fit(X)


def _run(data, out, *extra):
    side_by_side.main([
        "--train", str(data / "train.npy"), "--test", str(data / "test.npy"),
        "--out", str(out), "--name", "toy", "--seeds", "0", "--epochs", "1", "--k", "3",
        "--batch", "512", *extra,
    ])  # fmt: skip


def test_topk_units_of_every_library_recorded_and_resumed(data, tmp_path):
    record = tmp_path / "record.json"
    args = ("--families", "topk", "--lr-factors", "1", "--record", str(record))
    _run(data, tmp_path / "units", *args)
    result = json.loads(record.read_text())
    units = {(u["library"], u["setting"]): u for u in result["units"]}
    assert set(units) == {(lib, s) for lib in side_by_side.LIBRARIES["topk"]
                          for s in ("defaults", "tuned")}  # fmt: skip
    # dictionary_learning refuses a run shorter than its 1,000 warm-up steps: recorded
    assert "warmup_steps" in units["dictionary_learning", "defaults"]["default_refused"]
    for unit in result["units"]:
        assert 0 < unit["fvu"] < 2 and unit["l0"] <= 3 + 1e-9 and unit["rows_per_second"] > 0
    assert units["saelens", "tuned"]["settings"] is not None
    assert "(a)" in result["tables"][0] and "(b)" in result["tables"][1]
    assert "DATA_DIR/" in result["command"] and str(tmp_path) not in result["command"]
    # a second run finds every unit done and fits nothing
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "units" / "units").iterdir()}
    _run(data, tmp_path / "units", *args)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "units" / "units").iterdir()}
    assert before == after


def test_l1_penalties_follow_the_best_factor_of_the_middle_penalty_sweep(data, tmp_path):
    class Args:
        families, libraries, settings = ["l1"], ["ours"], ["tuned"]
        seeds, epochs, lr_factors = [0], [1], [0.5, 1, 2]
        alphas, l1, n_components = [0.1, 0.3, 1.0], [1.0], 32

    first = side_by_side.plan(Args, [])
    assert [u["penalty"] for u in first] == [0.3, 0.3, 0.3]  # the sweep comes first
    done = [dict(u, fvu=fvu) for u, fvu in zip(first, [0.5, 0.4, 0.45])]
    then = side_by_side.plan(Args, done)
    rest = [u for u in then if u["penalty"] != 0.3]
    assert {u["penalty"] for u in rest} == {0.1, 1.0}
    assert {u["lr_factor"] for u in rest} == {1}  # the factor of the lowest FVU


def test_each_family_maps_to_the_peers_own_architecture_and_settings():
    class Args:
        n_components, k, batch = 64, 4, 512
        matryoshka_fractions, alphas, l1 = [0.0625, 0.25], [0.1, 1.0], [1.0, 10.0]

    def estimator(family, library, setting="tuned", penalty=None):
        unit = dict(family=family, library=library, setting=setting, epochs=2, seed=0,
                    lr=None, penalty=penalty)  # fmt: skip
        return side_by_side.make_estimator(unit, 4096, Args)

    saelens = estimator("matryoshka", "saelens")
    assert saelens.architecture == "matryoshka_batchtopk" and saelens.matryoshka_widths == [4, 16]
    assert saelens.b_dec_init == "mean"  # tuned: SAELensSAE.tuned
    dl = estimator("matryoshka", "dictionary_learning")
    assert dl.trainer == "matryoshka_batchtopk"
    assert dl.trainer_options["group_fractions"] == [4 / 64, 12 / 64, 48 / 64]
    assert dl.trainer_options["threshold_start_step"] == 16 // 20 == dl.warmup_steps
    assert dl.dead_feature_threshold == 4096  # one epoch of rows
    ours = estimator("matryoshka", "ours")
    assert ours.matryoshka_prefixes == (4, 16) and ours.activation == "batchtopk"
    # gated: dictionary_learning's l1_penalty is twice our alpha (the same objective)
    assert side_by_side.penalty_grids(Args)["dictionary_learning"] == [0.2, 2.0]
    gated = estimator("gated", "dictionary_learning", "defaults", penalty=0.2)
    assert gated.trainer == "gated" and gated.trainer_options == {"l1_penalty": 0.2}
    assert gated.warmup_steps is None  # (a): its own 1,000 steps
    assert estimator("gated", "saelens", "defaults", penalty=10.0).l1_coefficient == 10.0
    assert estimator("coding", "saelens").architecture == "matching_pursuit"


def test_each_wrapper_saves_what_load_sae_reads_as_the_same_sae(data, tmp_path):
    from _bench.saelens import SAELensSAE

    from sklearn_sparsegap.interop import load_sae

    X = np.load(data / "train.npy")
    sequences = np.arange(4096).reshape(-1, 64)
    sequences[:, 0] = -1  # left out, as a store's attention sinks
    fitted = {
        "saelens": SAELensSAE(32, k=3, batch_size=512, epochs=1).fit(X),
        "sparsify": SparsifySAE(32, k=3, batch_size=512, lr_warmup_steps=1).fit(
            X, sequences=sequences),
        "dictionary_learning": DictionaryLearningSAE(32, k=3, batch_size=512, epochs=2,
                                                     warmup_steps=1).fit(X),
    }  # fmt: skip
    assert fitted["sparsify"].rows_seen_ == 4096 - 64
    for name, est in fitted.items():
        loaded = load_sae(est.save(tmp_path / name))
        np.testing.assert_allclose(loaded.transform(X[:64]), est.transform(X[:64]),
                                   atol=1e-4, err_msg=name)  # fmt: skip


def test_transcoders_are_scored_on_their_targets(data, tmp_path):
    X = np.load(data / "train.npy")
    mix = np.random.default_rng(1).normal(size=(8, 8)).astype(np.float32)
    np.save(tmp_path / "train_y.npy", np.maximum(X @ mix, 0))
    np.save(tmp_path / "test_y.npy", np.maximum(np.load(data / "test.npy") @ mix, 0))
    record = tmp_path / "record.json"
    _run(data, tmp_path / "units", "--families", "transcoder", "--settings", "tuned",
         "--lr-factors", "1", "--train-y", str(tmp_path / "train_y.npy"),
         "--test-y", str(tmp_path / "test_y.npy"), "--record", str(record))  # fmt: skip
    units = json.loads(record.read_text())["units"]
    assert {u["library"] for u in units} == {"ours", "sparsify"}
    # a transcoder of a ReLU map: its FVU on Y is well under 1 for both
    assert all(0 < u["fvu"] < 0.9 for u in units)
    np.save(tmp_path / "short_y.npy", np.zeros((10, 8), np.float32))
    with pytest.raises(ValueError, match="has 10 rows"):
        side_by_side.usable(data / "train.npy", targets=tmp_path / "short_y.npy")


def test_a_sweep_best_at_its_end_goes_on_past_it_by_threes():
    def done(fvus):
        return [dict(family="topk", library="ours", setting="tuned", epochs=1, penalty=None,
                     lr_factor=f, fvu=v, seed=0) for f, v in fvus.items()]  # fmt: skip

    sweep = side_by_side.sweep
    grid = [0.33, 1, 3]
    assert sweep([], "topk", "ours", 1, None, grid) == grid
    assert sweep(done({0.33: 0.5, 1: 0.4, 3: 0.45}), "topk", "ours", 1, None, grid) == grid
    assert sweep(done({0.33: 0.5, 1: 0.4, 3: 0.3}), "topk", "ours", 1, None, grid) == [*grid, 9]
    assert sweep(done({0.33: 0.5, 1: 0.4, 3: 0.3, 9: 0.35}), "topk", "ours", 1, None,
                 grid) == [*grid, 9]  # fmt: skip
    assert sweep(done({0.33: 0.5, 1: 0.4, 3: 0.3, 9: 0.2, 27: 0.1}), "topk", "ours", 1, None,
                 grid) == [*grid, 9, 27]  # 81 is past MAX_LR_FACTOR  # fmt: skip
    low = sweep(done({0.33: 0.2, 1: 0.4, 3: 0.5}), "topk", "ours", 1, None, grid)
    assert low == [0.11, *grid]
    # not before every factor of the grid has a result
    assert sweep(done({0.33: 0.2}), "topk", "ours", 1, None, grid) == grid


def test_ours_clip_runs_our_sae_again_with_gradient_clipping():
    class Args:
        n_components, k, batch = 64, 4, 512
        matryoshka_fractions, alphas, l1, ours_clip = [0.25], [0.1, 1.0], [1.0], 1.0
        libraries = ["ours", "saelens"]

    assert side_by_side.libraries("topk", Args) == ["ours", "ours-clip", "saelens"]
    assert side_by_side.libraries("coding", Args) == ["ours", "saelens"]  # no SAE there
    unit = dict(family="l1", library="ours-clip", setting="tuned", epochs=1, seed=0,
                lr=None, penalty=1.0)  # fmt: skip
    est = side_by_side.make_estimator(unit, 4096, Args)
    assert est.max_grad_norm == 1.0 and est.alpha == 1.0
    Args.ours_clip = None
    assert side_by_side.libraries("topk", Args) == ["ours", "saelens"]
