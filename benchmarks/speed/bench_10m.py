"""An activation set of 10^7 x 384 float32 on disk: streaming SAE training, ITO on dask.

1. ``generate``: synthetic activations with realistic structure
   (``bench_dask.synthetic_rows``: Zipf-frequent atoms of a random 4096-atom dictionary,
   heavy-tailed magnitudes and row norms, a shared mean, noise) generated in vectorised
   blocks of 262,144 rows and written as an activation set (the library's
   ``ActivationWriter``: one committed, CRC-checked shard per block), which
   ``load_activations`` opens as a memmap or a dask array. The next block is generated
   while the previous one is written; 10^7 rows are 15.4 GB.
2. ``train``: in a fresh subprocess per size, ``SAEEncoder.fit`` on the memmap of the
   first ``n`` rows (streamed from disk by the library's ``DiskBatches``) for a fixed
   number of optimiser steps; reports tokens/s and the subprocess's own peak RSS
   (``VmHWM``, see ``_bench.memory``) and its split into anonymous memory and mapped
   file pages at the end, for each
   size given (e.g. 10^6 and 10^7: the RSS must not grow with the rows).
3. ``encode``: ``SAEPlusITO`` (the trained SAE + OMP) ``transform`` of the whole set (or
   ``--encode-rows``) opened with ``load_activations(as_dask=True)`` (chunks read by
   the workers), on a ``LocalCluster``; reports the wall time and rows/s (codes are
   reduced to their L0 per row on the workers, not gathered).

Usage::

    python benchmarks/speed/bench_10m.py --path DATA_DIR/synthetic_10m_384 \\
        --n-rows 10000000 --sizes 1000000 10000000 --steps 200 --encode-rows 65536
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.memory import memory_status, peak_rss_mb  # noqa: E402
from bench_dask import N_FEATURES, STREAM_ROWS, synthetic_rows  # noqa: E402

CHUNK = 65536
BLOCK_ROWS = 4 * STREAM_ROWS  # rows generated, and committed as one shard, at a time
SEQUENCE_LENGTH = 1024  # of the synthetic metadata: a "sequence" is 1024 consecutive rows


def _metadata(start, n_rows):
    """document, sequence, position, token of rows ``start:start+n_rows`` (synthetic:
    1024-row sequences, one per document; the token ids are placeholders)."""
    rows = np.arange(start, start + n_rows, dtype=np.int64)
    sequence = rows // SEQUENCE_LENGTH
    return np.stack([sequence, sequence, rows % SEQUENCE_LENGTH, rows % 49152])


def generate(path, n_rows, seed=0, threads=1):
    """Write ``n_rows`` synthetic rows as an activation set at ``path`` (which must not
    hold one yet); returns the seconds taken."""
    import torch

    from sklearn_sparsegap.activations._store import ActivationWriter

    torch.set_num_threads(threads)
    start_time = time.perf_counter()
    settings = {"dtype": "float32", "source": f"bench_dask.synthetic_rows(seed={seed})",
                "n_rows": n_rows}  # fmt: skip
    writer = ActivationWriter(path, settings, shard_size=BLOCK_ROWS)
    # Two buffers: one being written (crc32, write and fsync release the GIL), one
    # being generated.
    buffers = [np.empty((BLOCK_ROWS, N_FEATURES), dtype=np.float32) for _ in range(2)]
    with ThreadPoolExecutor(1, thread_name_prefix="write") as pool:
        pending = None
        for index, start in enumerate(range(0, n_rows, BLOCK_ROWS)):
            rows = min(BLOCK_ROWS, n_rows - start)
            block = synthetic_rows(seed, start, rows, out=buffers[index % 2][:rows])
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.append, block, _metadata(start, rows))
        if pending is not None:
            pending.result()
    writer.finish(complete=True, max_tokens_reached=False)
    return time.perf_counter() - start_time


def _train_child(path, n_rows, steps, batch_size, n_components, model_path):
    import joblib
    import torch

    from sklearn_sparsegap import SAEEncoder

    from sklearn_sparsegap.activations import load_activations

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    X = load_activations(path)[0][:n_rows]
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
    peak = peak_rss_mb()  # not ru_maxrss: it carries the parent's peak over (_bench.memory)
    print(json.dumps({"n_rows": n_rows, "steps": int(sae._n_steps), "seconds": seconds,
                      "tokens_per_s": rows_seen / seconds, "peak_rss_mb": peak,
                      "memory_mb": memory_status(),
                      "final_loss": float(sae.history_["loss"][-1])}))  # fmt: skip


def _encode(path, n_rows, model_path, k, n_workers, chunk_rows):
    import joblib
    from distributed import Client, LocalCluster, wait

    from sklearn_sparsegap import SAEPlusITO
    from sklearn_sparsegap.activations import load_activations

    sae = joblib.load(model_path)
    ito = SAEPlusITO(sae, transform_algorithm="omp", transform_n_nonzero_coefs=k,
                     prefit=True, device="cpu")  # fmt: skip
    ito.fit(np.array(load_activations(path)[0][:4096]))
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        X = load_activations(path, as_dask=True, chunk_rows=chunk_rows)[0][:n_rows]
        client.compute(ito.transform(X[:64])).result()  # warm-up, off the clock
        start = time.perf_counter()
        l0 = (ito.transform(X) != 0).sum(axis=1)
        per_row = client.persist(l0)
        wait(per_row)
        seconds = time.perf_counter() - start
        mean_l0 = float(client.compute(per_row.mean()).result())
    return seconds, mean_l0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="synthetic_10m_384",
                        help="the activation set to write and read (15.4 GB at 10^7 rows)")
    parser.add_argument("--n-rows", type=int, default=10_000_000)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000],
                        help="rows trained on, one child each (none: encode with the "
                             "SAE saved by an earlier run)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--n-components", type=int, default=1536)
    parser.add_argument("--k", type=int, default=32, help="OMP non-zeros per row")
    parser.add_argument("--encode-rows", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, n_rows, steps, batch_size, n_components, model_path = args.child
        _train_child(path, int(n_rows), int(steps), int(batch_size), int(n_components),
                     model_path)  # fmt: skip
        return

    from threadpoolctl import threadpool_info

    from sklearn_sparsegap.activations._store import read_manifest

    folder = os.path.dirname(os.path.abspath(args.path))
    print(f"df -h {folder}:", shutil.disk_usage(folder))
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()}")
    for pool in threadpool_info():
        print(f"  {pool['internal_api']}: {pool['num_threads']} threads ({pool['prefix']})")
    need = args.n_rows * N_FEATURES * 4
    manifest = read_manifest(args.path) if os.path.isdir(args.path) else None
    if manifest is None or not manifest["complete"] or manifest["n_rows"] != args.n_rows:
        if manifest is not None or os.path.exists(args.path):
            sys.exit(f"{args.path} holds something else: delete it first")
        if shutil.disk_usage(folder).free < need * 1.1:
            sys.exit(f"not enough disk for {need / 1e9:.1f} GB at {folder}")
        seconds = generate(args.path, args.n_rows)
        print(f"generated {args.n_rows} x {N_FEATURES} float32 ({need / 1e9:.1f} GB) "
              f"in {seconds:.0f} s: {need / seconds / 1e6:.0f} MB/s "
              f"(load average {os.getloadavg()})", flush=True)
    if args.generate_only:
        return
    model_path = os.path.join(folder, os.path.basename(args.path) + ".sae.joblib")
    for n_rows in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", args.path, str(n_rows), str(args.steps),
             str(args.batch_size), str(args.n_components), model_path],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        print("train", out.stdout.strip().splitlines()[-1], f"load {os.getloadavg()}",
              flush=True)
    if args.skip_encode:
        return
    encode_rows = args.encode_rows or args.n_rows
    seconds, l0 = _encode(args.path, encode_rows, model_path, args.k, args.workers, CHUNK)
    print(f"ITO (OMP, K={args.k}) of {encode_rows} rows on a LocalCluster of {args.workers} "
          f"x 1-thread workers: {seconds:.0f} s ({encode_rows / seconds:,.0f} rows/s), "
          f"mean L0 {l0:.1f}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
