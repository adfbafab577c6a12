"""Benchmark training on activation sets that do not fit in memory.

Measures, in one run (each fit in a fresh subprocess, whose own peak resident memory,
``VmHWM``, is reported: see ``_bench.memory``):

- **Streaming SAE fit**: ``SAEEncoder.fit`` on an on-disk ``.npy`` of >= 2*10^6 x 384
  float32 (``np.load(mmap_mode="r")``, 3 GB), one epoch of minibatches streamed from
  disk, against the same fit on an in-memory array of a subset of the rows: peak RSS
  and tokens/s (rows trained per second, the finiteness check and the initial sample
  included in the streamed time).
- **Minibatch sparse coding**: ``GradientSparseCoder(batch_size=..., fit_algorithm="omp")``
  against scikit-learn's ``MiniBatchDictionaryLearning`` on the same training rows of a
  real activation set (SmolLM2-135M layer 15, position 0 excluded: the attention sink),
  both scored by the FVU of OMP codes with the same number of non-zeros on held-out
  rows, and fit time (``--threads N`` gives both fits the same thread budget).

The synthetic set is made by ``python benchmarks/speed/bench_streaming.py generate`` (Zipf
distributed sparse codes on a random overcomplete dictionary, log-normal magnitudes, a
mean offset and Gaussian noise, written in chunks). ``python benchmarks/speed/bench_streaming.py
run`` runs everything (``--quick`` for a smoke run on small sizes).
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.options import add_activations_option, add_int_options  # noqa: E402
from _bench.paths import scratch  # noqa: E402

# The synthetic set's default file, relative to the working directory (3 GB).
SYNTHETIC = Path("synthetic_2m_384.npy")


def generate(path, n_rows, n_features=384, n_latents=3072, k=32, seed=0, chunk=65536):
    """Write ``n_rows`` synthetic activations to ``path`` (.npy, float32), chunk by chunk."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(n_latents, n_features))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    # Zipf frequencies over latents (exponent 1), as real SAE latents fire.
    frequency = 1.0 / np.arange(1, n_latents + 1)
    frequency /= frequency.sum()
    offset = rng.normal(size=n_features) * 3.0
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, n_features))
    for start in range(0, n_rows, chunk):
        rows = min(chunk, n_rows - start)
        latents = rng.choice(n_latents, size=(rows, k), p=frequency)
        values = rng.lognormal(mean=0.0, sigma=0.5, size=(rows, k))
        codes = scipy.sparse.csr_matrix(
            (values.ravel(), latents.ravel(), np.arange(0, rows * k + 1, k)),
            shape=(rows, n_latents),
        )
        codes.sum_duplicates()
        block = codes @ dictionary + offset + 0.1 * rng.normal(size=(rows, n_features))
        out[start : start + rows] = block.astype(np.float32)
    out.flush()
    del out
    return path


def _child(task):
    """Run one measurement in this (fresh) process and print it as JSON."""
    import torch
    from threadpoolctl import threadpool_info

    from sklearn_sparsegap import GradientSparseCoder, SAEEncoder, sparse_encode

    if task.get("threads"):
        # The same thread budget for torch and for every BLAS/OpenMP pool (scikit-learn's).
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(task["threads"])
        threadpool_limits(task["threads"])
    result = {"task": task["name"], "torch_threads": torch.get_num_threads()}
    if task["name"] in ("sae_streamed", "sae_in_memory"):
        X = np.load(task["path"], mmap_mode="r")
        if task["name"] == "sae_in_memory":
            X = np.array(X[: task["rows"]])
        sae = SAEEncoder(
            n_components=task["n_components"], batch_size=task["batch_size"], max_iter=1,
            random_state=0, device="cpu",
        )  # fmt: skip
        start = time.perf_counter()
        sae.fit(X)
        seconds = time.perf_counter() - start
        result.update(rows=int(X.shape[0]), seconds=seconds, tokens_per_s=X.shape[0] / seconds,
                      final_mse=float(sae.history_["mse"][-1]),
                      final_l0=float(sae.history_["l0"][-1]))
    elif task["name"] in ("coder", "sklearn_mbdl"):
        data = np.load(task["data"])
        train, test = data["train"], data["test"]
        start = time.perf_counter()
        if task["name"] == "coder":
            est = GradientSparseCoder(
                n_components=task["n_components"], batch_size=task["batch_size"],
                fit_algorithm="omp", transform_algorithm="omp",
                transform_n_nonzero_coefs=task["k"], max_iter=task["epochs"],
                random_state=0, device="cpu",
            ).fit(train)  # fmt: skip
        else:
            from sklearn.decomposition import MiniBatchDictionaryLearning

            est = MiniBatchDictionaryLearning(
                n_components=task["n_components"], batch_size=task["batch_size"],
                max_iter=task["epochs"], transform_algorithm="omp",
                transform_n_nonzero_coefs=task["k"], random_state=0,
            ).fit(train)
        seconds = time.perf_counter() - start
        # Both scored alike: OMP with k non-zeros on the learned atoms (unit norm), on
        # held-out rows, FVU against the held-out mean.
        atoms = est.components_ / np.linalg.norm(est.components_, axis=1, keepdims=True)
        codes = sparse_encode(test, atoms, algorithm="omp", n_nonzero_coefs=task["k"],
                              device="cpu")
        residual = test - codes @ atoms
        fvu = float(np.square(residual).sum() / np.square(test - test.mean(axis=0)).sum())
        result.update(seconds=seconds, fvu=fvu, l0=float((codes != 0).sum(axis=1).mean()),
                      rows=int(train.shape[0]))
    from _bench.memory import peak_rss_mb

    result["peak_rss_mb"] = peak_rss_mb()
    result["threadpools"] = [
        {k: info[k] for k in ("user_api", "internal_api", "num_threads") if k in info}
        for info in threadpool_info()
    ]
    print(json.dumps(result))


