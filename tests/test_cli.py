"""The ``sparsegap`` command line: the table, its outputs and every error path."""

import json
import subprocess
import sys

import pytest

from sklearn_sparsegap import cli

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


def test_compare_prints_one_row_per_method_with_every_column(capsys, tmp_path):
    output = tmp_path / "runs.json"
    code, out, _ = run(SMALL + ["--seeds", "0", "1", "--output", str(output)], capsys)
    assert code == 0
    for header in ("latent MCC", "dict MCC", "NMSE", "mean L0", "dead", "train FLOPs",
                   "infer FLOPs", "fit s", "transform s"):
        assert header in out
    assert out.count("\nsae ") == 1 and "sparse-coding" in out
    saved = json.loads(output.read_text())
    assert saved["settings"]["seeds"] == [0, 1]
    assert len(saved["runs"]) == 4
    assert all(0 <= run_["latent_mcc"] <= 1 for run_ in saved["runs"])


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
    ],
)
def test_bad_options_give_one_line_and_exit_code_2(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        code = cli.main(["compare", *args])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert "Traceback" not in err


def test_cuda_without_cuda_is_an_error_not_a_traceback(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    code, _, err = run(["compare", "--device", "cuda"], capsys)
    assert code == 2 and "CUDA" in err and len(err.strip().splitlines()) == 1
