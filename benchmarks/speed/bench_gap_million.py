"""``sparsegap gap`` over 10^6 rows in bounded memory: wall time, rows/s and peak memory.

Writes a ``.npy`` of ``--rows`` synthetic rows (d=576, SmolLM2's width: positive 32-sparse
mixtures of a known dictionary of ``--n-components`` unit atoms plus 1% noise, float32,
generated in chunks so this process stays small), saves a TopK k=32 SAE whose encoder is
that dictionary (SAELens format), then runs the command in a child process::

    sparsegap gap SAE_DIR --activations ROWS.npy --budgets omp-l0 --out OUT_DIR --quiet

and reports its wall time, rows/s and its own peak resident memory (``VmHWM`` of the
child, read by the child itself at the end: ``ru_maxrss`` would carry this parent's
high-water mark over ``exec``). The file is memory-mapped and read in blocks with
``preadv``, so the peak should not grow with the rows: ``--rows 100000`` next to the
default shows it. BLAS/threadpool set-up printed first.

Run ``python benchmarks/speed/bench_gap_million.py --scratch SCRATCH_DIR`` (about 2.3 GB
of disk at 10^6 rows; ``--record docs/results/gap/million_rows.json`` keeps the result).
"""

import argparse
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
from threadpoolctl import threadpool_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench.paths import recorded_threadpools  # noqa: E402
from bench_gap import D, K, topk_sae  # noqa: E402

from sklearn_sparsegap.interop import save_sae  # noqa: E402

CHUNK = 2**15

# The child: run the command while a thread samples its memory every second (``VmRSS``,
# ``RssAnon``: the heap; ``RssFile``: file pages mapped in), then report its own peak
# (``VmHWM``) and the samples: a peak that grows with the rows shows in them.
CHILD = """
import json, sys, threading, time
sys.path.insert(0, sys.argv.pop(1))
from _bench.memory import memory_status
from sklearn_sparsegap.cli import main
samples, stop = [], threading.Event()
def sample(start=time.perf_counter()):
    while not stop.wait(1.0):
        samples.append({"t": round(time.perf_counter() - start, 1), **memory_status()})
threading.Thread(target=sample, daemon=True).start()
code = main(sys.argv[1:])
stop.set()
print("MEMORY " + json.dumps({**memory_status(), "samples": samples}))
sys.exit(code)
"""


def write_rows(path, n_rows, dictionary, seed=0):
    """``n_rows`` positive K-sparse mixtures of ``dictionary``'s atoms plus 1% noise,
    written chunk by chunk to a float32 ``.npy``."""
    rng = np.random.default_rng(seed)
    n_components = dictionary.shape[0]
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, D))
    for start in range(0, n_rows, CHUNK):
        rows = min(CHUNK, n_rows - start)
        support = np.argpartition(rng.random((rows, n_components)), K, axis=1)[:, :K]
        codes = np.zeros((rows, n_components), dtype=np.float32)
        np.put_along_axis(codes, support, np.abs(rng.normal(size=(rows, K))) + 0.1, axis=1)
        chunk = codes @ dictionary
        chunk += 0.01 * chunk.std() * rng.standard_normal(chunk.shape, dtype=np.float32)
        X[start : start + rows] = chunk
    X.flush()
    del X


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10**6)
    parser.add_argument("--n-components", type=int, default=2304)
    parser.add_argument("--budgets", nargs="+", default=["omp-l0"])
    parser.add_argument("--block-rows", type=int, default=2048)
    parser.add_argument("--scratch", default=None, help="where the rows are written")
    parser.add_argument("--record", default=None, help="write the result as JSON there")
    args = parser.parse_args(argv)

    print(f"python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}")
    pools = recorded_threadpools(threadpool_info())
    for pool in pools:
        print(f"  {pool}")
    rng = np.random.default_rng(1)
    dictionary = rng.normal(size=(args.n_components, D)).astype(np.float32)
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(dir=args.scratch, prefix="gap_million_") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        write_rows(scratch / "rows.npy", args.rows, dictionary)
        written = time.perf_counter() - started
        size_gb = (scratch / "rows.npy").stat().st_size / 2**30
        print(f"wrote {args.rows:,} rows ({size_gb:.2f} GB) in {written:.0f} s", flush=True)
        save_sae(topk_sae(dictionary), scratch / "sae", format="saelens")
        command = ["gap", str(scratch / "sae"), "--activations", str(scratch / "rows.npy"),
                   "--budgets", *args.budgets, "--block-rows", str(args.block_rows),
                   "--out", str(scratch / "out"), "--quiet", "--device", "cpu"]
        started = time.perf_counter()
        benchmarks = str(Path(__file__).resolve().parents[1])
        done = subprocess.run([sys.executable, "-c", CHILD, benchmarks, *command],
                              capture_output=True, text=True)  # fmt: skip
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"sparsegap gap failed:\n{done.stdout}\n{done.stderr}")
        memory = json.loads(done.stdout.rsplit("MEMORY ", 1)[1])
        result = json.loads((scratch / "out" / "results.json").read_text())
    answer_line = done.stdout.splitlines()[0]
    print(answer_line)
    print(f"sparsegap gap on {args.rows:,} rows: {seconds:.0f} s ({args.rows / seconds:,.0f} "
          f"rows/s, SAE and every budget), peak resident memory {memory['VmHWM']:.0f} MB")
    samples = memory.pop("samples")
    if samples:
        for name in ("VmRSS", "RssAnon", "RssFile"):
            values = [m.get(name, 0) for m in samples]
            print(f"  {name}: first {values[0]:.0f} MB, at half time "
                  f"{values[len(values) // 2]:.0f} MB, last {values[-1]:.0f} MB, max "
                  f"{max(values):.0f} MB")
    table = result["table"]
    for i, method in enumerate(table["method"]):
        print(f"  {method}: FVU {table['fvu'][i]:.4f}, L0 {table['mean_l0'][i]:.2f}, "
              f"{table['seconds_per_1k_rows'][i]:.3f} s per 1k rows")
    record = {
        "command": "python benchmarks/speed/bench_gap_million.py --scratch SCRATCH_DIR "
                   f"--rows {args.rows} --n-components {args.n_components} "
                   f"--budgets {' '.join(args.budgets)}",
        "gap_command": "sparsegap gap SAE_DIR --activations ROWS.npy --budgets "
                       f"{' '.join(args.budgets)} --block-rows {args.block_rows} "
                       "--out OUT_DIR --quiet --device cpu",
        "rows": args.rows, "n_features": D, "n_components": args.n_components, "k": K,
        "file_gb": round(size_gb, 3), "seconds": round(seconds, 1),
        "rows_per_second": round(args.rows / seconds, 1),
        "peak_rss_mb": round(memory["VmHWM"], 1), "memory_at_end_mb": memory,
        "memory_samples": samples[:: max(1, len(samples) // 50)],
        "answer": answer_line, "table": table,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "threadpools": pools, "load_average": os.getloadavg(),
    }
    if args.record:
        Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
