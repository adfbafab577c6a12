"""The paper-experiment benchmarks: every entry point runs (smoke profile) and records what
it claims, the recorded reference numbers reach the printed tables, the docs' tables are
exactly what the recorded results give, and plots are optional (matplotlib is imported
only to draw figures)."""

import contextlib
import importlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import joblib
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PAPER = BENCHMARKS / "paper"  # the paper's experiments; their shared code is benchmarks/_bench
TIMING_KEYS = {"fit_seconds", "transform_seconds", "seconds"}

try:
    import matplotlib

    matplotlib.use("Agg")
    HAVE_MATPLOTLIB = True
except ImportError:  # the ``test`` extra alone: plots are skipped
    HAVE_MATPLOTLIB = False
needs_matplotlib = pytest.mark.skipif(
    not HAVE_MATPLOTLIB, reason="figures need matplotlib (the 'plot' extra)"
)


@pytest.fixture(scope="module")
def bench():
    paths = [str(PAPER), str(BENCHMARKS)]
    sys.path[:0] = paths
    try:
        yield importlib.import_module("run_all")
    finally:
        for path in paths:
            sys.path.remove(path)


def _numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, float):
        yield value


EXPERIMENTS = [
    "fig2_known_codes", "fig3_known_dictionary", "fig4_unknown_dictionary", "fig5_regimes",
    "fig6_pareto", "topk", "zipf", "large_scale", "decoder_analysis", "ablations",
    "lars_grid",
]  # fmt: skip
_SMOKE = {}


def smoke_result(bench, name, out_dir):
    """The smoke-profile run of ``name``, once per test session (no figures): the
    result.json it wrote, what it printed, and the files it wrote."""
    if name not in _SMOKE:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            bench.runner.main(
                name, bench.experiment(name),
                ["--profile", "smoke", "--out", str(out_dir), "--quiet", "--no-plots"],
            )  # fmt: skip
        saved = json.loads((Path(out_dir) / "result.json").read_text())
        _SMOKE[name] = (saved, printed.getvalue(), sorted(Path(out_dir).iterdir()))
    return _SMOKE[name]


def test_every_experiment_is_listed(bench):
    assert list(bench.EXPERIMENTS) == EXPERIMENTS
    scripts = {path.stem for path in PAPER.glob("*.py")}
    # Each experiment is a script of its own, or a dataset variant of scripts.
    for name in EXPERIMENTS:
        if name in bench.VARIANTS:
            assert name not in scripts
            assert set(bench.VARIANTS[name][0].values()) <= scripts
        else:
            assert name in scripts


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_entry_point_runs_and_writes_json(bench, name, tmp_path):
    module = bench.experiment(name)
    assert set(module.PROFILES) == {"smoke", "quick", "paper"}
    saved, printed, files = smoke_result(bench, name, tmp_path)
    assert saved["experiment"] == name and saved["profile"] == "smoke"
    assert saved["records"], "no records"
    assert all(math.isfinite(x) for x in _numbers(saved["records"]))
    # The JSON is the run's record: the summary recomputed from it is the printed one
    # (so docs/results.md, rendered from the JSON, shows what the run printed).
    assert module.summary(saved) in printed
    assert [path.name for path in files] == ["result.json"], "--no-plots wrote a figure"


@needs_matplotlib
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_figures_are_drawn_from_the_recorded_result(bench, name, tmp_path):
    import matplotlib.pyplot as plt

    saved, _, _ = smoke_result(bench, name, tmp_path / "run")
    figures = bench.experiment(name).figures(saved)
    assert figures, "no figure"
    paths = bench.runner.save(saved, figures, tmp_path / "figures")
    plt.close("all")
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in paths[1:])