def _run_child(task):
    output = subprocess.run(
        [sys.executable, __file__, "child", json.dumps(task)], check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def _real_split(activations, n_train, n_test, scale_path):
    """Training and held-out rows of the real set (position 0 and attention-sink rows
    excluded, as ``sparsegap activations`` does), scaled so the mean squared norm is
    n_features (the same preprocessing for both methods)."""
    from sklearn_sparsegap.activations import load_activations
    from sklearn_sparsegap.activations._rows import row_norms, usable_rows

    X, metadata = load_activations(activations)
    rows = np.flatnonzero(usable_rows(metadata, X.shape[0], norms=row_norms(X, X.shape[0])))
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(rows, size=n_train + n_test, replace=False))
    data = np.asarray(X[chosen], dtype=np.float32)
    data = data[rng.permutation(len(data))]
    data *= np.sqrt(data.shape[1] / np.mean(np.square(data).sum(axis=1)))
    np.savez(scale_path, train=data[:n_train], test=data[n_train:])
    return scale_path


def run(args):
    import torch
    from threadpoolctl import threadpool_info

    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads; machine shared with other jobs")
    print("threadpoolctl.threadpool_info():", json.dumps(threadpool_info(), indent=1))
    results = {}
    if "sae" in args.parts:
        path = Path(args.synthetic)
        if not path.exists():
            print(f"generating {path} ({args.rows} rows)...", flush=True)
            generate(path, args.rows)
        n_rows = np.load(path, mmap_mode="r").shape[0]
        common = dict(path=str(path), n_components=args.n_components, batch_size=args.batch_size)
        streamed = _run_child({"name": "sae_streamed", **common})
        in_memory = _run_child({"name": "sae_in_memory", "rows": args.subset, **common})
        print(f"SAEEncoder(n_components={args.n_components}, batch_size={args.batch_size}), "
              "one epoch:")
        for r in (streamed, in_memory):
            print(f"  {r['task']:14s} rows={r['rows']:>9d} {r['seconds']:8.1f} s "
                  f"{r['tokens_per_s']:9.0f} tokens/s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"mse {r['final_mse']:.4g} l0 {r['final_l0']:.1f}")
        print(f"  streamed / in-memory throughput: "
              f"{streamed['tokens_per_s'] / in_memory['tokens_per_s']:.2f} "
              f"(file {n_rows} x 384 float32, {path.stat().st_size / 2**30:.2f} GiB)")
        results["sae"] = {"streamed": streamed, "in_memory": in_memory}
    if "coder" in args.parts:
        if args.activations is None:
            raise SystemExit("the coder part needs --activations ACTIVATIONS_DIR")
        data = _real_split(args.activations, args.coder_train, args.coder_test,
                           scratch("bench_streaming_real.npz"))
        common = dict(data=str(data), n_components=args.coder_components, k=args.k,
                      threads=args.threads)
        ours = _run_child({"name": "coder", "batch_size": args.coder_batch,
                           "epochs": args.coder_epochs, **common})
        sklearn = _run_child({"name": "sklearn_mbdl", "batch_size": args.sklearn_batch,
                              "epochs": args.sklearn_epochs, **common})
        print(f"Dictionary learning on {Path(args.activations).name} (position 0 excluded), "
              f"{args.coder_train} training / {args.coder_test} held-out rows, "
              f"{args.coder_components} atoms, FVU of OMP codes with k={args.k}, "
              f"{ours['torch_threads']} torch threads"
              + (f", every thread pool limited to {args.threads}" if args.threads else "")
              + ":")
        for r in (ours, sklearn):
            print(f"  {r['task']:13s} {r['seconds']:8.1f} s  FVU {r['fvu']:.4f}  L0 {r['l0']:.1f}  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
        print(f"  time ratio ours / sklearn: {ours['seconds'] / sklearn['seconds']:.3f}")
        results["coder"] = {"ours": ours, "sklearn": sklearn}
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--path", default=str(SYNTHETIC))
    gen.add_argument("--rows", type=int, default=2_000_000)
    child = sub.add_parser("child")
    child.add_argument("task")
    bench = sub.add_parser("run")
    bench.add_argument("--parts", nargs="+", default=["sae", "coder"], choices=["sae", "coder"])
    bench.add_argument("--synthetic", default=str(SYNTHETIC))
    add_activations_option(bench, required=False,
                           help="coder part: a real activation set (made by extract_activations)")
    add_int_options(bench, rows=2_000_000, subset=400_000, n_components=768, batch_size=4096,
                    coder_train=20_000, coder_test=5_000, coder_components=1152,
                    coder_batch=1024, coder_epochs=3, sklearn_batch=256, sklearn_epochs=1, k=32)
    bench.add_argument("--threads", type=int, default=None,
                       help="coder part: limit torch and every BLAS/OpenMP pool of both "
                            "fits to this many threads (default: their defaults)")
    bench.add_argument("--output", default=None)
    bench.add_argument("--quick", action="store_true",
                       help="small sizes, for a smoke run (the synthetic file is "
                            "bench_streaming_quick.npy in the temporary directory)")
    args = parser.parse_args()
    if args.command == "generate":
        generate(Path(args.path), args.rows)
    elif args.command == "child":
        _child(json.loads(args.task))
    else:
        if args.quick:
            args.synthetic, args.rows, args.subset = scratch("bench_streaming_quick.npy"), 60_000, 20_000
            args.n_components, args.batch_size = 128, 1024
            args.coder_train, args.coder_test, args.coder_components = 2000, 500, 256
            args.coder_epochs = 1
        run(args)


if __name__ == "__main__":
    main()
