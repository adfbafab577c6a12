"""Benchmark ``sparse_encode`` against scikit-learn's sparse coding, in one run.

Two known-dictionary settings, codes scored by latent MCC against the true codes:

1. The paper's large scale: N=1000 components, M=200 features, K=20, 4096 samples
   (half-normal codes). Our ``omp`` (plain and positive), ``gradient_pursuit``, ``mp``,
   ``topk`` and positive ``fista``, on the generator's float64 data and on its float32
   copy, next to scikit-learn's ``SparseCoder(transform_algorithm="omp")`` (float64,
   warmed up, same process; with ``--lasso-lars`` also ``"lasso_lars"``). Each row gives
   the wall time, the process CPU time, the MCC, the speed-up over scikit-learn's OMP (in
   wall time, and in CPU time: the less load-dependent of the two on a shared machine)
   and the achieved GFLOP/s
   (FLOPs from :func:`sklearn_sparsegap.flops.sparse_encode_flops`), next to torch's own
   matmul GFLOP/s in that dtype measured in the same run (the practical compute ceiling).
2. The paper's small setting: N=16, M=8, K=3, the 1024 test samples of a 2048-sample draw
   with the true dictionary: our positive FISTA over a few ``alpha``, OMP and the paper's
   Adam inference, next to scikit-learn's ``lasso_cd`` (positive, alpha 0.01), ``lasso_lars``
   and ``omp``.

Run ``python benchmarks/speed/bench_sparse_encode.py`` (``--quick`` for a smaller smoke run,
``--help`` for options). Timings are the best of ``--repeats`` calls; absolute seconds drift
between runs and machines, so compare the ratios printed in the same run.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import threadpoolctl
import torch
from sklearn.decomposition import SparseCoder
from threadpoolctl import threadpool_info

from sklearn_sparsegap import (
    make_sparse_dictionary_data,
    mean_corr_coef,
    paper_l1_to_alpha,
    sparse_encode,
)
from sklearn_sparsegap.flops import sparse_encode_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.tables import print_table  # noqa: E402


_CPU = {}  # CPU seconds (all threads of the process) of each function's best call


def _timed(func, repeats):
    """Best wall time of up to ``repeats`` calls (one call if it takes over 5 s).

    The process CPU time of that call is kept in ``_CPU[func]``: on a machine shared
    with other jobs it varies less than the wall time.
    """
    best, result = np.inf, None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = func()
        seconds = time.perf_counter() - start
        if seconds < best:
            best, _CPU[func] = seconds, time.process_time() - cpu
        if best > 5.0:
            break
    return best, result


def matmul_gflops(size=2048, repeats=3, dtype=torch.float32):
    """torch's matmul throughput on this machine, in GFLOP/s."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator, dtype=dtype)
    b = torch.randn(size, size, generator=generator, dtype=dtype)
    a @ b  # warm-up
    seconds, _ = _timed(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def _sklearn_coder(dictionary, algorithm, **kwargs):
    coder = SparseCoder(dictionary, transform_algorithm=algorithm, **kwargs)
    return coder.transform


def bench_large(args):
    n_samples = 1024 if args.quick else args.n_samples
    N, M, K = 1000, 200, 20
    X64, D64, codes_true = make_sparse_dictionary_data(
        n_samples, n_components=N, n_features=M, n_nonzero_coefs=K, random_state=0
    )
    # scikit-learn computes in float64: its time is the reference of every row.
    coder = _sklearn_coder(D64, "omp", transform_n_nonzero_coefs=K)
    coder(X64[:64])  # warm-up
    reference_call = lambda: coder(X64)  # noqa: E731
    reference, codes = _timed(reference_call, args.sklearn_repeats)
    reference_cpu = _CPU[reference_call]
    sklearn_rows = [[
        f"sklearn SparseCoder omp K={K}", "float64", f"{reference:.3f}",
        f"{reference_cpu:.3f}", f"{mean_corr_coef(codes_true, codes):.5f}", "1.0x", "1.0x",
        "-", "-",
    ]]  # fmt: skip
    # scikit-learn's fastest set-up on this machine, for the record: one process per core
    # (n_jobs) with one BLAS thread each (its small per-sample solves lose to the BLAS
    # team's wake-ups). The speed-ups are against the default above, as a user gets it.
    parallel = _sklearn_coder(D64, "omp", transform_n_nonzero_coefs=K, n_jobs=os.cpu_count())
    with threadpoolctl.threadpool_limits(1):
        parallel(X64[:64])
        best_call = lambda: parallel(X64)  # noqa: E731
        best, codes = _timed(best_call, args.sklearn_repeats)
    sklearn_rows.append([
        f"sklearn SparseCoder omp K={K}, n_jobs={os.cpu_count()}, 1 BLAS thread", "float64",
        # Its CPU time is in the worker processes, which process_time does not count.
        f"{best:.3f}", "-", f"{mean_corr_coef(codes_true, codes):.5f}",
        f"{reference / best:.1f}x", "-", "-", "-",
    ])  # fmt: skip
    if args.lasso_lars:
        call = lambda: _sklearn_coder(D64, "lasso_lars", transform_alpha=1e-3)(X64)  # noqa: E731
        seconds, codes = _timed(call, 1)
        sklearn_rows.append([
            "sklearn SparseCoder lasso_lars alpha=1e-3", "float64", f"{seconds:.3f}",
            f"{_CPU[call]:.3f}", f"{mean_corr_coef(codes_true, codes):.5f}",
            f"{reference / seconds:.1f}x", f"{reference_cpu / _CPU[call]:.1f}x", "-", "-",
        ])  # fmt: skip

    rows = list(sklearn_rows)
    for dtype in (np.float64, np.float32):
        X, D = X64.astype(dtype), D64.astype(dtype)
        torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
        ceiling = matmul_gflops(repeats=args.repeats, dtype=torch_dtype)

        def ours(algorithm, label, **kwargs):
            sparse_encode(X[:64], D, algorithm=algorithm, **kwargs)  # warm-up

            def call():
                return sparse_encode(X, D, algorithm=algorithm, return_n_iter=True, **kwargs)

            seconds, (codes, n_iter) = _timed(call, args.repeats)
            flops = sparse_encode_flops(
                algorithm, M, N, n_samples, n_iter=n_iter,
                n_nonzero_coefs=kwargs.get("n_nonzero_coefs"),
            )  # fmt: skip
            rows.append([
                f"{label} ({n_iter} it)", np.dtype(dtype).name, f"{seconds:.3f}",
                f"{_CPU[call]:.3f}", f"{mean_corr_coef(codes_true, codes):.5f}",
                f"{reference / seconds:.1f}x", f"{reference_cpu / _CPU[call]:.1f}x",
                f"{flops / seconds / 1e9:.1f}", f"{ceiling:.0f}",
            ])  # fmt: skip

        ours("omp", f"ours omp K={K}", n_nonzero_coefs=K)
        ours("omp", f"ours omp K={K} positive", n_nonzero_coefs=K, positive=True)
        ours("gradient_pursuit", f"ours gradient_pursuit K={K}", n_nonzero_coefs=K)
        ours("mp", f"ours mp K={K}", n_nonzero_coefs=K)
        ours("topk", f"ours topk K={K}", n_nonzero_coefs=K)
        for alpha, max_iter in args.fista:
            ours(
                "fista", f"ours fista positive alpha={alpha:g} max_iter={max_iter}",
                alpha=alpha, positive=True, max_iter=max_iter,
            )  # fmt: skip

    print_table(
        f"Known dictionary, N={N}, M={M}, K={K}, {n_samples} samples, "
        f"{torch.get_num_threads()} torch threads; load average {os.getloadavg()[0]:.1f}",
        ["method", "dtype", "seconds", "CPU s", "latent MCC", "speed-up vs sklearn omp",
         "CPU-time ratio", "GFLOP/s", "torch matmul GFLOP/s"],
        rows,
    )  # fmt: skip


def bench_small(args):
    N, M, K, n_test = 16, 8, 3, 1024
    X, D, codes = make_sparse_dictionary_data(
        2 * n_test, n_components=N, n_features=M, n_nonzero_coefs=K, random_state=0
    )
    X, codes_true = X[n_test:], codes[n_test:]
    rows = []

    def add(name, seconds, codes_pred):
        rows.append([name, f"{seconds:.3f}", f"{mean_corr_coef(codes_true, codes_pred):.4f}"])

    for label, algorithm, kwargs in [
        ("sklearn SparseCoder lasso_cd positive alpha=0.01", "lasso_cd",
         dict(transform_alpha=0.01, positive_code=True)),
        ("sklearn SparseCoder lasso_lars alpha=0.01", "lasso_lars", dict(transform_alpha=0.01)),
        ("sklearn SparseCoder omp K=3", "omp", dict(transform_n_nonzero_coefs=K)),
    ]:  # fmt: skip
        seconds, pred = _timed(lambda: _sklearn_coder(D, algorithm, **kwargs)(X), args.repeats)
        add(label, seconds, pred)

    for alpha in (0.003, 0.01, 0.02, 0.05):
        seconds, (pred, n_iter) = _timed(
            lambda: sparse_encode(X, D, alpha=alpha, positive=True, return_n_iter=True),
            args.repeats,
        )
        add(f"ours fista positive alpha={alpha} ({n_iter} it)", seconds, pred)
    seconds, pred = _timed(
        lambda: sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=K), args.repeats
    )
    add("ours omp K=3", seconds, pred)
    seconds, pred = _timed(
        lambda: sparse_encode(X, D, algorithm="omp", n_nonzero_coefs=K, positive=True),
        args.repeats,
    )
    add("ours omp K=3 positive", seconds, pred)
    if not args.quick:
        alpha = paper_l1_to_alpha(0.01, M, N)
        seconds, pred = _timed(
            lambda: sparse_encode(X, D, algorithm="adam", alpha=alpha, max_iter=10_000, tol=0.0),
            1,
        )
        add("ours adam (the paper's ITO: 10k steps, lr 3e-3, l1 0.01)", seconds, pred)

    print_table(
        f"Known dictionary, N={N}, M={M}, K={K}, {n_test} test samples, float64, "
        f"{torch.get_num_threads()} torch threads",
        ["method", "seconds", "latent MCC"],
        rows,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1024 samples, fewer rows")
    parser.add_argument("--n-samples", type=int, default=4096)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[2], help="torch thread counts to run"
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of this many calls")
    parser.add_argument(
        "--sklearn-repeats", type=int, default=1, help="repeats of scikit-learn's OMP"
    )
    parser.add_argument(
        "--fista",
        type=lambda text: (float(text.split(":")[0]), int(text.split(":")[1])),
        nargs="+",
        default=[(1e-2, 100)],
        metavar="ALPHA:MAX_ITER",
        help="positive FISTA runs at the large scale (default 0.01:100)",
    )
    parser.add_argument(
        "--lasso-lars", action="store_true", help="also time sklearn lasso_lars (~20 s)"
    )
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.fista = args.fista[:1]
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print("BLAS / thread pools (threadpoolctl):")
    for pool in threadpool_info():
        print(
            f"  {pool.get('internal_api')} {pool.get('version')} "
            f"{pool.get('threading_layer', '')} threads={pool.get('num_threads')} "
            f"{pool.get('filepath')}"
        )
    for threads in args.threads:
        torch.set_num_threads(threads)
        if not args.skip_large:
            bench_large(args)
        if not args.skip_small:
            bench_small(args)


if __name__ == "__main__":
    main()
