"""SAEs trained by SAELens, sparsify and dictionary_learning with their own trainers, for
``sparsegap gap`` (issue 29, docs/gap.rst).

Each peer trains a TopK SAE (d_in = the activations' width, 4x expansion, k=32) with its
OWN trainer at its defaults (``_bench/saelens.py`` and ``_bench/peer_saes.py``), on the
same rows: the usable rows of the ``--train``
activation store (attention sinks left out with ``usable_rows``/``row_norms``, as
``sparsegap gap`` does), raw (no scaling: none of the three normalises by default),
``--epochs`` passes over them (one number for all, or ``peer=N,...``), each pass
reshuffled. The epochs become what each trainer is told to train for: SAELens's
``total_training_samples``, sparsify's dataset (the sequences repeated, each copy
shuffled), dictionary_learning's ``steps``. Only what an API requires is set:

- SAELens (written against 6.54): ``TopKTrainingSAE`` + ``SAETrainer``; batch 4,096 rows
  and lr 3e-4 (``LanguageModelSAERunnerConfig``'s defaults, ``SAETrainerConfig``'s lr),
  ``lr_end=lr/10`` (what the runner sets; unused by the constant schedule),
  ``total_training_samples`` = the epochs' whole batches, decoder bias started at zero,
  dead window 1,000 steps. Saved with ``save_model``.
- sparsify: ``Trainer(TrainConfig(SaeConfig(...)))``; its trainer hooks a model's module,
  so a stand-in model whose one layer replays the stored rows (``input_ids`` are row
  indices, -1 pads and marks left-out rows, excluded with ``exclude_tokens=[-1]``) feeds
  it the store's own sequences of 128 tokens; batch 32 sequences, signum, lr chosen by
  sparsify, 1,000 warm-up steps, no AuxK. Saved with ``save_to_disk`` (what its
  ``Trainer.save`` writes for a hookpoint).
- dictionary_learning: ``TopKTrainer`` (``AutoEncoderTopK``), one ``update`` per batch of
  8,192 rows (``ActivationBuffer``'s default ``out_batch_size``) as ``trainSAE`` does,
  ``steps`` = the epochs' whole batches; ``layer``/``lm_name`` are required labels. Saved
  as ``trainSAE`` saves (``ae.pt`` + ``config.json``). Its default ``warmup_steps=1000``
  needs more than 1,000 steps: a shorter run is refused (the error is recorded);
  ``--dl-warmup-steps`` reruns it with that set.

Each peer trains in a child process of its own, so the record's peak memory
(``peak_rss_mb``: the child's peak resident set, data and Python included) is that
trainer's.

The stores come from ``activation_stores.py`` (SmolLM2-135M layer 15, disjoint texts).
Run (the peers environment, this checkout on the path)::

    python benchmarks/peers/gap_peers.py --train TRAIN_DIR --test TEST_DIR --out PEERS_DIR \\
        --epochs saelens=124,sparsify=50,dictionary_learning=80 --dl-warmup-steps 100 \\
        --gap --rows 8000 --budgets omp-l0,omp-2x,fista-l0 --record docs/results/gap

which trains the three SAEs into PEERS_DIR/<peer>/, writes PEERS_DIR/training.json, then
runs ``sparsegap gap PEERS_DIR/<peer>/... --activations TEST_DIR --out
PEERS_DIR/gap_<peer> --rows 8000 --budgets ...`` for each and copies each results.json,
machine paths replaced by ACTIVATIONS_DIR / SAE_DIR / OUT_DIR, to
``--record``/<peer>.json.
"""

import argparse
import json
import multiprocessing
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

# benchmarks/: the shared _bench
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn_sparsegap.activations import load_activations
from sklearn_sparsegap.activations._rows import row_norms, usable_rows

K = 32
EXPANSION = 4
def training_rows(path):
    """The usable rows of a store (float32), their sequence ids and positions."""
    X, meta = load_activations(path)
    n = X.shape[0]
    use = np.flatnonzero(usable_rows(meta, n, norms=row_norms(X, n)))
    return (
        np.asarray(X[:n], dtype=np.float32),
        use,
        np.asarray(meta["sequence"][:n]),
        np.asarray(meta["position"][:n]),
    )


