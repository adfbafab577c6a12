"""The amortisation gap on real activations: SAE codes against SAE+ITO and sparse coding.

On the residual stream of SmolLM2-135M (layer 15, 576 features; the activation set made by
``sklearn_sparsegap.activations.extract_activations``; the first token of every sequence,
an attention sink with ~100x the norm of the others, is left out), train two SAEs with
4x expansion on minibatches for a few epochs, a ReLU/L1 one and a TopK one, then encode
held-out tokens (whole sequences never seen in training) with

- the SAE itself;
- ``SAEPlusITO(sae, prefit=True)`` with its defaults: OMP on the SAE's own decoder, each
  token getting as many atoms as the SAE's codes of it have non-zeros, and the ``"l0"``
  guard (never worse than the SAE, per token, at no more non-zeros);
- ``SAEPlusITO`` with FISTA at the penalty bisected to the SAE's L0 (on fewer tokens: it
  is the expensive one);
- sparse coding: a ``GradientSparseCoder`` dictionary (TopK codes in the alternation,
  fitted on a subsample) with OMP codes at the TopK SAE's k;

and report FVU, mean L0, transform seconds and the inference FLOPs of ``flops.py``
(``inference_flops``; for the per-token OMP budgets, the sum over the groups of equal
budget that ``transform`` solves). The loaded-SAE case: the TopK SAE saved in SAELens's
format by ``interop.save_sae``, loaded back by ``interop.load_sae`` and refined prefit.

The data are scaled once so that the mean squared norm of a training token equals the
number of features (as SAELens does); FVU does not depend on that scale. Run from the
repository root (minutes on 2 CPU cores)::

    python benchmarks/speed/bench_amortisation_gap.py --activations ACTIVATIONS_DIR
        [--train-tokens 60000] [--test-tokens 8192] [--epochs 4] [--quick]
        [--output docs/results/amortisation_gap/amortisation_gap.json]
"""

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import threadpoolctl
import torch

from sklearn_sparsegap import GradientSparseCoder, SAEEncoder, SAEPlusITO
from sklearn_sparsegap.activations import fraction_variance_unexplained, load_activations
from sklearn_sparsegap.activations._rows import row_norms, usable_rows
from sklearn_sparsegap.flops import sparse_encode_flops
from sklearn_sparsegap.interop import load_sae, save_sae

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.options import add_activations_option, add_int_options  # noqa: E402
from _bench.paths import recorded_path, recorded_threadpools  # noqa: E402

EXPANSION = 4
TOPK = 32
RELU_ALPHA = 0.5
BATCH_SIZE = 1024
LEARNING_RATE = 1e-3


