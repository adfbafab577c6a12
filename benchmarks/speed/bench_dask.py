"""ITO encoding of a large dask array on a LocalCluster: 1 worker vs 2 workers.

Synthetic activations with realistic structure (``synthetic_rows``: Zipf-frequent atoms of
a random dictionary, heavy-tailed magnitudes and row norms, a shared mean direction, noise) are generated
on the workers chunk by chunk and persisted there, so the timing is the encoding only, not
the transfer of the data. A ``SAEPlusITO`` (SAE encoder + OMP refinement, K non-zeros) is
fitted in memory on a sample, then ``ito.transform(X_dask)`` is persisted on a cluster of
1 and of 2 single-threaded worker processes; the speed-up is the ratio of the two wall
times. The same encoding in this process (torch with 1 and with 2 threads) is timed on the
same rows as the reference, and the first chunk of the cluster's codes is checked against
it.

Usage::

    python benchmarks/speed/bench_dask.py [--n-rows 131072] [--chunk-rows 8192] [--k 16]
"""

import argparse
import functools
import os
import time

import numpy as np
import torch
from threadpoolctl import threadpool_info

N_FEATURES, N_ATOMS = 384, 4096
STREAM_ROWS = 65536  # rows per random stream of synthetic_rows


@functools.lru_cache(maxsize=4)
def _fixed_parts(seed, n_features, n_atoms):
    """The random unit-norm dictionary, the shared mean and the Zipf CDF of ``seed``."""
    fixed = torch.Generator().manual_seed(_seed(seed, 0))
    dictionary = torch.randn(n_atoms, n_features, generator=fixed)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    mean = torch.randn(n_features, generator=fixed)
    mean *= 2.0 / mean.norm()
    frequency = 1.0 / torch.arange(1, n_atoms + 1, dtype=torch.float64) ** 1.1
    cdf = (frequency.cumsum(0) / frequency.sum()).to(torch.float32)
    return dictionary, mean, cdf


def _seed(*words):
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0] >> 1)


def synthetic_rows(seed, start, n_rows, *, n_features=N_FEATURES, n_atoms=N_ATOMS,
                   n_active=20, noise=0.05, out=None):  # fmt: skip
    """Rows ``start:start+n_rows`` of a synthetic activation set (float32, deterministic).

    Every row is ``mean + norm * codes @ dictionary + noise``: ``n_active`` atoms drawn
    with Zipf frequencies (exponent 1.1: a few features fire everywhere, most rarely)
    from a fixed random unit-norm dictionary of ``n_atoms``, magnitudes
    ``exp(N(0, 0.5))``, a heavy-tailed (log-normal, sigma 0.5) norm per row, a mean
    direction of norm 2 shared by all rows and Gaussian noise. Vectorised in torch (the
    sum of the atoms is one ``embedding_bag``): several hundred MB/s per core. The rows
    of ``(seed, start)`` do not depend on the chunking only when chunks start at
    multiples of 65,536 rows (the random streams are per 65,536-row block); ``out``
    (a float32 array of ``(n_rows, n_features)``, e.g. a writer's buffer) receives them
    in place.
    """
    dictionary, mean, cdf = _fixed_parts(seed, n_features, n_atoms)
    X = torch.empty(n_rows, n_features) if out is None else torch.from_numpy(out)
    for block in range(0, n_rows, STREAM_ROWS):
        rows = min(STREAM_ROWS, n_rows - block)
        rng = torch.Generator().manual_seed(_seed(seed, 1, start + block))
        # Inverse-CDF Zipf draws: a binary search per draw, no n_atoms-sized temporary.
        atoms = torch.searchsorted(cdf, torch.rand(rows, n_active, generator=rng))
        atoms.clamp_(max=n_atoms - 1)
        magnitudes = torch.randn(rows, n_active, generator=rng).mul_(0.5).exp_()
        magnitudes *= torch.randn(rows, 1, generator=rng).mul_(0.5).exp_()
        part = X[block : block + rows]
        part.copy_(torch.nn.functional.embedding_bag(
            atoms, dictionary, per_sample_weights=magnitudes, mode="sum"))  # fmt: skip
        part += mean
        part.add_(torch.randn(rows, n_features, generator=rng), alpha=noise)
    return X.numpy() if out is None else out


