"""Benchmark the foundation: the data generator and the MCC metric at the paper's large scale.

Measures, in one run on the same data:

- ``make_sparse_dictionary_data`` at 200,000 samples x 1,000 components x K=20 (M=200, the
  paper's large-scale setting): wall time, and peak traced memory (tracemalloc, a separate
  call so tracing does not slow the timed one) against the size of the returned arrays;
  next to scikit-learn's ``make_sparse_coded_signal`` for the same shapes.
- ``mean_corr_coef`` on 100,000 x 1,000 true codes vs 100,000 x 1,000 predicted codes,
  with Hungarian and greedy matching; next to the straightforward float64 computation
  (``np.corrcoef`` on the stacked columns + ``scipy.optimize.linear_sum_assignment``),
  whose MCC is printed to show both agree.

Run ``python benchmarks/speed/bench_foundation.py`` (``--help`` for sizes; ``--quick`` for a
small smoke run; ``--no-baseline`` to skip the scikit-learn / naive comparisons).
"""

import argparse
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from sklearn_sparsegap import make_sparse_dictionary_data, mean_corr_coef

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.memory import peak_rss_mb  # noqa: E402
from _bench.tables import print_table  # noqa: E402


def _timed(func, *args, repeats=1, **kwargs):
    """Best wall time over ``repeats`` runs, its process CPU time, and the result.

    CPU time (all threads) is printed too: on a shared machine wall time grows with
    other processes' load, CPU time much less.
    """
    best, best_cpu, result = np.inf, np.inf, None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = func(*args, **kwargs)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu, result


def _peak_traced(func, *args, **kwargs):
    tracemalloc.start()
    try:
        result = func(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def _naive_mcc(codes_true, codes_pred):
    """float64 |corrcoef| of all column pairs + Hungarian (constant columns -> 0)."""
    n_true = codes_true.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(codes_true, codes_pred, rowvar=False)[:n_true, n_true:]
    corr = np.nan_to_num(np.abs(corr))
    rows, cols = linear_sum_assignment(corr, maximize=True)
    return float(corr[rows, cols].mean())


def _generator_row(name, generate, *, repeats=1, **kwargs):
    """One generator's table row: best wall and CPU seconds, output and peak traced MB,
    and whether every sample has exactly ``n_nonzero_coefs`` non-zeros."""
    n_nonzero_coefs = kwargs["n_nonzero_coefs"]
    seconds, cpu, (X, dictionary, codes) = _timed(generate, repeats=repeats, **kwargs)
    output = X.nbytes + dictionary.nbytes + codes.nbytes
    exact_k = bool(np.all(np.count_nonzero(codes, axis=1) == n_nonzero_coefs))
    del X, dictionary, codes
    peak, result = _peak_traced(generate, **kwargs)
    del result
    return (name, f"{seconds:.2f}", f"{cpu:.2f}", f"{output / 1e6:.0f}", f"{peak / 1e6:.0f}",
            f"{peak / output:.2f}", "yes" if exact_k else "NO")  # fmt: skip


def bench_generator(args):
    kwargs = dict(
        n_samples=args.n_samples,
        n_components=args.n_components,
        n_features=args.n_features,
        n_nonzero_coefs=args.n_nonzero_coefs,
        random_state=0,
    )
    rows = [
        _generator_row(f"make_sparse_dictionary_data ({distribution})",
                       make_sparse_dictionary_data, repeats=args.repeats, code_distribution=distribution, **kwargs)
        for distribution in args.distributions
    ]  # fmt: skip
    if not args.no_baseline:
        from sklearn.datasets import make_sparse_coded_signal

        rows.append(_generator_row("sklearn make_sparse_coded_signal (normal)",
                                   make_sparse_coded_signal, **kwargs))
    print_table(
        f"Generator: {args.n_samples:,} samples x {args.n_components:,} components x "
        f"K={args.n_nonzero_coefs}, {args.n_features} features",
        ("method", "seconds", "CPU s", "output MB", "peak MB", "peak/output", "exact K"),
        rows,
    )


def bench_mcc(args):
    n = args.mcc_samples
    _, _, codes = make_sparse_dictionary_data(
        n,
        n_components=args.n_components,
        n_features=args.n_features,
        n_nonzero_coefs=args.n_nonzero_coefs,
        random_state=1,
    )
    rng = np.random.default_rng(0)
    # A plausible estimate: permuted, rescaled, noisy, rectified codes.
    predicted = codes[:, rng.permutation(codes.shape[1])] * rng.uniform(0.5, 2.0, codes.shape[1])
    predicted += rng.normal(0.0, 0.3, predicted.shape)
    np.maximum(predicted, 0.0, out=predicted)
    rows = []
    for matching in ("hungarian", "greedy"):
        seconds, cpu, mcc = _timed(
            mean_corr_coef, codes, predicted, matching=matching, repeats=args.repeats
        )
        rows.append((f"mean_corr_coef ({matching})", f"{seconds:.2f}", f"{cpu:.2f}", f"{mcc:.6f}"))
    if not args.no_baseline:
        seconds, cpu, mcc = _timed(_naive_mcc, codes, predicted)
        rows.append(
            (
                "naive float64 corrcoef + Hungarian",
                f"{seconds:.2f}",
                f"{cpu:.2f}",
                f"{mcc:.6f}",
            )
        )
    print_table(
        f"MCC: {n:,} x {codes.shape[1]:,} true vs {n:,} x {predicted.shape[1]:,} predicted",
        ("method", "seconds", "CPU s", "MCC"),
        rows,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=200_000)
    parser.add_argument("--n-components", type=int, default=1_000)
    parser.add_argument("--n-features", type=int, default=200)
    parser.add_argument("--n-nonzero-coefs", type=int, default=20)
    parser.add_argument("--mcc-samples", type=int, default=100_000)
    parser.add_argument(
        "--distributions",
        nargs="+",
        default=["halfnormal", "zipf"],
        choices=["halfnormal", "normal", "zipf"],
    )
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--skip", nargs="*", default=[], choices=["generator", "mcc"])
    args = parser.parse_args(argv)
    if args.quick:
        args.n_samples, args.mcc_samples = 5_000, 5_000
        args.n_components, args.n_features = 200, 50
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}, load average {open('/proc/loadavg').read().split()[:3]}"
        if platform.system() == "Linux"
        else f"python {platform.python_version()}, numpy {np.__version__}"
    )
    if "generator" not in args.skip:
        bench_generator(args)
    if "mcc" not in args.skip:
        bench_mcc(args)
    print(f"\nprocess max RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