def test_runner_without_plots_never_imports_matplotlib(tmp_path):
    """With matplotlib made unimportable, a script runs with --no-plots (and the runner
    does not import it)."""
    code = (
        "import sys, runpy; sys.modules['matplotlib'] = None; "
        f"sys.argv = ['fig2_known_codes.py', '--profile', 'smoke', '--no-plots', '--quiet', "
        f"'--out', {str(tmp_path)!r}]; "
        f"runpy.run_path({str(PAPER / 'fig2_known_codes.py')!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the script puts benchmarks/ on its path
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert completed.returncode == 0, completed.stderr
    assert "Known codes" in completed.stdout
    assert (tmp_path / "result.json").exists()


def test_distribution_is_a_dataset_parameter(bench, tmp_path):
    """``--distribution`` reruns an experiment on other codes; the zipf variant is Figs.
    2-4 on Zipf codes, and its records say so."""
    result = bench.runner.main(
        "fig2_known_codes", bench.experiment("fig2_known_codes"),
        ["--profile", "smoke", "--out", str(tmp_path), "--quiet", "--no-plots",
         "--distribution", "zipf"],
    )  # fmt: skip
    assert result["distribution"] == "zipf"
    assert {r["distribution"] for r in result["records"]} == {"zipf"}
    zipf, _, _ = smoke_result(bench, "zipf", tmp_path / "zipf")
    assert {r["part"] for r in zipf["records"]} == set(bench.VARIANTS["zipf"][0])
    assert {r["distribution"] for r in zipf["records"]} == {"zipf"}
    # The quick profile keeps one seed per part.
    assert all(part["seeds"] == 1 for part in bench.experiment("zipf").PROFILES["quick"].values())
    with pytest.raises(SystemExit, match="--distribution"):
        bench.runner.main(
            "fig6_pareto", bench.experiment("fig6_pareto"),
            ["--profile", "smoke", "--out", str(tmp_path), "--distribution", "zipf"],
        )  # fmt: skip


def test_reference_numbers_are_printed_beside_ours(bench, tmp_path):
    """The authors' numbers (benchmarks/paper/references/*.json) reach the summary tables."""
    references = importlib.import_module("_bench.references")
    for name in ("fig2_known_codes", "fig3_known_dictionary", "fig4_unknown_dictionary",
                 "fig5_regimes", "fig6_pareto", "ablations", "large_scale", "lars_grid",
                 "topk"):  # fmt: skip
        stored = references.load(name)
        assert stored["source"] and stored["tables"]
        assert all(table for table in stored["tables"].values())
    fig2 = importlib.import_module("fig2_known_codes")
    assert fig2.PAPER["SAE"] == (0.862, 0.025, 1.74e10)
    saved, _, _ = smoke_result(bench, "fig2_known_codes", tmp_path)
    assert "0.862" in fig2.summary(saved)  # the authors' final SAE MCC, beside ours


def test_docs_results_tables_are_the_recorded_results(bench, tmp_path):
    """docs/results.md is exactly what report.py renders from docs/results/*/result.json."""
    report = importlib.import_module("report")
    built = report.build(out=tmp_path / "results.md")
    assert built.read_text() == (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md is stale: run `python benchmarks/paper/report.py`"
    )


def test_benchmark_methods_are_the_package_definitions(bench):
    """Benchmarks and ``sparsegap compare`` build each method through one definition; the
    paper flavour has the authors' settings."""
    from sklearn_sparsegap import paper_l1_to_alpha
    from sklearn_sparsegap.experiments._methods import build_method

    datasets = importlib.import_module("_bench.datasets")
    methods = importlib.import_module("_bench.methods")
    task = datasets.make_task(n_train=16, n_test=16, seed=0)
    for name in ("sae", "mlp", "sparse-coding", "sae+ito", "lars"):
        ours = methods.build(name, task, seed=3)
        compare = build_method(
            name, n_components=16, n_features=8, n_nonzero_coefs=3,
            dictionary=task.dictionary, random_state=3,
        )  # fmt: skip
        assert repr(ours) == repr(compare)
    paper_sae = methods.build("sae", task, flavour="paper")
    assert paper_sae.alpha == pytest.approx(paper_l1_to_alpha(0.01, 8, 16))
    assert paper_sae.learning_rate == 1e-3 and paper_sae.fit_intercept is False
    paper_sc = methods.build("sparse-coding", task, flavour="paper")
    assert (paper_sc.fit_algorithm, paper_sc.transform_max_iter) == ("adam", 10_000)
    topk = methods.build("topk-sae", task, n_nonzero_coefs=5)
    assert (topk.activation, topk.n_nonzero_coefs) == ("topk", 5)
    assert methods.build("topk-sae", task).n_nonzero_coefs == task.n_nonzero_coefs
    # ``steps`` is the budget of step-trained methods; LARS keeps its own unless given.
    from sklearn_sparsegap import LarsDictionaryLearning

    assert methods.build("sae", task, steps=7).max_iter == 7
    assert methods.build("sae+ito", task, steps=7).encoder.max_iter == 7
    assert methods.build("lars", task, steps=7).max_iter == LarsDictionaryLearning().max_iter
    assert methods.build("lars", task, steps=7, max_iter=2).max_iter == 2


def test_keep_topk_keeps_exactly_the_k_largest_magnitudes(bench):
    import numpy as np

    methods = importlib.import_module("_bench.methods")
    codes = np.array([[0.1, -3.0, 2.0, 0.5], [4.0, 0.0, -0.2, 1.0]])
    kept = methods.keep_topk(codes, 2)
    np.testing.assert_array_equal(kept, [[0.0, -3.0, 2.0, 0.0], [4.0, 0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(codes[0], [0.1, -3.0, 2.0, 0.5])  # input untouched


def _without_timings(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_sweep_on_a_dask_local_cluster_equals_the_sequential_run(bench):
    distributed = pytest.importorskip("distributed")
    fig2 = importlib.import_module("fig2_known_codes")
    settings = fig2.PROFILES["smoke"]
    jobs = [
        {"label": f"MLP H={width}", "method": "mlp", "flavour": "paper",
         "params": {"hidden_layer_sizes": (width,)}, "seed": seed, "settings": settings}
        for width in (4, 8) for seed in (0, 1)
    ]  # fmt: skip
    sequential = bench.runner.sweep(fig2.curve_job, jobs, n_jobs=1, progress=False)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster),
        joblib.parallel_config(backend="dask"),
    ):  # fmt: skip
        on_dask = bench.runner.sweep(fig2.curve_job, jobs, n_jobs=2, progress=False)
    assert [_without_timings(r) for r in on_dask] == [_without_timings(r) for r in sequential]


# ------------------------------------------------------------------------ resumable runs
class _Interrupted(Exception):
    pass


def _count_units(monkeypatch, runner, fail_at=None):
    """Patch ``runner._run_unit`` to count the units computed (and raise in the
    ``fail_at``-th one, as an interruption would); return the list of computed jobs."""
    original = runner._run_unit
    computed = []

    def counting(function, job, path=None, key=None):
        computed.append(job)
        if fail_at is not None and len(computed) == fail_at:
            raise _Interrupted(f"interrupted in unit {fail_at}")
        return original(function, job, path, key)

    monkeypatch.setattr(runner, "_run_unit", counting)
    return computed


def test_interrupted_run_resumes_where_it_stopped(bench, tmp_path, monkeypatch):
    """An experiment interrupted in its 3rd unit reruns only the units it had not finished
    (one file per finished unit under <out>/units), and its record equals an uninterrupted
    run's, timings aside."""
    runner = bench.runner
    name = "fig2_known_codes"
    options = ["--profile", "smoke", "--quiet", "--no-plots"]
    n_units = sum(len(jobs) for _, jobs in runner.job_lists(
        bench.experiment(name), bench.experiment(name).PROFILES["smoke"]))  # fmt: skip
    assert n_units == 4

    computed = _count_units(monkeypatch, runner, fail_at=3)
    with pytest.raises(_Interrupted):
        runner.main(name, bench.experiment(name), options + ["--out", str(tmp_path / "a"), "--resume"])
    units = sorted((tmp_path / "a" / runner.UNITS).glob("*.json"))
    assert len(units) == 2 and not (tmp_path / "a" / "result.json").exists()
    assert not list((tmp_path / "a" / runner.UNITS).glob("*.part"))
    stamps = {path: path.stat().st_mtime_ns for path in units}

    computed = _count_units(monkeypatch, runner)
    resumed = runner.main(name, bench.experiment(name), options + ["--out", str(tmp_path / "a"), "--resume"])
    assert len(computed) == n_units - 2  # the two finished units were not recomputed
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())
    assert resumed["units"]["reused"] == 2 and resumed["units"]["computed"] == n_units - 2

    computed = _count_units(monkeypatch, runner)
    whole = runner.main(name, bench.experiment(name), options + ["--out", str(tmp_path / "b"), "--no-resume"])
    assert len(computed) == n_units and "units" not in whole
    assert not (tmp_path / "b" / runner.UNITS).exists()
    stored = json.loads((tmp_path / "a" / "result.json").read_text())
    plain = json.loads((tmp_path / "b" / "result.json").read_text())
    assert _without_timings(stored["records"]) == _without_timings(plain["records"])
    assert stored["settings"] == plain["settings"]

    # Everything stored: a third run computes nothing and records the same.
    computed = _count_units(monkeypatch, runner)
    again = runner.main(name, bench.experiment(name), options + ["--out", str(tmp_path / "a")] + ["--resume"])
    assert computed == [] and again["units"]["reused"] == n_units
    assert _without_timings(again["records"]) == _without_timings(stored["records"])


def _unit_job(value, settings):
    return [{"value": value, "steps": settings["steps"], "nan": float("nan")}]


def test_units_with_other_settings_are_not_reused(bench, tmp_path, monkeypatch):
    runner = bench.runner
    jobs = [{"value": v, "settings": {"steps": 10}} for v in range(3)]
    computed = _count_units(monkeypatch, runner)
    with runner.unit_store(tmp_path) as store:
        first = runner.sweep(_unit_job, jobs, progress=False)
    assert len(computed) == 3 and store.computed == 3 and len(list(tmp_path.glob("*.json"))) == 3
    assert first[0] == [{"value": 0, "steps": 10, "nan": None}]  # the JSON form, as recorded
    # The same jobs are reused; one setting changed makes every unit new.
    changed = [{**job, "settings": {"steps": 11}} for job in jobs]
    with runner.unit_store(tmp_path) as store:
        assert runner.sweep(_unit_job, jobs + changed, progress=False)[:3] == first
    assert (store.reused, store.computed) == (3, 3) and len(computed) == 6
    # A unit file whose stored key is not the job's (another job, or a file cut short) is
    # recomputed, never taken for it.
    path = store.path(store.key(_unit_job, jobs[0]))
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "key": {**stored["key"], "job": {"value": 99}}}))
    (store.path(store.key(_unit_job, jobs[1]))).write_text('{"key": ')
    with runner.unit_store(tmp_path) as store:
        assert runner.sweep(_unit_job, jobs, progress=False) == first
    assert (store.reused, store.computed) == (1, 2)
    # joblib workers write the same files.
    with runner.unit_store(tmp_path / "parallel") as store:
        assert runner.sweep(_unit_job, jobs, n_jobs=2, progress=False) == first
    assert len(list((tmp_path / "parallel").glob("*.json"))) == 3


