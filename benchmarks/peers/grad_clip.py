"""Our TopK SAE with and without ``max_grad_norm`` at several learning rates, on real
activations: what dictionary_learning's gradient clipping is worth to us (issue 27).

At the same learning rate dictionary_learning's TopK trainer beat ours by 8% on MiniLM
layer 3 (one epoch); of its differences (warm-up, geometric-median bias, gradient
clipping at norm 1) only the clipping mattered. This script measures ``SAEEncoder``
(k=32, 4x width, batch 4,096, ``--epochs`` epochs) at ``--factors`` times its default
minibatch rate, with ``max_grad_norm`` None and ``--clip``, and prints held-out FVU, L0
and dead fraction for each, then the clipped fit's FVU change (``--alpha``: a ReLU SAE
with that L1 penalty instead, whose L0 moves too). Data as ``side_by_side.py``:
activation stores (attention sinks left out) or ``.npy`` files. Run::

    python benchmarks/peers/grad_clip.py --train TRAIN_DIR --test TEST_DIR \\
        --name minilm-l3 --epochs 1 --record docs/results/grad_clip/minilm-l3-e1.json
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import threadpoolctl
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from _bench.paths import recorded_path, recorded_threadpools  # noqa: E402
from _bench.tables import format_table  # noqa: E402
from side_by_side import default_lr, held_out_metrics, usable  # noqa: E402

from sklearn_sparsegap import SAEEncoder  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--factors", default="1,3,9")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=None,
                        help="a ReLU SAE with this L1 penalty instead of TopK k=32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", default=None)
    args = parser.parse_args(argv)
    X_train, X_test = usable(args.train), usable(args.test, 10_000)
    n_components = 4 * X_train.shape[1]
    centre = default_lr("topk", "ours", n_components)
    rows = []
    for factor in (float(f) for f in args.factors.split(",")):
        for clip in (None, args.clip):
            start = time.perf_counter()
            family = (dict(activation="topk", n_nonzero_coefs=32, alpha=0.0) if args.alpha is None
                      else dict(activation="relu", alpha=args.alpha))  # fmt: skip
            est = SAEEncoder(n_components=n_components, batch_size=4096, max_iter=args.epochs,
                             learning_rate=factor * centre, max_grad_norm=clip,
                             random_state=args.seed, device="cpu", **family).fit(X_train)
            codes = est.transform(X_test)
            metrics = held_out_metrics(codes, X_test, est.inverse_transform(codes))
            rows.append({"lr_factor": factor, "lr": factor * centre, "max_grad_norm": clip,
                         **metrics, "fit_seconds": time.perf_counter() - start})  # fmt: skip
            print(f"x{factor:g} max_grad_norm={clip}: FVU {metrics['fvu']:.4f}, L0 "
                  f"{metrics['l0']:.1f}, dead {metrics['dead']:.3f}", flush=True)
    for plain, clipped in zip(rows[::2], rows[1::2]):
        clipped["fvu_change"] = clipped["fvu"] / plain["fvu"] - 1
    table = format_table(rows, ["lr_factor", "max_grad_norm", "fvu", "l0", "dead", "fvu_change"],
                         title=f"{args.name}: {len(X_train)} rows, {args.epochs} epoch(s)")
    print("\n" + table)
    if args.record:
        record = {
            "name": args.name, "train_rows": len(X_train), "test_rows": len(X_test),
            "n_features": X_train.shape[1], "n_components": n_components,
            "family": "TopK k=32" if args.alpha is None else f"ReLU alpha={args.alpha}",
            "batch_size": 4096, "epochs": args.epochs, "seed": args.seed,
            "command": "python benchmarks/peers/grad_clip.py " + " ".join(
                recorded_path(a) if "/" in a else a
                for a in (argv if argv is not None else sys.argv[1:])),
            "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "threadpools": recorded_threadpools(threadpoolctl.threadpool_info()),
            "rows": rows, "table": table,
        }  # fmt: skip
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
