"""One command for the day a GPU is there: every CUDA test, then a timing table.

::

    python benchmarks/gpu/check.py                 # writes gpu_check.json
    python benchmarks/gpu/check.py --out results/gpu.json --sizes full

On a machine with a CUDA GPU it

1. runs every CUDA test of the suite (``pytest`` with the selection plugin
   ``_cuda_tests.py``: tests marked ``cuda``, tests whose name says ``cuda`` and tests
   skipped without a GPU; needs ``pytest``, the ``test`` extra);
2. times, on the GPU: TopK SAE training tokens/s (2,304 and 16,384 latents at d=576
   and d=2,304; the largest also with TF32 matmuls), one TopK training step sparse
   against dense at k = 32, N/16 and N/8 (where ``SPARSE_TOPK_MAX_DENSITY["cuda"]``
   should sit), ``sparse_encode`` OMP rows/s
   against the CPU, ITO rows/s (``SAEPlusITO`` over a prefit TopK SAE) and an SAE fit
   streamed from an on-disk ``np.memmap`` (tokens/s);
3. writes one JSON (``--out``) with the device's name, memory, compute capability and
   the torch/CUDA versions beside the table, and prints the table.

It takes a few minutes on a GPU (well under 10). On a CPU-only machine it says so, runs
a small CPU part of the table (so the script itself is exercised) and exits 0. It needs
only the README's install (``pip install -e .``); a missing ``pytest`` is reported, not
fatal. Exit status 1 means a CUDA test failed.
"""

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/, as every benchmark script does

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, __version__, sparse_encode  # noqa: E402
from sklearn_sparsegap._autoencoder import make_module  # noqa: E402
from sklearn_sparsegap._batches import is_streamed  # noqa: E402
from sklearn_sparsegap._modules import sae_gradients, uses_sparse_topk_step  # noqa: E402

ROOT = HERE.parents[1]
# Problem sizes of the table. "full" is the GPU table of issue 31; "small" is the CPU
# part run without a GPU (under a minute on two cores); "tiny" is for the test.
SIZES = {
    "full": dict(
        sae=[(576, 2304), (576, 16384), (2304, 2304), (2304, 16384)], sae_rows=2**16,
        sae_epochs=2, batch_size=4096, k=32, omp_rows=2**14, omp_cpu_rows=2**8,
        omp_components=16384, omp_features=2304, omp_k=32, ito_rows=2**13,
        stream_rows=2**17, stream_features=576, stream_components=16384, tf32=True,
        step_repeats=20,
    ),
    "small": dict(
        sae=[(576, 2304)], sae_rows=2**12, sae_epochs=1, batch_size=1024, k=32,
        omp_rows=2**9, omp_cpu_rows=2**9, omp_components=2304, omp_features=576, omp_k=32,
        ito_rows=2**8, stream_rows=2**15, stream_features=576, stream_components=512,
        tf32=False, step_repeats=3,
    ),
    "tiny": dict(
        sae=[(16, 32)], sae_rows=256, sae_epochs=1, batch_size=64, k=4, omp_rows=64,
        omp_cpu_rows=64, omp_components=32, omp_features=16, omp_k=4, ito_rows=64,
        stream_rows=512, stream_features=16, stream_components=32, tf32=False,
        step_repeats=1,
    ),
}


def environment(device):
    """Versions, threads and (on CUDA) the device's name, memory and capability."""
    info = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "numpy": np.__version__,
        "sklearn_sparsegap": __version__, "cpu_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda, "device": str(device),
    }  # fmt: skip
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(
            device_name=properties.name, device_count=torch.cuda.device_count(),
            memory_total_gb=round(total / 2**30, 2), memory_free_gb=round(free / 2**30, 2),
            compute_capability=f"{properties.major}.{properties.minor}",
            multiprocessors=properties.multi_processor_count,
            cudnn=torch.backends.cudnn.version(), driver=_nvidia_smi_driver(),
            tf32_matmul_default=torch.backends.cuda.matmul.allow_tf32,
        )  # fmt: skip
    return info