def load_split(path, train_tokens, test_tokens, seed=0):
    """Training and held-out tokens (position 0 and attention-sink rows dropped, as
    ``sparsegap activations`` drops them), split by whole sequences."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an extraction still running: its committed rows
        X, metadata = load_activations(path)
    sequence = np.asarray(metadata["sequence"])
    keep = usable_rows(metadata, X.shape[0], norms=row_norms(X, X.shape[0]))
    held_out = sequence % 10 == 0  # every tenth sequence is test data
    rng = np.random.default_rng(seed)
    train_rows = np.flatnonzero(keep & ~held_out)
    test_rows = np.flatnonzero(keep & held_out)
    train_rows = np.sort(rng.permutation(train_rows)[:train_tokens])
    test_rows = np.sort(rng.permutation(test_rows)[:test_tokens])
    X_train = np.asarray(X[train_rows], dtype=np.float32)
    X_test = np.asarray(X[test_rows], dtype=np.float32)
    scale = np.sqrt(X.shape[1] / np.mean(np.sum(X_train.astype(np.float64) ** 2, axis=1)))
    info = {"rows_in_set": int(X.shape[0]), "n_features": int(X.shape[1]),
            "train_tokens": len(train_rows), "test_tokens": len(test_rows),
            "input_scale": float(scale)}  # fmt: skip
    return (X_train * scale).astype(np.float32), (X_test * scale).astype(np.float32), info


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def row(X, codes, reconstruction, seconds, flops):
    return {
        "fvu": fraction_variance_unexplained(X, reconstruction),
        "l0": float(np.mean(np.count_nonzero(codes, axis=1))),
        "transform_seconds": seconds,
        "inference_flops": int(flops),
    }


def budget_flops(algorithm, codes_start, n_features, n_components):
    """FLOPs of the greedy refinement with one budget per token: one solve per budget."""
    budgets = np.minimum(np.count_nonzero(codes_start, axis=1), n_features)
    values, counts = np.unique(budgets[budgets > 0], return_counts=True)
    return sum(
        sparse_encode_flops(algorithm, n_features, n_components, int(count),
                            n_nonzero_coefs=int(value))
        for value, count in zip(values, counts)
    )  # fmt: skip


def evaluate_sae(name, sae, X_train, X_test, fista_tokens, fista_iter):
    """The SAE's own codes, SAE+ITO (OMP, defaults) and SAE+ITO (FISTA, L0-matched)."""
    n_components, n_features = sae.components_.shape
    codes, seconds = timed(lambda: sae.transform(X_test))
    sae_flops = sae.inference_flops(len(X_test))
    results = {"sae": row(X_test, codes, sae.inverse_transform(codes), seconds, sae_flops)}
    ito, fit_seconds = timed(lambda: SAEPlusITO(sae, prefit=True).fit(X_train))
    refined, seconds = timed(lambda: ito.transform(X_test))
    flops = sae_flops + budget_flops("omp", codes, n_features, n_components)
    results["sae+ito omp (defaults)"] = row(
        X_test, refined, ito.inverse_transform(refined), seconds, flops
    )
    results["sae+ito omp (defaults)"].update(
        fit_seconds=fit_seconds,
        kept_fraction=float(np.mean(np.any(refined != codes, axis=1))),
    )
    if fista_tokens:
        subset = X_test[:fista_tokens]
        fista, fit_seconds = timed(
            lambda: SAEPlusITO(sae, prefit=True, transform_algorithm="fista",
                               transform_max_iter=fista_iter).fit(X_train[:fista_tokens])
        )  # fmt: skip
        refined, seconds = timed(lambda: fista.transform(subset))
        sub_codes = codes[:fista_tokens]
        entry = row(subset, refined, fista.inverse_transform(refined), seconds,
                    fista.inference_flops(len(subset)))  # fmt: skip
        entry.update(
            tokens=len(subset), transform_alpha=fista.transform_alpha_, fit_seconds=fit_seconds,
            transform_max_iter=fista_iter,
            sae_fvu_same_tokens=fraction_variance_unexplained(
                subset, sae.inverse_transform(sub_codes)
            ),
            sae_l0_same_tokens=float(np.mean(np.count_nonzero(sub_codes, axis=1))),
        )
        results["sae+ito fista (alpha matched to L0)"] = entry
    for label, entry in results.items():
        print(f"{name:<10} {label:<36} FVU {entry['fvu']:.4f}  L0 {entry['l0']:6.1f}  "
              f"{entry['transform_seconds']:7.2f} s  {entry['inference_flops']:.3g} FLOPs",
              flush=True)  # fmt: skip
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_activations_option(parser)
    add_int_options(parser, train_tokens=60_000, test_tokens=8192, epochs=4, fista_tokens=512,
                    fista_iter=200, coder_tokens=8192, coder_iter=30, batch_size=BATCH_SIZE)
    parser.add_argument("--relu-alpha", type=float, default=RELU_ALPHA)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    parser.add_argument(
        "--output", default="docs/results/amortisation_gap/amortisation_gap.json"
    )
    args = parser.parse_args()
    if args.quick:
        args.train_tokens, args.test_tokens, args.epochs = 4096, 1024, 1
        args.fista_tokens, args.fista_iter, args.coder_tokens, args.coder_iter = 128, 50, 1024, 3
    torch.manual_seed(0)
    X_train, X_test, data = load_split(args.activations, args.train_tokens, args.test_tokens)
    n_features = X_train.shape[1]
    n_components = EXPANSION * n_features
    print(data, flush=True)
    common = {"n_components": n_components, "max_iter": args.epochs,
              "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "random_state": 0, "device": "cpu"}  # fmt: skip
    saes = {
        "topk": SAEEncoder(activation="topk", n_nonzero_coefs=TOPK, **common),
        "relu": SAEEncoder(alpha=args.relu_alpha, **common),
    }
    settings = {**vars(args), "activations": recorded_path(args.activations),
                "expansion": EXPANSION, "topk": TOPK}  # fmt: skip
    record = {"data": data, "settings": settings, "models": {}, "environment": {
                  "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "machine": platform.machine(),
                  "threadpools": recorded_threadpools(threadpoolctl.threadpool_info()),
                  "note": "2 CPU cores shared with other jobs: seconds are indicative"}}  # fmt: skip
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every model, so a long run keeps what it measured
        output.write_text(json.dumps(record, indent=1, default=str) + "\n")

    for name in ("topk", "loaded", "sparse coding", "relu"):
        if name == "loaded":
            # A SAELens-format checkpoint of the TopK SAE, loaded back and refined prefit.
            with tempfile.TemporaryDirectory() as folder:
                save_sae(saes["topk"], folder, format="saelens")
                loaded = load_sae(folder, format="saelens", device="cpu")
            record["models"]["topk, saved and loaded as SAELens"] = evaluate_sae(
                "loaded", loaded, X_train, X_test, 0, 0
            )
        elif name == "sparse coding":
            record["models"]["sparse coding"] = sparse_coding(args, n_components, X_train, X_test)
        else:
            record["models"][name] = train_and_evaluate(name, saes[name], X_train, X_test, args)
        save()
    print(f"wrote {output}")


def train_and_evaluate(name, sae, X_train, X_test, args):
    _, fit_seconds = timed(lambda: sae.fit(X_train))
    print(f"{name} SAE trained in {fit_seconds:.1f} s", flush=True)
    results = evaluate_sae(name, sae, X_train, X_test, args.fista_tokens, args.fista_iter)
    results["sae"]["fit_seconds"] = fit_seconds
    results["sae"]["training_flops"] = int(sae.training_flops_)
    return results


def sparse_coding(args, n_components, X_train, X_test):
    """A dictionary learned for sparse inference (TopK codes in the alternation, on a
    subsample), with OMP codes at the TopK SAE's k."""
    coder = GradientSparseCoder(
        n_components=n_components, fit_algorithm="topk", transform_algorithm="omp",
        transform_n_nonzero_coefs=TOPK, max_iter=args.coder_iter, random_state=0, device="cpu",
    )  # fmt: skip
    _, fit_seconds = timed(lambda: coder.fit(X_train[: args.coder_tokens]))
    codes, seconds = timed(lambda: coder.transform(X_test))
    entry = row(X_test, codes, coder.inverse_transform(codes), seconds,
                coder.inference_flops(len(X_test)))  # fmt: skip
    entry.update(fit_seconds=fit_seconds, train_tokens=min(args.coder_tokens, len(X_train)),
                 training_flops=int(coder.training_flops_))  # fmt: skip
    print(f"{'coder':<10} {'sparse coding (topk fit, omp K=32)':<36} FVU {entry['fvu']:.4f}  "
          f"L0 {entry['l0']:6.1f}  {seconds:7.2f} s", flush=True)  # fmt: skip
    return {"gradient sparse coder": entry}


if __name__ == "__main__":
    main()
