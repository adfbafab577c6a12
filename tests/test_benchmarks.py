"""Every paper-experiment entry point runs (smoke profile), and sweeps are reproducible
on a dask cluster."""

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import joblib
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TIMING_KEYS = {"fit_seconds", "transform_seconds"}


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import matplotlib

        matplotlib.use("Agg")
        yield importlib.import_module("run_all")
    finally:
        sys.path.remove(str(BENCHMARKS))


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


def test_every_experiment_is_listed(bench):
    assert list(bench.EXPERIMENTS) == EXPERIMENTS
    scripts = {path.stem for path in BENCHMARKS.glob("*.py")}
    assert set(EXPERIMENTS) <= scripts


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_entry_point_runs_and_writes_json_and_figures(bench, name, tmp_path, capsys):
    module = importlib.import_module(name)
    assert set(module.PROFILES) == {"smoke", "quick", "paper"}
    bench.runner.main(name, module, ["--profile", "smoke", "--out", str(tmp_path), "--quiet"])
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["experiment"] == name and result["profile"] == "smoke"
    assert result["records"], "no records"
    assert all(math.isfinite(x) for x in _numbers(result["records"]))
    assert list(tmp_path.glob("*.png")), "no figure"
    assert name in capsys.readouterr().out  # the summary line


def test_script_runs_from_the_command_line(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "fig2_known_codes.py"), "--profile", "smoke",
         "--no-plots", "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "Known codes" in completed.stdout
    assert (tmp_path / "result.json").exists()


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
