"""Our SAEs against SAELens's on the same real activations, side by side in one run.

Same training rows, width (4x expansion), batch size and number of epochs for both;
SAELens gets the activations multiplied by the same ``input_scale_`` our estimator
fits (mean squared norm = n_features, what SAELens's ``normalize_activations``
does), so both train on identical numbers. Reported on held-out rows: FVU
(``||x - x_hat||^2 / ||x - mean||^2``, scale-free), mean L0, the fraction of latents
never active on the held-out rows, and training throughput (rows/s of the fit).

Run with the peers environment (SAELens installed) and this checkout on the path, on an
activation set ``ACTIVATIONS_DIR`` (the records used SmolLM2-135M's residual stream after
layer 15, written by ``sklearn_sparsegap.activations.extract_activations``)::

    python3 -m venv peers && PEERS_PYTHON=peers/bin/python
    $PEERS_PYTHON -m pip install -e ".[benchmark]"
    PYTHONPATH=$PWD $PEERS_PYTHON benchmarks/peers/bench_saelens.py \\
        --activations ACTIVATIONS_DIR --n-train 100000 --batch-size 1024 \\
        --alphas 0.5,1,3,8 --l1 2,5,10,20

The record goes to docs/results/saelens/<activations directory name>.json.

Position 0 of every sequence (SmolLM2's attention sink, norm ~24k against ~170) is
dropped; the last ``--n-test`` rows (after the training rows) are held out.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import threadpoolctl
import torch

from sklearn_sparsegap import SAEEncoder
from sklearn_sparsegap.activations import load_activations
from sklearn_sparsegap.activations._rows import row_norms, usable_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.options import add_activations_option, add_int_options  # noqa: E402
from _bench.paths import recorded_path  # noqa: E402


def fvu(X, reconstruction):
    return float(((X - reconstruction) ** 2).sum() / ((X - X.mean(axis=0)) ** 2).sum())


def summary(name, X_test, codes, reconstruction, seconds, n_rows):
    active = codes != 0
    return {
        "method": name,
        "fvu": fvu(X_test, reconstruction),
        "l0": float(active.sum(axis=1).mean()),
        "dead_fraction": float(1.0 - active.any(axis=0).mean()),
        "fit_seconds": seconds,
        "rows_per_second": n_rows / seconds,
    }


def matched(points, l0):
    """FVU of the curve ``points`` (``(l0, fvu)`` pairs) at ``l0``, interpolated linearly
    in log L0; None outside the curve's L0 range."""
    points = sorted(points)
    l0s = np.log([p[0] for p in points])
    if not l0s[0] <= np.log(l0) <= l0s[-1]:
        return None
    return float(np.interp(np.log(l0), l0s, [p[1] for p in points]))


def compare(results, verbose=True):
    """Side by side, per SAELens point: our FVU at its L0 (the ReLU curve interpolated in
    log L0; TopK at the same k), whether one of our points dominates it (L0 and FVU no
    higher), and the throughput ratio of the family (mean rows/s, ours over theirs)."""
    comparison = []
    for family in ("relu", "topk"):
        mine = [r for r in results if r["family"] == family and r["ours"]]
        theirs = [r for r in results if r["family"] == family and not r["ours"]]
        if not mine or not theirs:
            continue
        speed = float(np.mean([r["rows_per_second"] for r in mine])
                      / np.mean([r["rows_per_second"] for r in theirs]))  # fmt: skip
        for row in theirs:
            fvu_ours = (mine[0]["fvu"] if family == "topk"
                        else matched([(r["l0"], r["fvu"]) for r in mine], row["l0"]))
            dominated = any(r["l0"] <= row["l0"] and r["fvu"] <= row["fvu"] for r in mine)
            comparison.append({"family": family, "saelens": row["method"], "l0": row["l0"],
                               "fvu_saelens": row["fvu"], "fvu_ours_at_l0": fvu_ours,
                               "dominated_by_ours": dominated, "throughput_ratio": speed})
            if verbose:
                shown = "outside our L0 range" if fvu_ours is None else f"{fvu_ours:.3f}"
                print(f"{row['method']:<28} L0 {row['l0']:6.1f}: FVU SAELens {row['fvu']:.3f}, "
                      f"ours {shown}, dominated by ours: {dominated}; our throughput / "
                      f"theirs {speed:.2f}", flush=True)  # fmt: skip
    return comparison


def ours(X_train, X_test, *, n_components, batch_size, epochs, seed, **params):
    # learning_rate is left to the estimator's default (learning_rate_ is reported).
    est = SAEEncoder(n_components=n_components, batch_size=batch_size, max_iter=epochs,
                     random_state=seed, device="cpu", **params)  # fmt: skip
    start = time.perf_counter()
    est.fit(X_train)
    seconds = time.perf_counter() - start
    codes = est.transform(X_test)
    return est, codes, est.inverse_transform(codes), seconds