def _synthetic_dask(n_rows, chunk_rows, seed=0):
    import dask
    import dask.array as da

    parts = []
    for start in range(0, n_rows, chunk_rows):
        rows = min(chunk_rows, n_rows - start)
        part = dask.delayed(synthetic_rows, pure=True)(seed, start, rows)
        parts.append(da.from_delayed(part, (rows, N_FEATURES), dtype=np.float32))
    return da.concatenate(parts)


def _fit_ito(k, n_components, seed=0):
    from sklearn_sparsegap import SAEEncoder, SAEPlusITO

    X_fit = synthetic_rows(seed, 10**9, 16384)  # rows not in the encoded set
    ito = SAEPlusITO(
        SAEEncoder(n_components=n_components, alpha=0.05, max_iter=3, batch_size=1024,
                   random_state=0, device="cpu"),
        transform_algorithm="omp", transform_n_nonzero_coefs=k, device="cpu",
    )  # fmt: skip
    return ito.fit(X_fit)


def _in_process(ito, X, threads):
    torch.set_num_threads(threads)
    start = time.perf_counter()
    codes = ito.transform(X)
    return time.perf_counter() - start, codes


def _on_cluster(ito, n_rows, chunk_rows, n_workers):
    from distributed import Client, LocalCluster, wait

    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        threads = client.run(lambda: (os.environ.get("OMP_NUM_THREADS"),
                                      torch.get_num_threads()))  # fmt: skip
        X = client.persist(_synthetic_dask(n_rows, chunk_rows))
        wait(X)
        # Warm-up: imports and the first torch calls on every worker, off the clock.
        client.compute(ito.transform(X[: 64 * n_workers].rechunk(64))).result()
        cpu_before = client.run(time.process_time)
        start = time.perf_counter()
        codes = client.persist(ito.transform(X))
        wait(codes)
        seconds = time.perf_counter() - start
        cpu_after = client.run(time.process_time)
        # CPU seconds each worker spent: how evenly the chunks were split, whatever
        # share of the cores the machine gave the workers.
        cpu = sorted(cpu_after[w] - cpu_before[w] for w in cpu_after)
        first = client.compute(codes[:chunk_rows]).result()
        l0 = float(client.compute((codes != 0).sum(axis=1).mean()).result())
        del codes, X
    return seconds, first, l0, threads, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-rows", type=int, default=131072)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument("--n-components", type=int, default=1536)
    parser.add_argument("--k", type=int, default=16, help="OMP non-zeros per row")
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()}")
    for pool in threadpool_info():
        print(f"  {pool['internal_api']}: {pool['num_threads']} threads ({pool['prefix']})")
    ito = _fit_ito(args.k, args.n_components)
    print(f"SAEPlusITO(SAEEncoder(n_components={args.n_components}), omp, K={args.k}); "
          f"X: {args.n_rows} x {N_FEATURES} float32 in chunks of {args.chunk_rows} rows")

    X = np.concatenate([synthetic_rows(0, start, min(args.chunk_rows, args.n_rows - start))
                        for start in range(0, args.n_rows, args.chunk_rows)])  # fmt: skip
    in_process = {}
    for threads in (1, 2):
        in_process[threads], reference = _in_process(ito, X, threads)
        print(f"in process, torch {threads} thread(s): {in_process[threads]:.2f} s "
              f"({args.n_rows / in_process[threads]:,.0f} rows/s)")
    del X

    cluster = {}
    for n_workers in (1, 2):
        seconds, first, l0, threads, cpu = _on_cluster(ito, args.n_rows, args.chunk_rows,
                                                       n_workers)  # fmt: skip
        cluster[n_workers] = seconds
        error = float(np.abs(first - reference[: args.chunk_rows]).max())
        print(f"dask LocalCluster, {n_workers} worker(s) x 1 thread {sorted(threads.values())}: "
              f"{seconds:.2f} s ({args.n_rows / seconds:,.0f} rows/s); mean L0 {l0:.2f}; "
              f"first chunk vs in-process max |diff| {error:.1e}; worker CPU s "
              f"{[round(c, 2) for c in cpu]} (sum / max {sum(cpu) / max(cpu):.2f}: the "
              f"speed-up with a free core per worker); load average {os.getloadavg()}")
    print(f"speed-up 2 workers / 1 worker (wall): {cluster[1] / cluster[2]:.2f}x "
          f"(in-process 2 threads / 1 thread: {in_process[1] / in_process[2]:.2f}x)")


if __name__ == "__main__":
    main()
