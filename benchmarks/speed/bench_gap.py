"""Rows per second of the ``sparsegap gap`` refinement against scikit-learn, in one run.

OMP at k=32 on a known dictionary of 2,304 and 16,384 unit atoms in d=576 (SmolLM2's
width; 4x and ~28x expansions), on the same synthetic 32-sparse rows:

- scikit-learn ``sparse_encode(algorithm="omp")`` (float64, its default set-up, warmed up);
- our ``sparse_encode(algorithm="omp")`` in float32 and float64 (the batched greedy solver
  the ITO pass uses);
- ``SAEPlusITO(prefit=True)`` at its defaults on a TopK k=32 SAE whose dictionary is that
  one (the SAE encoder + OMP at each row's own L0 + the l0 guard): what ``sparsegap gap``
  runs per block.

Each row prints rows/s, the speed-up over scikit-learn and the relative reconstruction
error ``||x - s D||^2 / ||x||^2`` (quality next to speed). The BLAS and threadpool set-up
is printed first. Run ``python benchmarks/speed/bench_gap.py`` (``--quick`` for a smoke
run); absolute rates drift between runs and machines: compare the ratios in one run.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import sparse_encode as sklearn_sparse_encode
from threadpoolctl import threadpool_info

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, sparse_encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench

D, K = 576, 32


def _best(func, repeats):
    """Best wall time of up to ``repeats`` calls (one call if it takes over 20 s)."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
        if best > 20.0:
            break
    return best, result


def make_rows(n_rows, n_components, seed=0):
    """Unit-norm random atoms and rows that are positive K-sparse mixtures of them plus 1%
    noise (float64)."""
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(n_components, D))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    codes = np.zeros((n_rows, n_components))
    for row in range(n_rows):
        codes[row, rng.choice(n_components, K, replace=False)] = np.abs(rng.normal(size=K)) + 0.1
    X = codes @ dictionary
    X += 0.01 * X.std() * rng.normal(size=X.shape)
    return X, dictionary


def relative_error(X, codes, dictionary, intercept=0.0):
    X = np.asarray(X, dtype=np.float64)
    residual = X - np.asarray(codes, dtype=np.float64) @ dictionary - intercept
    return float((residual**2).sum() / (X**2).sum())


def topk_sae(dictionary):
    """A fitted TopK k=32 SAE whose encoder is the transposed dictionary (tied weights)."""
    n_components = dictionary.shape[0]
    sae = SAEEncoder(n_components=n_components, activation="topk", n_nonzero_coefs=K,
                     alpha=0.0, max_iter=1, random_state=0, device="cpu")
    sae.fit(np.zeros((2, D), dtype=np.float32) + np.eye(2, D, dtype=np.float32))
    sae.components_ = dictionary.astype(np.float32)
    sae.intercept_ = np.zeros(D, dtype=np.float32)
    sae.coefs_ = [dictionary.astype(np.float32)]  # (n_components, n_features), as fitted
    sae.intercepts_ = [np.zeros(n_components, dtype=np.float32)]
    return sae


def bench(n_components, n_rows, n_sklearn_rows, repeats):
    X, dictionary = make_rows(n_rows, n_components)
    X32, D32 = X.astype(np.float32), dictionary.astype(np.float32)
    rows = []
    Xs = X[:n_sklearn_rows]
    sklearn_sparse_encode(Xs[:16], dictionary, algorithm="omp", n_nonzero_coefs=K)  # warm-up
    seconds, codes = _best(
        lambda: sklearn_sparse_encode(Xs, dictionary, algorithm="omp", n_nonzero_coefs=K),
        repeats)
    reference = n_sklearn_rows / seconds
    rows.append(("scikit-learn sparse_encode omp", "float64", n_sklearn_rows, reference,
                 relative_error(Xs, codes, dictionary)))
    for name, Xd, Dd in (("ours sparse_encode omp", X32, D32),
                         ("ours sparse_encode omp", X, dictionary)):
        sparse_encode(Xd[:16], Dd, algorithm="omp", n_nonzero_coefs=K)
        seconds, codes = _best(
            lambda Xd=Xd, Dd=Dd: sparse_encode(Xd, Dd, algorithm="omp", n_nonzero_coefs=K),
            repeats)
        rows.append((name, str(Xd.dtype), n_rows, n_rows / seconds,
                     relative_error(Xd, codes, dictionary)))
    ito = SAEPlusITO(topk_sae(dictionary), prefit=True).fit(X32[:256])
    ito.transform(X32[:16])
    seconds, codes = _best(lambda: ito.transform(X32), repeats)
    rows.append(("ours SAEPlusITO (TopK SAE + OMP at its L0, l0 guard)", "float32", n_rows,
                 n_rows / seconds, relative_error(X32, codes, dictionary)))
    lines = [(n_components, *row[:3], f"{row[3]:.3g}", f"{row[3] / reference:.1f}x",
              f"{row[4]:.2e}") for row in rows]
    for line in lines:
        print("  ".join(map(str, line)), file=sys.stderr, flush=True)  # progress
    return lines


def print_table(header, lines):
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(str(c).ljust(w) if i in (1, 2) else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller smoke run")
    parser.add_argument("--rows", type=int, default=4096, help="rows of our solvers (4096)")
    parser.add_argument("--sklearn-rows", type=int, default=1024,
                        help="rows of scikit-learn's OMP (1024; its rate is per row)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latents", default="2304,16384",
                        help="dictionary sizes, comma-separated (2304,16384; scikit-learn "
                        "takes ~0.5 s a row at 16384)")
    args = parser.parse_args(argv)
    n_rows, n_sklearn = (512, 256) if args.quick else (args.rows, args.sklearn_rows)
    print(f"python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, {platform.machine()}")
    for pool in threadpool_info():
        print(f"threadpool: {pool['user_api']} {pool['internal_api']} "
              f"{pool.get('version')} threads={pool['num_threads']} "
              f"({os.path.basename(pool['filepath'])})")
    print(f"OMP at k={K}, d={D}; {n_rows} rows for ours, {n_sklearn} for scikit-learn\n")
    lines = []
    for n_components in (int(n) for n in args.latents.split(",")):
        lines += bench(n_components, n_rows, n_sklearn, args.repeats)
    print_table(["latents", "method", "dtype", "rows", "rows/s", "vs sklearn", "rel. error"],
                lines)


if __name__ == "__main__":
    main()
