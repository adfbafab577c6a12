"""SAEs trained by SAELens, sparsify and dictionary_learning with their own trainers, for
``sparsegap gap`` (issue 29, docs/gap.rst).

Each peer trains a TopK SAE (d_in = the activations' width, 4x expansion, k=32) with its
OWN training loop at its defaults, one epoch over the same rows: the usable rows of the
``--train`` activation store (attention sinks left out with ``usable_rows``/``row_norms``,
as ``sparsegap gap`` does), raw (no scaling: none of the three normalises by default).
Only what an API requires is set:

- SAELens (written against 6.54): ``TopKTrainingSAE`` + ``SAETrainer``; batch 4,096 rows
  and lr 3e-4 (``LanguageModelSAERunnerConfig``'s defaults, ``SAETrainerConfig``'s lr),
  ``lr_end=lr/10`` (what the runner sets; unused by the constant schedule),
  ``total_training_samples`` = one epoch of whole batches. Saved with ``save_model``.
- sparsify: ``Trainer(TrainConfig(SaeConfig(...)))``; its trainer hooks a model's module,
  so a stand-in model whose one layer replays the stored rows (``input_ids`` are row
  indices, -1 pads and marks left-out rows, excluded with ``exclude_tokens=[-1]``) feeds
  it the store's own sequences of 128 tokens; batch 32 sequences, signum, lr chosen by
  sparsify. Saved by the trainer itself (``Trainer.save``: ``save_dir/run_name/layers.0``).
- dictionary_learning: ``trainSAE`` with ``TopKTrainer`` (``AutoEncoderTopK``); its data
  is an iterator of batches of 8,192 rows (``ActivationBuffer``'s default
  ``out_batch_size``), ``steps`` = one epoch of whole batches; ``layer``/``lm_name`` are
  required labels. Saved by ``trainSAE(save_dir=...)`` (``trainer_0/ae.pt`` +
  ``config.json``). At its default ``warmup_steps=1000`` the trainer refuses a run shorter
  than its warm-up (the error is recorded); ``--dl-warmup-steps`` reruns it with that set.

Run (the peers environment, this checkout on the path)::

    python benchmarks/peers/gap_peers.py --train TRAIN_DIR --test TEST_DIR --out PEERS_DIR \\
        --gap --rows 4000 --budgets omp-l0,omp-2x,fista-l0 --record docs/results/gap

which trains the three SAEs into PEERS_DIR/<peer>/, writes PEERS_DIR/training.json, then
runs ``sparsegap gap PEERS_DIR/<peer>/... --activations TEST_DIR --out
PEERS_DIR/gap_<peer> --rows 4000 --budgets ...`` for each and copies each results.json,
machine paths replaced by ACTIVATIONS_DIR / SAE_DIR / OUT_DIR, to
``--record``/<peer>.json.
"""

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

# sparsify's Triton decoder needs a GPU
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")

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


# ------------------------------------------------------------------------------ SAELens
def train_saelens(X, out, seed, epochs=1):
    import dataclasses

    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import (
        LanguageModelSAERunnerConfig,
        LoggingConfig,
        SAETrainerConfig,
    )

    runner = {
        f.name: f.default for f in dataclasses.fields(LanguageModelSAERunnerConfig)
    }
    batch = runner["train_batch_size_tokens"]  # 4096
    lr = runner["lr"]  # 3e-4
    n, d = X.shape
    steps = epochs * (n // batch)
    torch.manual_seed(seed)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            k=K, d_in=d, d_sae=EXPANSION * d, dtype="float32", device="cpu"
        )
    )
    rows = torch.as_tensor(X)
    generator = torch.Generator().manual_seed(seed)

    def batches():  # each epoch reshuffled, its last incomplete batch dropped
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for s in range(n // batch):
                yield rows[order[s * batch : (s + 1) * batch]]

    cfg = SAETrainerConfig(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=lr,
        lr_end=lr / 10,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
    )
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        sae = SAETrainer(cfg=cfg, sae=sae, data_provider=batches()).fit()
    seconds = time.perf_counter() - start
    folder = Path(out) / "saelens"
    sae.save_model(str(folder))
    return folder, {
        "trainer": "sae_lens TopKTrainingSAE + SAETrainer",
        "batch_size": batch,
        "lr": lr,
        "lr_end": lr / 10,
        "epochs": epochs,
        "steps": steps,
        "rows_seen": steps * batch,
        "optimizer": "Adam (0.9, 0.999), constant schedule",
        "train_seconds": seconds,
    }


# ----------------------------------------------------------------------------- sparsify
class _Replay(torch.nn.Module):
    """One 'layer' whose output is the stored activation of each input id (a row index)."""

    def __init__(self, X):
        super().__init__()
        self.register_buffer("rows", torch.as_tensor(X), persistent=False)

    def forward(self, ids):
        return self.rows[ids.clamp(min=0)]


class _ReplayModel(torch.nn.Module):
    """The attributes sparsify's Trainer reads from a Hugging Face model, no more."""

    def __init__(self, X):
        super().__init__()
        self.layers = torch.nn.ModuleList([_Replay(X)])
        self.config = type("Config", (), {"num_hidden_layers": 1})()
        self.dummy_inputs = {"input_ids": torch.zeros(1, 4, dtype=torch.long)}

    @property
    def base_model(self):
        return self

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids=None, **kwargs):
        return self.layers[0](input_ids)


