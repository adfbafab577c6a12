"""An activation set of 10^7 x 384 float32 on disk: streaming SAE training, ITO on dask.

1. ``generate``: synthetic activations with realistic structure
   (``bench_dask.synthetic_rows``: Zipf-frequent atoms of a random 4096-atom dictionary,
   heavy-tailed magnitudes, a shared mean, noise) written chunk by chunk to an ``.npy``
   file (``np.lib.format.open_memmap``; 10^7 rows are 15.4 GB), so memory stays one chunk.
2. ``train``: in a fresh subprocess per size, ``SAEEncoder.fit`` on the memmap of the
   first ``n`` rows (streamed from disk by the library's ``DiskBatches``) for a fixed
   number of optimiser steps; reports tokens/s and the subprocess's peak RSS, for each
   size given (e.g. 10^6 and 10^7: the RSS must not grow with the rows).
3. ``encode``: ``SAEPlusITO`` (the trained SAE + OMP) ``transform`` of the whole set (or
   ``--encode-rows``) opened as a dask array of chunks read by the workers, on a
   ``LocalCluster``; reports the wall time and rows/s (codes are persisted as their
   mean L0 per chunk only, not gathered).

Usage::

    python benchmarks/bench_10m.py --path /work/data/synthetic_10m_384.npy \\
        --n-rows 10000000 --sizes 1000000 10000000 --steps 200 --encode-rows 10000000
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dask import N_FEATURES, synthetic_rows  # noqa: E402

CHUNK = 65536


def generate(path, n_rows, seed=0):
    """Write ``n_rows`` synthetic rows to ``path`` (resumes nothing: overwrites)."""
    start_time = time.perf_counter()
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                  shape=(n_rows, N_FEATURES))  # fmt: skip
    for start in range(0, n_rows, CHUNK):
        stop = min(start + CHUNK, n_rows)
        X[start:stop] = synthetic_rows(seed, start, stop - start)
        if (start // CHUNK) % 16 == 0:
            X.flush()
    X.flush()
    del X
    return time.perf_counter() - start_time


def _train_child(path, n_rows, steps, batch_size, n_components, model_path):
    import joblib
    import torch

    from sklearn_sparsegap import SAEEncoder

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    X = np.load(path, mmap_mode="r")[:n_rows]
    # An epoch of 10^7 rows is hours on 2 cores: partial_fit on evenly spaced slices of
    # the file, each 20 batches (too large to be read into memory, so it is streamed
    # from disk), until ``steps`` steps; the source reads the whole file's range.
    slice_rows = 20 * batch_size
    n_slices = max(1, steps // 20)
    starts = np.linspace(0, n_rows - slice_rows, n_slices).astype(int)
    sae = SAEEncoder(n_components=n_components, activation="topk", n_nonzero_coefs=32,
                     batch_size=batch_size, random_state=0, device="cpu")  # fmt: skip
    start = time.perf_counter()
    for first in starts:
        sae.partial_fit(X[first : first + slice_rows])
    seconds = time.perf_counter() - start
    rows_seen = int(sae._n_steps) * batch_size
    joblib.dump(sae, model_path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n_rows": n_rows, "steps": int(sae._n_steps), "seconds": seconds,
                      "tokens_per_s": rows_seen / seconds, "peak_rss_mb": peak,
                      "final_loss": float(sae.history_["loss"][-1])}))  # fmt: skip


def _encode(path, n_rows, model_path, k, n_workers, chunk_rows):
    import dask.array as da
    import joblib
    from distributed import Client, LocalCluster, wait

    from sklearn_sparsegap import SAEPlusITO

    sae = joblib.load(model_path)
    ito = SAEPlusITO(sae, transform_algorithm="omp", transform_n_nonzero_coefs=k,
                     prefit=True, device="cpu")  # fmt: skip
    ito.fit(np.load(path, mmap_mode="r")[:4096])
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        reader = np.load(path, mmap_mode="r")
        X = da.from_array(_NpyRows(path, reader.shape), chunks=(chunk_rows, -1),
                          asarray=False, fancy=False)[:n_rows]  # fmt: skip
        client.compute(ito.transform(X[:64])).result()  # warm-up, off the clock
        start = time.perf_counter()
        l0 = (ito.transform(X) != 0).sum(axis=1)
        per_chunk = client.persist(l0)
        wait(per_chunk)
        seconds = time.perf_counter() - start
        mean_l0 = float(client.compute(per_chunk.mean()).result())
    return seconds, mean_l0


class _NpyRows:
    """Rows of an ``.npy`` file read on demand by the worker (pickles as its path)."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, path, shape):
        self.path, self.shape = path, tuple(shape)

    def __getitem__(self, key):
        return np.array(np.load(self.path, mmap_mode="r")[key])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/work/data/synthetic_10m_384.npy")
    parser.add_argument("--n-rows", type=int, default=10_000_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--n-components", type=int, default=1536)
    parser.add_argument("--k", type=int, default=32, help="OMP non-zeros per row")
    parser.add_argument("--encode-rows", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, n_rows, steps, batch_size, n_components, model_path = args.child
        _train_child(path, int(n_rows), int(steps), int(batch_size), int(n_components),
                     model_path)  # fmt: skip
        return

    folder = os.path.dirname(os.path.abspath(args.path))
    print(f"df -h {folder}:", shutil.disk_usage(folder))
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()}")
    need = args.n_rows * N_FEATURES * 4
    existing = os.path.exists(args.path) and np.load(args.path, mmap_mode="r").shape == (
        args.n_rows, N_FEATURES)
    if not existing:
        if shutil.disk_usage(folder).free < need * 1.1:
            sys.exit(f"not enough disk for {need / 1e9:.1f} GB at {folder}")
        seconds = generate(args.path, args.n_rows)
        print(f"generated {args.n_rows} x {N_FEATURES} float32 ({need / 1e9:.1f} GB) "
              f"in {seconds:.0f} s")
    model_path = args.path + ".sae.joblib"
    for n_rows in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", args.path, str(n_rows), str(args.steps),
             str(args.batch_size), str(args.n_components), model_path],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        print("train", out.stdout.strip().splitlines()[-1])
    encode_rows = args.encode_rows or args.n_rows
    seconds, l0 = _encode(args.path, encode_rows, model_path, args.k, args.workers, CHUNK)
    print(f"ITO (OMP, K={args.k}) of {encode_rows} rows on a LocalCluster of {args.workers} "
          f"x 1-thread workers: {seconds:.0f} s ({encode_rows / seconds:,.0f} rows/s), "
          f"mean L0 {l0:.1f}")


if __name__ == "__main__":
    main()