def saelens(X_train, X_test, *, n_components, batch_size, epochs, seed, k=None, l1=1.0,
            lr=3e-4):
    from _bench.saelens import SAELensSAE

    sae = SAELensSAE(n_components, k=k, l1_coefficient=l1, batch_size=batch_size,
                     epochs=epochs, lr=lr, random_state=seed).fit(X_train)  # fmt: skip
    codes = sae.transform(X_test)
    return codes, sae.inverse_transform(codes), sae.train_seconds_


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_activations_option(parser)
    add_int_options(parser, n_train=100_000, n_test=10_000, batch_size=1024, epochs=1,
                    expansion=4, k=32)
    parser.add_argument("--alphas", default="0.4,1.0,2.5", help="our L1 alphas")
    parser.add_argument("--l1", default="1,2,5", help="SAELens l1_coefficients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--saelens-lr", type=float, default=3e-4,
                        help="SAELens learning rate (its SAETrainerConfig default)")
    parser.add_argument("--output", default=None,
                        help="JSON record (default docs/results/saelens/<activations>.json)")
    parser.add_argument("--recompare", default=None, metavar="JSON",
                        help="only recompute the comparison of a saved record, in place")
    args = parser.parse_args()
    if args.recompare:
        path = Path(args.recompare)
        record = json.loads(path.read_text())
        record["comparison"] = compare(record["results"])
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")
        return
    pools = [(p.get("internal_api"), p.get("version"), p.get("num_threads"))
             for p in threadpoolctl.threadpool_info()]  # fmt: skip
    print("threadpools:", pools, flush=True)

    import _bench.saelens  # noqa: F401  (SAELens and torch._dynamo, before any timing)

    data, metadata = load_activations(args.activations)
    # Position 0 and the rare later attention-sink rows (norm > 10x the median; one such
    # SmolLM2 row held 80% of the test rows' variance) are left out, as the command does.
    n_rows = min(data.shape[0], 2 * (args.n_train + args.n_test))
    usable = usable_rows(metadata, n_rows, norms=row_norms(data, n_rows))
    rows = np.flatnonzero(usable)[: args.n_train + args.n_test]
    X = np.asarray(data[rows], dtype=np.float32)
    X_train, X_test = X[: args.n_train], X[args.n_train :]
    n_components = args.expansion * X.shape[1]
    setting = dict(n_components=n_components, batch_size=args.batch_size,
                   epochs=args.epochs, seed=args.seed)  # fmt: skip
    print(f"{X_train.shape[0]} train / {X_test.shape[0]} test rows of {X.shape[1]} features, "
          f"{n_components} latents, batch {args.batch_size}, {args.epochs} epoch(s), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads", flush=True)

    results = []

    def report(row):
        results.append(row)
        print(f"{row['method']:<28} FVU {row['fvu']:.3f}  L0 {row['l0']:7.1f}  "
              f"dead {row['dead_fraction']:.3f}  {row['rows_per_second']:8.0f} rows/s",
              flush=True)

    # Ours and SAELens alternate (TopK pair first, then one ReLU/L1 pair per grid point),
    # so that a change of the machine's load hits both sides alike.
    alphas = [float(a) for a in args.alphas.split(",") if a]
    l1s = [float(v) for v in args.l1.split(",") if v]
    jobs = [("topk", {"activation": "topk", "n_nonzero_coefs": args.k, "alpha": 0.0},
             {"k": args.k})]
    for index in range(max(len(alphas), len(l1s))):
        jobs.append(("relu", None if index >= len(alphas) else {"alpha": alphas[index]},
                     None if index >= len(l1s) else {"l1": l1s[index]}))  # fmt: skip
    scale = None
    for family, mine, theirs in jobs:
        if mine is not None:
            est, codes, rec, seconds = ours(X_train, X_test, **mine, **setting)
            scale = est.input_scale_
            name = (f"ours TopK k={args.k}" if family == "topk"
                    else f"ours ReLU alpha={mine['alpha']:g}")  # fmt: skip
            row = summary(name, X_test, codes, rec, seconds, len(X_train))
            report({**row, "family": family, "ours": True, "learning_rate": est.learning_rate_,
                    "train_dead_fraction": est.dead_fraction_})  # fmt: skip
        if theirs is not None:
            scaled_train, scaled_test = X_train * np.float32(scale), X_test * np.float32(scale)
            codes, rec, seconds = saelens(scaled_train, scaled_test, lr=args.saelens_lr,
                                          **theirs, **setting)  # fmt: skip
            name = (f"SAELens TopK k={args.k}" if family == "topk"
                    else f"SAELens standard l1={theirs['l1']:g}")  # fmt: skip
            row = summary(name, scaled_test, codes, rec, seconds, len(X_train))
            report({**row, "family": family, "ours": False, "learning_rate": args.saelens_lr})

    comparison = compare(results)
    record = {
        "settings": {**vars(args), "activations": recorded_path(args.activations)},
        "input_scale": scale, "results": results,
        "comparison": comparison,
        "environment": {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                        "machine": platform.machine(), "threadpools": pools},
        "note": "same process; the machine was shared, so seconds are indicative and only "
                "same-run ratios carry meaning",
    }  # fmt: skip
    output = Path(args.output or f"docs/results/saelens/{Path(args.activations).name}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
