"""Grid search in parallel vs sequential, on the paper's task.

``GridSearchCV(SAEEncoder(), {"alpha": ...}, cv=3, scoring=mcc_scorer)`` on the paper's
N=16 / M=8 / K=3 data, run with ``n_jobs=1`` and ``n_jobs=2``. ``n_jobs=2`` is timed three ways:
"cold" includes starting joblib's worker processes (each imports torch, scikit-learn and
the library: seconds), "warm" reuses them, as a second search in the same session does,
and "threads" runs the two workers as threads of this process
(``joblib.parallel_config(backend="threading")``: no worker start; torch releases the
GIL in its kernels). Wall time, CPU time (this process plus
its worker processes) and the best estimator's MCC are printed side by side, with the
thread count torch uses inside a worker and the BLAS/threadpool configuration.

Usage::

    python benchmarks/speed/bench_parallel_search.py [--n-samples 2048] [--repeats 1]
"""

import argparse
import contextlib
import os
import time

import numpy as np
import psutil
from joblib import Parallel, delayed, parallel_config
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_info

from sklearn_sparsegap import SAEEncoder, make_sparse_dictionary_data, mcc_scorer

ALPHAS = [0.001, 0.003, 0.01, 0.03]


def _worker_threads(_):
    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def _cpu_seconds():
    """CPU time of this process and every live child (joblib's loky workers)."""
    processes = [psutil.Process()] + psutil.Process().children(recursive=True)
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _search(X, codes, n_jobs, backend=None):
    search = GridSearchCV(
        SAEEncoder(random_state=0, device="cpu"),
        {"alpha": ALPHAS},
        cv=3,
        scoring=mcc_scorer,
        n_jobs=n_jobs,
    )
    cpu, wall = _cpu_seconds(), time.perf_counter()
    with parallel_config(backend=backend) if backend else contextlib.nullcontext():
        search.fit(X, codes)
    wall = time.perf_counter() - wall
    # Workers that exited during the search are not counted; loky keeps them alive.
    cpu = _cpu_seconds() - cpu
    return search, wall, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    X, _, codes = make_sparse_dictionary_data(args.n_samples, random_state=0)
    X_test, _, codes_test = make_sparse_dictionary_data(args.n_samples, random_state=1)
    print(f"paper's task: {args.n_samples} samples, N=16, M=8, K=3; alpha grid {ALPHAS}, cv=3")
    print(f"cores: {os.cpu_count()} (shared machine: compare ratios, not seconds)")
    for info in threadpool_info():
        print(f"threadpool: {info['internal_api']} {info.get('version')} "
              f"num_threads={info['num_threads']}")  # fmt: skip

    rows = []
    for repeat in range(args.repeats):
        runs = [("n_jobs=1", 1, None), ("n_jobs=2 cold", 2, None), ("n_jobs=2 warm", 2, None),
                ("n_jobs=2 threads", 2, "threading")]  # fmt: skip
        for label, n_jobs, backend in runs:
            if label.endswith("cold") and repeat == 0:
                pass  # the first parallel call of the process starts the workers
            elif label.endswith("cold"):
                continue
            search, wall, cpu = _search(X, codes, n_jobs, backend)
            mcc = mcc_scorer(search.best_estimator_, X_test, codes_test)
            rows.append((label, wall, cpu, search.best_params_["alpha"], mcc))
    threads = Parallel(n_jobs=2)(delayed(_worker_threads)(i) for i in range(2))
    print(f"inside a worker: OMP_NUM_THREADS={threads[0][0]}, torch threads={threads[0][1]}")

    sequential = np.median([wall for label, wall, *_ in rows if label == "n_jobs=1"])
    print(f"{'run':<17}{'wall s':>8}{'cpu s':>8}{'seq/wall':>10}{'best alpha':>12}{'test MCC':>10}")
    for label, wall, cpu, alpha, mcc in rows:
        print(f"{label:<17}{wall:8.2f}{cpu:8.2f}{sequential / wall:10.2f}{alpha:12g}{mcc:10.4f}")


if __name__ == "__main__":
    main()
