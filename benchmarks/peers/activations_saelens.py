"""SAELens beside our TopK SAE on the activations of ``sparsegap activations``.

Both SAEs train on the same tokens (the command's split: whole sequences held out,
position 0 left out, inputs scaled to mean squared norm ``n_features``), with the same
number of latents, k, minibatch size, epochs and Adam learning rate, on the CPU, and are
measured on the same holdout tokens (FVU, L0, dead fraction, fit seconds, tokens/s).

Run in the peers environment (SAELens installed), pointing at the activation set
``ACTIVATIONS_DIR`` that ``sparsegap activations`` made (it prints the path)::

    python3 -m venv peers && PEERS_PYTHON=peers/bin/python
    $PEERS_PYTHON -m pip install -e ".[benchmark]"
    PYTHONPATH=. $PEERS_PYTHON benchmarks/peers/activations_saelens.py \\
        --activations ACTIVATIONS_DIR --tokens 20000 --expansion 2 --epochs 5

Times are wall-clock on whatever else the machine is running: compare the two columns of
one run, not runs of different days.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sklearn_sparsegap.experiments._methods import ACTIVATION_K, ACTIVATION_BUDGETS, build_activation_method
from sklearn_sparsegap.activations import load_activations, reconstruction_metrics
from sklearn_sparsegap.activations._rows import input_scale, row_norms, split_by_sequence
from sklearn_sparsegap.experiments._activations import environment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.paths import recorded_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", required=True, help="an activation set directory")
    parser.add_argument("--tokens", type=int, default=40_000)
    parser.add_argument("--expansion", type=float, default=4.0)
    parser.add_argument("--epochs", type=int, default=ACTIVATION_BUDGETS["default"]["epochs"])
    parser.add_argument("--max-holdout", type=int, default=4096)
    parser.add_argument("--output", default=None, help="write the rows to FILE.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    X, metadata = load_activations(args.activations)
    n_rows = min(args.tokens, X.shape[0])
    train_rows, holdout_rows = split_by_sequence(metadata, n_rows, norms=row_norms(X, n_rows))
    sequence = np.asarray(metadata["sequence"])[holdout_rows]
    if len(holdout_rows) > args.max_holdout:  # the same cut as the command
        holdout_rows = holdout_rows[: np.searchsorted(sequence, sequence[args.max_holdout])]
    X_train = np.asarray(X[train_rows], dtype=np.float32)
    scale = input_scale(X_train)
    X_train *= scale
    X_holdout = np.asarray(X[holdout_rows], dtype=np.float32) * scale
    n_features = X.shape[1]
    n_components = int(args.expansion * n_features)
    budget = ACTIVATION_BUDGETS["default"]
    k = max(1, min(ACTIVATION_K, n_features // 2, n_components))
    ours = build_activation_method("sae", n_components=n_components, n_features=n_features)
    ours.set_params(max_iter=args.epochs, device="cpu")
    from _bench.saelens import SAELensSAE  # SAELens and torch._dynamo, before any timing

    theirs = SAELensSAE(n_components, k=k, epochs=args.epochs,
                        batch_size=budget["batch_size"], lr=budget["learning_rate"])
    rows = []
    for name, model in (("sparsegap TopK SAE", ours), ("SAELens TopK SAE", theirs)):
        start = time.perf_counter()
        model.fit(X_train)
        seconds = time.perf_counter() - start
        metrics = reconstruction_metrics(model, X_holdout)
        rows.append({"method": name, "fvu": metrics["fvu"], "mean_l0": metrics["mean_l0"],
                     "dead_fraction": metrics["dead_fraction"], "fit_seconds": seconds,
                     "tokens_per_second": args.epochs * len(X_train) / seconds})
        print(f"{name:<20} FVU {metrics['fvu']:.4f}  L0 {metrics['mean_l0']:.1f}  dead "
              f"{metrics['dead_fraction']:.3f}  fit {seconds:.1f} s  "
              f"{rows[-1]['tokens_per_second']:.0f} tok/s", flush=True)
    record = {"settings": {**vars(args), "activations": recorded_path(args.activations),
                           "n_train": len(train_rows),
                           "n_holdout": len(holdout_rows), "n_components": n_components,
                           "k": k, "batch_size": budget["batch_size"],
                           "learning_rate": budget["learning_rate"]},
              "environment": environment(), "runs": rows}
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
    return record


if __name__ == "__main__":
    main()
