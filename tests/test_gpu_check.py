"""benchmarks/gpu/check.py: the one GPU check, exercised on the CPU at tiny sizes."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"
CUDA_TESTS = Path(__file__).with_name("test_cuda.py")


def _module(name):
    spec = importlib.util.spec_from_file_location(f"_gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_table(result, device):
    names = [row["benchmark"] for row in result["table"]]
    # tiny sizes: 32 latents, so the TopK step is timed at k = N/16 and N/8 (2 and 4)
    assert names == ["topk_sae_fit", "topk_step", "topk_step", "sparse_encode_omp",
                     "sae_plus_ito_transform", "sae_fit_memmap"]  # fmt: skip
    steps = [row for row in result["table"] if row["benchmark"] == "topk_step"]
    assert [(row["k"], row["sparse_taken"]) for row in steps] == [(2, True), (4, False)]
    assert all(row["sparse_over_dense_speedup"] > 0 for row in steps)
    for row in result["table"]:
        assert row["device"] == device and row["rate"] > 0 and row["seconds"] > 0
        assert row["unit"] in ("tokens/s", "rows/s")
    environment = result["environment"]
    for key in ("torch", "torch_cuda", "cuda_available", "device", "numpy", "python"):
        assert key in environment


def test_check_on_the_cpu_says_so_runs_the_cuda_tests_and_writes_the_json(tmp_path):
    # As a script (its own process, as a user runs it), the test run limited to one
    # CUDA test and one CPU test of tests/test_cuda.py (the plugin keeps both: the file
    # names cuda), the table at the tiny sizes.
    out = tmp_path / "sub" / "check.json"
    done = subprocess.run(
        [sys.executable, str(GPU / "check.py"), "--quick", "--device", "cpu", "--tests", "run",
         "--test-paths", f"{CUDA_TESTS}::test_the_sync_free_column_count_equals_bincount",
         f"{CUDA_TESTS}::test_transform_keeps_one_device_copy_that_is_not_pickled",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CPU only" in done.stdout and "sae_fit_memmap" in done.stdout
    result = json.loads(out.read_text())
    assert result["sizes"] == "tiny" and "CPU only" in result["note"]
    tests = result["cuda_tests"]
    assert tests["status"] == "run" and tests["ok"]
    assert tests["tests"] == 2 and tests["failures"] == tests["errors"] == 0
    if not torch.cuda.is_available():  # the CUDA one skips, the CPU one passes
        assert tests["skipped"] == tests["passed"] == 1
    _check_table(result, "cpu")


class _Item:
    def __init__(self, nodeid, markers=(), skipif_reasons=()):
        self.nodeid = nodeid
        self.markers = set(markers)
        self.reasons = skipif_reasons

    def get_closest_marker(self, name):
        return object() if name in self.markers else None

    def iter_markers(self, name):
        class _Marker:
            def __init__(self, reason):
                self.kwargs = {"reason": reason}

        return [_Marker(reason) for reason in self.reasons] if name == "skipif" else []


def test_the_selection_plugin_keeps_the_cuda_tests_only():
    plugin = _module("_cuda_tests")
    items = [
        _Item("tests/test_cuda.py::test_anything"),
        _Item("tests/test_sae.py::test_cuda_fit"),
        _Item("tests/test_x.py::test_marked", markers={"cuda"}),
        _Item("tests/test_modules.py::test_sparse_step", skipif_reasons=("needs CUDA",)),
        _Item("tests/test_y.py::test_gpu_only", skipif_reasons=("needs a GPU",)),
        _Item("tests/test_sae.py::test_fit"),
        _Item("tests/test_z.py::test_other", skipif_reasons=("needs dask",)),
    ]
    deselected = []

    class _Hook:
        def pytest_deselected(self, items):
            deselected.extend(items)

    class _Config:
        hook = _Hook()

    kept = list(items)
    plugin.pytest_collection_modifyitems(_Config(), kept)
    assert kept == items[:5] and deselected == items[5:]