def test_run_all_resumes_and_estimates(bench, tmp_path, capsys):
    """run_all passes --resume to every experiment; --estimate prints each experiment's
    number of units and an estimated wall time (measured per unit where units exist)."""
    bench.main(["--profile", "smoke", "--only", "decoder_analysis", "--out", str(tmp_path),
                "--no-plots", "--resume"])  # fmt: skip
    units = list((tmp_path / "decoder_analysis" / bench.runner.UNITS).glob("*.json"))
    assert units
    capsys.readouterr()
    bench.main(["--profile", "smoke", "--only", "decoder_analysis", "fig2_known_codes",
                "--out", str(tmp_path), "--estimate"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "decoder_analysis" in printed and f"{len(units)} units measured here" in printed
    guess = bench.estimate("decoder_analysis", measured=tmp_path, profile="smoke")
    assert guess["done"] == guess["jobs"] == len(units) and guess["remaining"] == 0
    assert bench.estimate("fig5_regimes")["jobs"] == 432  # the paper profile's grid


def test_large_scale_device_reaches_every_estimator(bench, tmp_path, monkeypatch):
    """``--device`` (cuda on a GPU machine; cpu here, at the smoke size) goes to every
    estimator of large_scale and into each unit's settings."""
    large_scale = bench.experiment("large_scale")
    built = []
    original = large_scale.build

    def recording(*args, **kwargs):
        estimator = original(*args, **kwargs)
        built.append(estimator)
        return estimator

    monkeypatch.setattr(large_scale, "build", recording)
    result = bench.runner.main(
        "large_scale", large_scale,
        ["--profile", "smoke", "--device", "cpu", "--out", str(tmp_path), "--quiet",
         "--no-plots", "--resume"],
    )  # fmt: skip
    assert result["device"] == "cpu" and result["records"]
    assert len(built) == len(large_scale._methods([8])) and built
    assert all(estimator.get_params()["device"] == "cpu" for estimator in built)
    for path in (tmp_path / bench.runner.UNITS).glob("*.json"):
        assert json.loads(path.read_text())["key"]["job"]["device"] == "cpu"
    with pytest.raises(SystemExit, match="--device"):
        bench.runner.main("fig6_pareto", bench.experiment("fig6_pareto"),
                          ["--profile", "smoke", "--device", "cpu", "--out", str(tmp_path)])


def test_report_paper_sections(bench, tmp_path):
    """A paper-profile section shows the recorded summary where the paper profile finished,
    else says it was not run, with the estimate and the command (placeholders, no paths)."""
    report = importlib.import_module("report")
    run = tmp_path / "run"
    bench.main(["--profile", "smoke", "--only", "decoder_analysis", "--out", str(run),
                "--no-plots", "--resume"])  # fmt: skip
    results = tmp_path / "docs_results"
    record = report.collect(run, results=results)
    assert not (results / report.PAPER / "decoder_analysis").exists()  # smoke, not paper
    assert record["experiments"]["decoder_analysis"]["done"] == 0  # smoke units: not paper's
    record = report.collect(run, results=tmp_path / "smoke_results", profile="smoke")
    assert record["experiments"]["decoder_analysis"]["done"] > 0
    # An unfinished run (no result.json, some units): its finished units become a partial
    # record, summarised under "Not run at paper settings here".
    smoke_result = json.loads((run / "decoder_analysis" / "result.json").read_text())
    (run / "decoder_analysis" / "result.json").unlink()
    units = sorted((run / "decoder_analysis" / bench.runner.UNITS).glob("*.json"))
    units[0].unlink()
    partial_results = tmp_path / "partial_results"
    report.collect(run, results=partial_results, profile="smoke")
    partial = json.loads((partial_results / report.PAPER / "decoder_analysis" / report.PARTIAL).read_text())
    assert partial["units"]["reused"] == len(units) - 1 == len(partial["units"]["finished"])
    assert partial["units"]["computed"] == 0 and len(partial["records"]) == len(units) - 1
    assert all(r in smoke_result["records"] for r in partial["records"])
    text = report._paper("decoder_analysis", partial_results)
    assert f"Only {len(units) - 1} of its {len(units)} units finished here" in text
    (run / "decoder_analysis" / "result.json").write_text(json.dumps(smoke_result))
    text = report._paper("decoder_analysis", results)
    assert "Not run at paper settings here" in text and "--out RESULTS_DIR" in text
    assert str(tmp_path) not in (results / report.PAPER / report.ESTIMATES).read_text()
    saved = json.loads((run / "decoder_analysis" / "result.json").read_text())
    (run / "decoder_analysis" / "result.json").write_text(json.dumps({**saved, "profile": "paper"}))
    report.collect(run, results=results)
    text = report._paper("decoder_analysis", results)
    assert bench.experiment("decoder_analysis").summary(saved) in text
    assert "run here" in report._paper_times(results)