def store_sequences(use, sequence, position):
    """The store's own sequences as row indices in token order, one per row of the result,
    -1 where a row is left out (``use`` is False) and after a short sequence's end."""
    keep = np.zeros(len(sequence), bool)
    keep[use] = True
    rows = []
    for s in np.unique(sequence):
        index = np.flatnonzero(sequence == s)
        index = index[np.argsort(position[index], kind="stable")]
        rows.append(np.where(keep[index], index, -1))
    ids = np.full((len(rows), max(len(r) for r in rows)), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids


def train(peer, X_all, use, sequence, position, *, epochs, seed, warmup_steps=None,
          verbose=False):
    """One peer's TopK SAE trained by its own trainer at its defaults (what the module
    docstring lists), and the settings it ran with."""
    import dataclasses

    from _bench.peer_saes import DictionaryLearningSAE, SparsifySAE
    from _bench.saelens import SAELensSAE

    X = X_all[use]
    n_components = EXPANSION * X.shape[1]
    if peer == "saelens":
        from sae_lens.config import LanguageModelSAERunnerConfig

        runner = {f.name: f.default for f in dataclasses.fields(LanguageModelSAERunnerConfig)}
        batch, lr = runner["train_batch_size_tokens"], runner["lr"]  # 4096, 3e-4
        est = SAELensSAE(n_components, k=K, batch_size=batch, epochs=epochs, lr=lr,
                         random_state=seed).fit(X)  # fmt: skip
        settings = {"trainer": "sae_lens TopKTrainingSAE + SAETrainer", "batch_size": batch,
                    "lr": lr, "lr_end": lr / 10, "optimizer": "Adam (0.9, 0.999), constant "
                    "schedule", "decoder bias start": "zeros (SAELens's)",
                    "dead_feature_window": est.dead_feature_window_}  # fmt: skip
        rows, steps = est.epochs * (len(X) // batch) * batch, est.epochs * (len(X) // batch)
    elif peer == "sparsify":
        sequences = store_sequences(use, sequence, position)
        length = sequences.shape[1]
        # sparsify's default batch: 32 sequences (of the store's own 128 tokens)
        est = SparsifySAE(n_components, k=K, batch_size=32 * length, epochs=epochs,
                          random_state=seed, verbose=verbose).fit(X_all, sequences=sequences)
        settings, rows, steps = dict(est.settings_), est.rows_seen_, est.n_steps_
        settings["batch_size"] = f"32 of the store's sequences of {length} tokens, shuffled"
    else:
        est = DictionaryLearningSAE(n_components, k=K, epochs=epochs, warmup_steps=warmup_steps,
                                    random_state=seed, verbose=verbose).fit(X)  # fmt: skip
        settings, rows, steps = dict(est.settings_), est.rows_seen_, est.n_steps_
    settings.update(epochs=epochs, steps=steps, rows_seen=rows, train_seconds=est.train_seconds_)
    return est, settings


# ----------------------------------------------------------------------------- gap runs
def sanitize(obj, replacements):
    if isinstance(obj, dict):
        return {k: sanitize(v, replacements) for k, v in obj.items()}
    if isinstance(obj, list):
        return [sanitize(v, replacements) for v in obj]
    if isinstance(obj, str):
        for old, new in replacements:
            obj = obj.replace(old, new)
        return re.sub(r"/(tmp|work|root|mnt|scratch|home)/\S*", "PATH", obj)
    return obj


def run_gap(peer, sae_dir, args):
    out = Path(args.out) / f"gap_{peer}"
    if out.exists():
        shutil.rmtree(out)
    # ``sparsegap gap`` by the interpreter running this script (the same environment)
    cmd = [
        sys.executable,
        "-m",
        "sklearn_sparsegap",
        "gap",
        str(sae_dir),
        "--activations",
        args.test,
        "--out",
        str(out),
        "--rows",
        str(args.rows),
        "--budgets",
        args.budgets,
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    print(done.stdout, flush=True)
    if done.returncode:
        print(done.stderr[-3000:], flush=True)
        return None
    record = json.loads((out / "results.json").read_text())
    replacements = [
        (str(Path(sae_dir).resolve()), "SAE_DIR"),
        (str(sae_dir), "SAE_DIR"),
        (str(Path(args.test).resolve()), "ACTIVATIONS_DIR"),
        (args.test.rstrip("/"), "ACTIVATIONS_DIR"),
        (str(out.resolve()), "OUT_DIR"),
        (str(out), "OUT_DIR"),
    ]
    record = sanitize(record, replacements)
    record["command"] = (
        f"sparsegap gap SAE_DIR --activations ACTIVATIONS_DIR --out OUT_DIR "
        f"--rows {args.rows} --budgets {args.budgets}"
    )
    record["printed"] = sanitize(done.stdout, replacements)
    record["gap_wall_seconds"] = seconds
    return record


PEERS = ("saelens", "sparsify", "dictionary_learning")


def parse_epochs(text, peers):
    """``"N"`` (every peer) or ``"peer=N,..."`` -> {peer: N}; peers not named get 1."""
    epochs = dict.fromkeys(peers, 1)
    for part in text.split(","):
        name, _, value = part.strip().rpartition("=")
        if name and name not in PEERS:
            raise ValueError(f"--epochs: unknown peer {name!r}; peers are {PEERS}")
        if int(value) < 1:
            raise ValueError(f"--epochs: {part!r} is not a positive number of epochs")
        for peer in [name] if name else peers:
            epochs[peer] = int(value)
    return epochs


def train_peer(peer, args, epochs, result_file):
    """Train one peer (in a child process of its own), save it with the peer's own code
    and write its settings to ``result_file``."""
    from _bench.memory import memory_status, peak_rss_mb

    wall = time.perf_counter()
    X_all, use, sequence, position = training_rows(args.train)
    rss_data = memory_status().get("VmRSS")
    common = {"epochs": epochs, "seed": args.seed, "verbose": args.progress}
    name = peer
    try:
        est, settings = train(peer, X_all, use, sequence, position, **common)
    except AssertionError as error:  # dictionary_learning: a run shorter than its warm-up
        if peer != "dictionary_learning":
            raise
        message = f"AssertionError: {error}"
        print(f"dictionary_learning at its defaults: {message}", flush=True)
        if args.dl_warmup_steps is None:
            Path(result_file).write_text(json.dumps({"error": {
                "error": message, "traceback_tail": traceback.format_exc().splitlines()[-4:],
            }}))  # fmt: skip
            return
        est, settings = train(peer, X_all, use, sequence, position,
                              warmup_steps=args.dl_warmup_steps, **common)  # fmt: skip
        settings["default_error"] = message
        name = f"dictionary_learning_warmup{args.dl_warmup_steps}"
    folder = est.save(Path(args.out) / name)
    settings.update(
        folder=str(Path(folder).relative_to(args.out)),
        rss_after_loading_data_mb=rss_data,
        peak_rss_mb=peak_rss_mb(),
        wall_seconds=time.perf_counter() - wall,
    )
    Path(result_file).write_text(json.dumps(settings))


def _child(peer, args, epochs, result_file):
    try:
        train_peer(peer, args, epochs, result_file)
    except Exception as error:  # noqa: BLE001  (report, go on with the next peer)
        traceback.print_exc()
        Path(result_file).write_text(
            json.dumps({"error": f"{type(error).__name__}: {error}"})
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="training activation store")
    parser.add_argument(
        "--test", required=True, help="held-out activation store for the gap"
    )
    parser.add_argument("--out", required=True, help="folder for the SAEs and gap runs")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs",
        default="1",
        help="passes over the training rows: N for every peer, or "
        "peer=N,... (default 1)",
    )
    parser.add_argument(
        "--dl-warmup-steps",
        type=int,
        default=None,
        help="if dictionary_learning's default warm-up refuses the run, "
        "rerun it with this warmup_steps",
    )
    parser.add_argument(
        "--gap", action="store_true", help="run sparsegap gap on each SAE"
    )
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--budgets", default="omp-l0,omp-2x,fista-l0")
    parser.add_argument(
        "--record", default=None, help="folder for the sanitised results"
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show sparsify's and dictionary_learning's own output",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the peers an earlier run in --out trained with the same epochs "
        "(each peer's training_<peer>.json) and train the others",
    )
    parser.add_argument(
        "--skip-train",
        action="store_true",
        help="reuse the SAEs and training.json already in --out",
    )
    args = parser.parse_args()
    peers = [peer.strip() for peer in args.peers.split(",") if peer.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers: unknown {unknown}; peers are {PEERS}")
    try:
        epochs = parse_epochs(args.epochs, peers)
    except ValueError as error:
        parser.error(str(error))
    if args.skip_train:
        info = json.loads((Path(args.out) / "training.json").read_text())
        trained = {
            peer: Path(args.out) / v["folder"]
            for peer, v in info["peers"].items()
            if peer in peers and "folder" in v
        }
        return run_all(args, info, trained)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    X_all, use, _, _ = training_rows(args.train)
    print(
        f"training rows: {len(use)} of {len(X_all)} (attention sinks left out), "
        f"d={X_all.shape[1]}",
        flush=True,
    )
    info = {
        "train_rows": len(use),
        "store_rows": len(X_all),
        "k": K,
        "n_components": EXPANSION * X_all.shape[1],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "peers": {},
    }
    del X_all, use
    trained = {}
    context = multiprocessing.get_context("spawn")
    for peer in peers:
        print(f"== {peer}: {epochs[peer]} epoch(s)", flush=True)
        result_file = Path(args.out) / f"training_{peer}.json"
        kept = json.loads(result_file.read_text()) if result_file.exists() else {}
        if args.resume and "folder" in kept and kept.get("epochs") == epochs[peer]:
            print(f"kept from an earlier run: {result_file}", flush=True)
        else:
            result_file.unlink(missing_ok=True)
            child = context.Process(
                target=_child, args=(peer, args, epochs[peer], str(result_file))
            )
            child.start()
            child.join()
        if not result_file.exists():
            info["peers"][peer] = {
                "error": f"the training process exited {child.exitcode}"
            }
            continue
        settings = json.loads(result_file.read_text())
        if "error" in settings:
            if peer == "dictionary_learning" and isinstance(settings["error"], dict):
                info["peers"]["dictionary_learning_default_error"] = settings["error"]
            else:
                info["peers"][peer] = settings
            continue
        if "default_error" in settings:
            info["peers"]["dictionary_learning_default_error"] = {
                "error": settings["default_error"]
            }
        print(json.dumps({k: v for k, v in settings.items() if k != "log"}), flush=True)
        info["peers"][peer] = settings
        trained[peer] = Path(args.out) / settings["folder"]
        (Path(args.out) / "training.json").write_text(json.dumps(info, indent=1))
    (Path(args.out) / "training.json").write_text(json.dumps(info, indent=1))
    run_all(args, info, trained)


def run_all(args, info, trained):
    if args.gap:
        for peer, folder in trained.items():
            print(f"== sparsegap gap: {peer}", flush=True)
            record = run_gap(peer, folder, args)
            if record is None or args.record is None:
                continue
            settings = {
                k: v
                for k, v in info["peers"][peer].items()
                if k not in ("folder", "log")
            }
            record["training"] = {
                **settings,
                "train_rows": info["train_rows"],
                "train_store_rows": info["store_rows"],
                "k": K,
                "n_components": info["n_components"],
                "threads": info.get("threads"),
                "data": "the usable rows of TRAIN_DIR, raw, "
                f"{settings.get('epochs', 1)} epoch(s), each reshuffled",
                "script": "benchmarks/peers/gap_peers.py",
            }
            Path(args.record).mkdir(parents=True, exist_ok=True)
            (Path(args.record) / f"{peer}.json").write_text(
                json.dumps(record, indent=1) + "\n"
            )


if __name__ == "__main__":
    main()