def train_sparsify(X, use, sequence, position, out, seed):
    import sparsify
    from sparsify import SaeConfig, TrainConfig, Trainer

    d = X.shape[1]
    keep = np.zeros(len(X), bool)
    keep[use] = True
    # The store's own sequences (128 tokens each): row indices, -1 where left out or padding.
    seqs = []
    for s in np.unique(sequence):
        idx = np.flatnonzero(sequence == s)
        idx = idx[np.argsort(position[idx], kind="stable")]
        seqs.append(np.where(keep[idx], idx, -1))
    length = max(len(s) for s in seqs)
    ids = np.full((len(seqs), length), -1, dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    # sparsify does not shuffle ("the dataset should be shuffled before"): shuffle sequences.
    ids = ids[np.random.default_rng(seed).permutation(len(ids))]
    dataset = [{"input_ids": torch.as_tensor(row)} for row in ids]
    cfg = TrainConfig(
        SaeConfig(num_latents=EXPANSION * d, k=K),
        hookpoints=["layers.0"],
        exclude_tokens=[-1],
        init_seeds=[seed],
        log_to_wandb=False,
        save_dir=str(Path(out) / "sparsify"),
        run_name="run",
    )
    model = _ReplayModel(X)
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
        trainer = Trainer(cfg, dataset, model)
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    folder = Path(out) / "sparsify" / "run" / "layers.0"
    return folder, {
        "trainer": f"sparsify {getattr(sparsify, '__version__', '')} Trainer",
        "batch_size": f"{cfg.batch_size} sequences of {length} tokens",
        "steps": trainer.global_step,
        "rows_seen": int(keep.sum()),
        "optimizer": f"{cfg.optimizer} (schedule-free), lr {lr:.3g} (sparsify's "
        "choice for the width)",
        "loss": cfg.loss_fn,
        "auxk_alpha": cfg.auxk_alpha,
        "train_seconds": seconds,
        "log": log.getvalue().strip().splitlines(),
    }


# ------------------------------------------------------------------ dictionary_learning
def train_dictionary_learning(X, out, seed, warmup_steps=None):
    import inspect

    from dictionary_learning.trainers.top_k import AutoEncoderTopK, TopKTrainer
    from dictionary_learning.training import trainSAE

    buffer_default = (
        inspect.signature(
            __import__(
                "dictionary_learning.buffer", fromlist=["ActivationBuffer"]
            ).ActivationBuffer
        )
        .parameters["out_batch_size"]
        .default
    )  # 8192
    n, d = X.shape
    steps = n // buffer_default
    rows = torch.as_tensor(X)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def batches():
        for s in range(steps):
            yield rows[order[s * buffer_default : (s + 1) * buffer_default]]

    config = {
        "trainer": TopKTrainer,
        "steps": steps,
        "activation_dim": d,
        "dict_size": EXPANSION * d,
        "k": K,
        "layer": 15,
        "lm_name": "SmolLM2-135M",
        "dict_class": AutoEncoderTopK,
        "seed": seed,
        "device": "cpu",
    }
    if warmup_steps is not None:
        config["warmup_steps"] = warmup_steps
    save_dir = Path(out) / (
        "dictionary_learning"
        if warmup_steps is None
        else f"dictionary_learning_warmup{warmup_steps}"
    )
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        trainSAE(
            data=batches(),
            trainer_configs=[config],
            steps=steps,
            save_dir=str(save_dir),
            device="cpu",
        )
    seconds = time.perf_counter() - start
    lr = 2e-4 / (EXPANSION * d / 2**14) ** 0.5
    return save_dir / "trainer_0", {
        "trainer": "dictionary_learning trainSAE + TopKTrainer (AutoEncoderTopK)",
        "batch_size": buffer_default,
        "steps": steps,
        "rows_seen": steps * buffer_default,
        "lr": lr,
        "warmup_steps": 1000 if warmup_steps is None else warmup_steps,
        "optimizer": "Adam (0.9, 0.999), lr chosen by the trainer for the width",
        "auxk_alpha": 1 / 32,
        "train_seconds": seconds,
    }


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
    exe = shutil.which("sparsegap") or "sparsegap"
    cmd = [
        exe,
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="training activation store")
    parser.add_argument(
        "--test", required=True, help="held-out activation store for the gap"
    )
    parser.add_argument("--out", required=True, help="folder for the SAEs and gap runs")
    parser.add_argument("--peers", default="saelens,sparsify,dictionary_learning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--saelens-epochs",
        type=int,
        default=1,
        help="epochs of SAELens's training (1: the default run)",
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
        "--skip-train",
        action="store_true",
        help="reuse the SAEs and training.json already in --out",
    )
    args = parser.parse_args()
    if args.skip_train:
        info = json.loads((Path(args.out) / "training.json").read_text())
        trained = {
            peer: Path(args.out) / v["folder"]
            for peer, v in info["peers"].items()
            if "folder" in v
        }
        return run_all(args, info, trained)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    X_all, use, sequence, position = training_rows(args.train)
    X = X_all[use]
    print(
        f"training rows: {len(X)} of {len(X_all)} (attention sinks left out), d={X.shape[1]}",
        flush=True,
    )
    info = {
        "train_rows": len(X),
        "store_rows": len(X_all),
        "k": K,
        "n_components": EXPANSION * X.shape[1],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "peers": {},
    }
    trained = {}
    for peer in args.peers.split(","):
        print(f"== {peer}", flush=True)
        try:
            if peer == "saelens":
                folder, settings = train_saelens(
                    X, args.out, args.seed, args.saelens_epochs
                )
            elif peer == "sparsify":
                folder, settings = train_sparsify(
                    X_all, use, sequence, position, args.out, args.seed
                )
            elif peer == "dictionary_learning":
                try:
                    folder, settings = train_dictionary_learning(X, args.out, args.seed)
                except AssertionError as error:
                    message = f"AssertionError: {error}"
                    print(f"dictionary_learning at its defaults: {message}", flush=True)
                    info["peers"]["dictionary_learning_default_error"] = {
                        "error": message,
                        "traceback_tail": traceback.format_exc().splitlines()[-4:],
                    }
                    if args.dl_warmup_steps is None:
                        continue
                    folder, settings = train_dictionary_learning(
                        X, args.out, args.seed, args.dl_warmup_steps
                    )
                    settings["default_error"] = message
            else:
                raise ValueError(f"unknown peer {peer!r}")
        except Exception as error:  # noqa: BLE001  (report, go on with the next peer)
            info["peers"][peer] = {"error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
            continue
        print(json.dumps({k: v for k, v in settings.items() if k != "log"}), flush=True)
        info["peers"][peer] = {
            **settings,
            "folder": str(Path(folder).relative_to(args.out)),
        }
        trained[peer] = folder
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
                "k": K,
                "n_components": info["n_components"],
                "data": "the usable rows of TRAIN_DIR, raw, "
                f"{settings.get('epochs', 1)} epoch(s)",
                "script": "benchmarks/peers/gap_peers.py",
            }
            Path(args.record).mkdir(parents=True, exist_ok=True)
            name = (
                peer
                if settings.get("epochs", 1) == 1
                else f"{peer}_{settings['epochs']}epochs"
            )
            (Path(args.record) / f"{name}.json").write_text(
                json.dumps(record, indent=1) + "\n"
            )


if __name__ == "__main__":
    main()