def _nvidia_smi_driver():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def run_cuda_tests(mode, paths, timeout):
    """Run (``mode="run"``) or list (``"collect"``) the CUDA tests with pytest."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"status": "not run", "reason": "pytest is not installed "
                "(pip install -e '.[test]' to run the CUDA tests)"}  # fmt: skip
    # Files, folders or node ids (file::test); relative paths are taken from the working
    # directory, else from the checkout.
    def located(path):
        file, sep, node = path.partition("::")
        return str(Path(file).resolve() if Path(file).exists() else ROOT / file) + sep + node

    paths = [located(p) for p in paths or ["tests"]]
    if not all(Path(p.partition("::")[0]).exists() for p in paths):
        return {"status": "not run", "reason": f"no test suite at {paths} (a source checkout has one)"}
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-p", "_cuda_tests", "-q",
                   "-o", "addopts=", "-rfEs", f"--junitxml={report}", *paths]  # fmt: skip
        if mode == "collect":
            command.append("--collect-only")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "seconds": timeout}
        result = {"status": "collected" if mode == "collect" else "run",
                  "returncode": done.returncode, "seconds": round(time.perf_counter() - start, 1),
                  "command": " ".join(["python", *command[1:]]).replace(str(report), "junit.xml"),
                  "output_tail": done.stdout.strip().splitlines()[-25:]}  # fmt: skip
        if mode == "collect":
            result["tests"] = [line for line in done.stdout.splitlines() if "::" in line]
        elif report.exists():
            result.update(_junit_counts(report))
        # 5: no test selected (a suite without CUDA tests is not a failure of the GPU).
        result["ok"] = done.returncode in (0, 5)
        return result


def _junit_counts(path):
    import xml.etree.ElementTree as ET

    suites = ET.parse(path).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    counts = {key: sum(int(s.get(key, 0)) for s in suites)
              for key in ("tests", "failures", "errors", "skipped")}  # fmt: skip
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


@contextlib.contextmanager
def tf32(enabled):
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    value = function()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return value, seconds, None if peak is None else round(peak, 3)


def _data(n_rows, n_features, seed=0):
    # Random rows with a few strong directions (cheap; the timing, not the quality, counts).
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    X += 3 * rng.standard_normal((n_rows, 1), dtype=np.float32) * rng.standard_normal(n_features, dtype=np.float32)
    return X


def _sae(n_components, size, device, **params):
    params = {"max_iter": size["sae_epochs"], **params}
    return SAEEncoder(n_components, activation="topk", n_nonzero_coefs=size["k"],
                      batch_size=size["batch_size"], random_state=0, device=str(device),
                      **params)  # fmt: skip


def bench_sae(size, device, rows):
    """TopK SAE training tokens/s (rows x epochs / fit time, setup included)."""
    for n_features, n_components in size["sae"]:
        X = _data(size["sae_rows"], n_features)
        _sae(n_components, size, device, max_iter=1).fit(X[: size["batch_size"] * 2])  # warm-up
        largest = (n_features, n_components) == size["sae"][-1]
        with_tf32 = size["tf32"] and device.type == "cuda" and largest
        for use_tf32 in (False, True) if with_tf32 else (False,):
            with tf32(use_tf32):
                _, seconds, peak = _timed(lambda: _sae(n_components, size, device).fit(X), device)
            tokens = size["sae_rows"] * size["sae_epochs"]
            rows.append(_row("topk_sae_fit", device, tokens / seconds, "tokens/s", seconds, peak,
                             d=n_features, n_components=n_components, k=size["k"],
                             batch_size=size["batch_size"], rows=size["sae_rows"],
                             epochs=size["sae_epochs"], tf32=use_tf32))  # fmt: skip
            _release(device)


def bench_omp(size, device, rows):
    """``sparse_encode(algorithm="omp")`` rows/s on the device, and on the CPU."""
    rng = np.random.default_rng(1)
    dictionary = rng.standard_normal((size["omp_components"], size["omp_features"]),
                                     dtype=np.float32)  # fmt: skip
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    targets = [(device, size["omp_rows"])]
    if device.type != "cpu":
        targets.append((torch.device("cpu"), size["omp_cpu_rows"]))
    for target, n_rows in targets:
        X = _data(n_rows, size["omp_features"], seed=2)
        sparse_encode(X[:8], dictionary, algorithm="omp", n_nonzero_coefs=size["omp_k"],
                      device=str(target))  # warm-up
        _, seconds, peak = _timed(lambda: sparse_encode(
            X, dictionary, algorithm="omp", n_nonzero_coefs=size["omp_k"], device=str(target)),
            target)  # fmt: skip
        rows.append(_row("sparse_encode_omp", target, n_rows / seconds, "rows/s", seconds, peak,
                         d=size["omp_features"], n_components=size["omp_components"],
                         k=size["omp_k"], rows=n_rows))  # fmt: skip
    if len(targets) == 2:
        rows[-2]["speedup_vs_cpu"] = round(rows[-2]["rate"] / rows[-1]["rate"], 2)
    _release(device)


def bench_topk_step(size, device, rows):
    """One TopK training step, sparse against dense, at k = 32, N/16 and N/8.

    Where the sparse step stops paying on this device (``SPARSE_TOPK_MAX_DENSITY``)."""
    n_features, n_components = size["sae"][-1]
    x = torch.as_tensor(_data(size["batch_size"], n_features, seed=4), device=device)
    for k in sorted({k for k in (32, n_components // 16, n_components // 8) if 0 < k < n_components}):
        module = make_module(n_features, n_components, activation="topk", k=k, device=device,
                             dtype=torch.float32)  # fmt: skip
        seconds = {}
        for sparse in (True, False):
            sae_gradients(module, x, 0.0, sparse=sparse)  # warm-up
            _, total, _ = _timed(lambda: [sae_gradients(module, x, 0.0, sparse=sparse)
                                          for _ in range(size["step_repeats"])], device)  # fmt: skip
            seconds[sparse] = total / size["step_repeats"]
        rows.append(_row("topk_step", device, size["batch_size"] / seconds[True], "rows/s",
                         seconds[True], None, d=n_features, n_components=n_components, k=k,
                         batch_size=size["batch_size"],
                         sparse_over_dense_speedup=round(seconds[False] / seconds[True], 2),
                         sparse_taken=bool(uses_sparse_topk_step(module))))  # fmt: skip
    _release(device)


def bench_ito(size, device, rows):
    """``SAEPlusITO(prefit=True)`` transform rows/s over a TopK SAE (OMP, the l0 guard)."""
    n_features, n_components = size["sae"][0]
    X = _data(max(size["ito_rows"], size["batch_size"] * 2), n_features, seed=3)
    sae = _sae(n_components, size, device, max_iter=1).fit(X)
    ito = SAEPlusITO(sae, prefit=True, device=str(device)).fit(X)
    ito.transform(X[:8])  # warm-up
    X = X[: size["ito_rows"]]
    _, seconds, peak = _timed(lambda: ito.transform(X), device)
    rows.append(_row("sae_plus_ito_transform", device, len(X) / seconds, "rows/s", seconds, peak,
                     d=n_features, n_components=n_components, k=size["k"],
                     algorithm="omp", rows=len(X)))  # fmt: skip
    _release(device)


def bench_streaming(size, device, rows, scratch):
    """A TopK SAE fit (one epoch) on an on-disk ``np.memmap``: tokens/s, file read included."""
    path = Path(scratch) / "stream.npy"
    shape = (size["stream_rows"], size["stream_features"])
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    for start in range(0, shape[0], 2**14):
        stop = min(start + 2**14, shape[0])
        X[start:stop] = _data(stop - start, shape[1], seed=start)
    X.flush()
    del X
    X = np.load(path, mmap_mode="r")
    sae = _sae(size["stream_components"], size, device, max_iter=1)
    _, seconds, peak = _timed(lambda: sae.fit(X), device)
    rows.append(_row("sae_fit_memmap", device, shape[0] / seconds, "tokens/s", seconds, peak,
                     d=shape[1], n_components=size["stream_components"], k=size["k"],
                     rows=shape[0], streamed=bool(is_streamed(X)),
                     file_mb=round(path.stat().st_size / 2**20, 1)))  # fmt: skip
    _release(device)


def _row(name, device, rate, unit, seconds, peak, **params):
    return {"benchmark": name, "device": str(device), "rate": round(rate, 1), "unit": unit,
            "seconds": round(seconds, 3), "peak_device_memory_gb": peak, **params}  # fmt: skip


def _release(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def print_table(rows):
    print(f"{'benchmark':<24}{'device':<8}{'rate':>14}  {'unit':<9}{'s':>8}  setting")
    for row in rows:
        setting = ", ".join(f"{k}={v}" for k, v in row.items() if k not in
                            ("benchmark", "device", "rate", "unit", "seconds"))  # fmt: skip
        print(f"{row['benchmark']:<24}{row['device']:<8}{row['rate']:>14,.1f}  {row['unit']:<9}"
              f"{row['seconds']:>8.2f}  {setting}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON written")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when available), cuda, cuda:N or cpu")
    parser.add_argument("--sizes", choices=sorted(SIZES), default=None,
                        help="problem sizes (default: full on a GPU, small on the CPU)")
    parser.add_argument("--quick", action="store_true", help="same as --sizes tiny")
    parser.add_argument("--tests", choices=["auto", "run", "collect", "skip"], default="auto",
                        help="the CUDA tests: auto runs them on a GPU and skips them without")
    parser.add_argument("--test-paths", nargs="*", default=None,
                        help="test files, folders or node ids (default: the suite's tests/)")
    parser.add_argument("--test-timeout", type=float, default=360.0)
    args = parser.parse_args(argv)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error(f"--device {args.device}: CUDA is not available on this machine")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    size_name = "tiny" if args.quick else args.sizes or ("full" if device.type == "cuda" else "small")
    size = SIZES[size_name]
    started = time.perf_counter()
    result = {"environment": environment(device), "sizes": size_name}
    if device.type != "cuda":
        why = "no CUDA device" if not torch.cuda.is_available() else f"--device {args.device}"
        print(f"CPU only ({why}; torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}): CUDA tests not run, a small CPU table only.")
        result["note"] = f"CPU only ({why}): CUDA tests not run; the table is a CPU smoke run."
    else:
        env = result["environment"]
        print(f"GPU: {env['device_name']} ({env['memory_total_gb']} GB, capability "
              f"{env['compute_capability']}), torch {torch.__version__}, CUDA {torch.version.cuda}")

    mode = args.tests
    if mode == "auto":
        mode = "run" if device.type == "cuda" else "skip"
    if mode != "skip":
        print(f"CUDA tests ({mode})...", flush=True)
        result["cuda_tests"] = run_cuda_tests(mode, args.test_paths, args.test_timeout)
        summary = {k: v for k, v in result["cuda_tests"].items()
                   if k in ("status", "passed", "failures", "errors", "skipped", "reason")}  # fmt: skip
        print("  ", summary)
        for line in result["cuda_tests"].get("output_tail", [])[-8:]:
            print("   |", line)
    else:
        result["cuda_tests"] = {"status": "not run", "reason": "no CUDA device"
                                if device.type != "cuda" else "--tests skip"}  # fmt: skip

    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        for bench in (bench_sae, bench_topk_step, bench_omp, bench_ito):
            print(f"{bench.__doc__.splitlines()[0]}", flush=True)
            bench(size, device, rows)
        print(bench_streaming.__doc__.splitlines()[0], flush=True)
        bench_streaming(size, device, rows, scratch)
    result["table"] = rows
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print_table(rows)
    print(f"\n{result['seconds']} s; wrote {out}")
    tests = result["cuda_tests"]
    return 1 if tests.get("status") in ("run", "timeout") and not tests.get("ok", False) else 0


if __name__ == "__main__":
    sys.exit(main())
