"""The ``sparsegap`` command line: the table, its outputs, every error path, and the
README's table against the recorded run it is rendered from."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import sklearn_sparsegap
from sklearn_sparsegap import cli

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "results" / "compare" / "compare.json"
# The columns that do not depend on the machine's speed.
DETERMINISTIC = ("latent_mcc", "dictionary_mcc", "normalized_mse", "mean_l0", "dead_fraction",
                 "training_flops", "inference_flops")  # fmt: skip

SMALL = ["compare", "--n-samples", "64", "--quiet", "--methods", "sae,sparse-coding"]


def run(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_works_through_python_dash_m():
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_sparsegap", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "compare" in result.stdout


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sparsegap {sklearn_sparsegap.__version__}"


def test_json_output_round_trips_to_the_printed_table(capsys, tmp_path):
    output = tmp_path / "runs.json"
    code, out, _ = run(SMALL + ["--seeds", "0", "1", "--output", str(output)], capsys)
    assert code == 0
    saved = cli.load_runs(output)
    assert saved["settings"]["seeds"] == [0, 1]
    assert [(r["method"], r["seed"]) for r in saved["runs"]] == [
        ("sae", 0), ("sparse-coding", 0), ("sae", 1), ("sparse-coding", 1)
    ]
    assert saved["environment"]["sklearn_sparsegap"] == sklearn_sparsegap.__version__
    # The table rebuilt from the file is, line for line, the table the command printed.
    printed = out.split(f"wrote {output}")[0].strip()
    assert printed == cli.describe(saved["settings"]) + "\n" + cli.format_table(saved["runs"])
    for header in ("latent MCC", "dict MCC", "NMSE", "mean L0", "dead", "train FLOPs",
                   "infer FLOPs", "fit s", "transform s"):
        assert header in printed


def test_default_task_sparse_coding_recovers_the_dictionary(capsys, tmp_path):
    """The user-facing claim of the README table: on the default task (N=16, M=8, K=3,
    1024 samples, seed 0) sparse coding recovers the dictionary and the codes."""
    output = tmp_path / "runs.json"
    code, _, _ = run(["compare", "--quiet", "--methods", "sparse-coding", "--output",
                      str(output)], capsys)  # fmt: skip
    assert code == 0
    (row,) = cli.load_runs(output)["runs"]
    assert row["dictionary_mcc"] > 0.99
    assert row["latent_mcc"] > 0.98
    assert row["normalized_mse"] < 1e-2
    assert row["dead_fraction"] == 0.0


def test_recorded_run_agrees_with_a_fresh_run(capsys, tmp_path):
    """The recorded run the README is rendered from is what the command gives today
    (the columns that do not depend on the machine's speed, for the fast methods)."""
    recorded = cli.load_runs(RECORD)
    assert recorded["settings"] == {
        "n_components": 16, "n_features": 8, "n_nonzero_coefs": 3, "n_samples": 1024,
        "code_distribution": "halfnormal", "scenario": "unknown", "seeds": [0],
        "methods": list(cli.METHODS), "device": "auto",
    }  # fmt: skip
    output = tmp_path / "runs.json"
    code, _, _ = run(["compare", "--quiet", "--methods", "sparse-coding,sae",
                      "--output", str(output)], capsys)  # fmt: skip
    assert code == 0
    by_method = {row["method"]: row for row in recorded["runs"]}
    for fresh in cli.load_runs(output)["runs"]:
        stored = by_method[fresh["method"]]
        for key in DETERMINISTIC:
            # Loose enough for another BLAS's float32 rounding, tight enough to catch any
            # change the table's three decimals would show.
            assert fresh[key] == pytest.approx(stored[key], rel=2e-3, abs=2e-3), (
                fresh["method"], key
            )


def test_readme_table_is_the_recorded_run():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        readme_compare = importlib.import_module("readme_compare")
    finally:
        sys.path.remove(str(ROOT / "docs"))
    block = readme_compare.readme_block((ROOT / "README.md").read_text())
    assert block is not None, "README has lost its generated compare-table block"
    assert block == readme_compare.render(cli.load_runs(RECORD)), (
        "README.md's compare table differs from docs/results/compare/compare.json: "
        "run `python docs/readme_compare.py`"
    )


def test_csv_output_and_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    csv_path, png_path = tmp_path / "runs.csv", tmp_path / "plot.png"
    code, _, _ = run(SMALL + ["--output", str(csv_path), "--plot", str(png_path)], capsys)
    assert code == 0
    assert csv_path.read_text().splitlines()[0].startswith("method,seed,scenario,latent_mcc")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("scenario", ["known-dictionary", "known-codes"])
def test_scenarios_skip_methods_that_cannot_run_them(capsys, scenario):
    code, out, _ = run(
        ["compare", "--n-samples", "64", "--quiet", "--scenario", scenario,
         "--methods", "sae,lars"], capsys,
    )  # fmt: skip
    assert code == 0 and "sae" in out and "lars" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-nonzero-coefs", "20"], "--n-nonzero-coefs"),
        (["--scenario", "sideways"], "--scenario"),
        (["--methods", "sae,magic"], "magic"),
        (["--n-samples", "0"], "--n-samples"),
        (["--n-components", "abc"], "--n-components"),
        (["--output", "/nonexistent-dir/runs.json"], "--output"),
        (["--output", "runs.txt"], "--output"),
        (["--plot", "/nonexistent-dir/plot.png"], "--plot"),
        (["--code-distribution", "uniform"], "--code-distribution"),
        (["--seeds", "-1"], "--seeds"),
        (["--seeds", "4294967296"], "--seeds"),
        (["--seeds", "3", "3"], "--seeds"),
        (["--device", "tpu"], "--device"),
        (["--scenario", "known-codes", "--methods", "lars,sparse-coding"], "--methods"),
    ],
)
def test_bad_options_give_one_line_and_exit_code_2(capsys, monkeypatch, args, message):
    def no_work(**settings):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(cli, "run_comparison", no_work)
    with pytest.raises(SystemExit) as exit_info:
        code = cli.main(["compare", *args])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    # One line naming the option: no progress bar, usage dump or traceback before it.
    assert len(err.splitlines()) == 1 and message in err
    assert err.startswith("sparsegap")


def test_cuda_without_cuda_is_an_error_not_a_traceback(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    code, _, err = run(["compare", "--device", "cuda"], capsys)
    assert code == 2 and "CUDA" in err and len(err.strip().splitlines()) == 1
