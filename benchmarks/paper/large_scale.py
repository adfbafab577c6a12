"""App. C — known codes at large scale (N=1000, M=200, K=20): SAE vs MLP encoders, MCC against FLOPs.

The small-scale experiment of ``fig2_known_codes.py`` scaled up (paper App. C, the
authors' branch ``alim`` known_Z.py): each encoder is trained on the true codes
(``target="codes"``, per-sample cosine loss) on shuffled minibatches of 1024 with Adam at
1e-3 and encoder biases (the authors' settings); the library's default SAE (learning rate
1e-2, codes rescaled per sample) is shown beside it. With ``batch_size`` set, one ``max_iter`` unit of the library's
training loop is one epoch (``_training.train``: "Full-batch steps when batch_size is None
(or >= n_samples), else epochs"), so the learning curves are traced in epochs with
``warm_start=True`` (``runner.learning_curve``): every checkpoint continues the same run.
The test metric is the authors' index-matched Pearson correlation (``matched_corr``,
computed once on the whole test set; theirs is averaged over minibatches); the Hungarian
MCC is recorded too. Training FLOPs are the library's decoder-inclusive counts with a
fixed decoder (paper App. I), so one SAE epoch on 500k samples is 1.0e12 FLOPs and one
MLP H=1024 epoch 4.1e12, as in the authors' code. The dashed line is the FLOP count at which
the MLPs first beat the SAE's final score, averaged over widths (the authors' rule,
``fig2_known_codes.crossover_flops``).

Paper text against the authors' code (paper App. C), and what this script follows:
  * training length: the paper says 20,000 steps, the final code runs 100 epochs of
    500k samples (about 48.9k steps): the paper profile runs 100 epochs;
  * widths: the paper says H in {256, 512, 1024}, the final code uses [32, 256]
    (an earlier commit [32, 256, 1024]): the paper profile follows the paper text;
  * loss: the code's column-wise cosine; ours is the per-sample 1 - cos(f(x), s*)
    the paper writes (see ``_bench.methods``);
  * initialisation: the library starts a known-codes encoder's output layer at the
    regression onto the codes (least squares for the SAE, ridge for MLPs); the authors'
    start at PyTorch's random init (so our curves start higher);
  * the number of runs is not recorded: the paper profile uses 5 seeds, as Fig. 2.
The paper's reference (no result file was committed): crossover at about 3e14 FLOPs.

Profiles:
  * smoke: N=40, M=16, K=4, 256 train / 256 test, 2 epochs of minibatches of 64, H=8;
  * quick: the paper's N=1000, M=200, K=20 but 20k train / 5k test samples, 16 epochs
    (320 optimiser steps) measured after epochs 1, 2, 4, 8 and 16, H in {256, 1024},
    one seed: about 2 minutes on 2 idle cores. With 25 times fewer samples and 6 times
    fewer epochs than the paper, the SAE is not converged, the wide MLP over-fits the
    20k samples, and the FLOPs are about 150 times smaller than the paper's: read the
    quick curves as a shape, not as the paper's numbers;
  * paper: 500k train / 500k test, 100 epochs (12 checkpoints), H in {256, 512, 1024},
    5 seeds. Needs a GPU (``device="auto"``) and about 24 GB of RAM: the 1M x 1000 true
    codes are dense float64 (8 GB) before the split.
Every checkpoint also pays the library's known-codes decoder fit (each ``fit`` starts with
a least-squares fit, with bias, of X on the (n_train, N) training codes, used by
``inverse_transform``, the rescaling and the logged mse):
at N=1000 about 2 s per checkpoint on 20k samples on 2 idle cores (as long as an SAE
epoch; far longer on a loaded machine), and 25 times more per checkpoint on 500k. The
"train MCC" column is the same metric on as many training samples as test samples
(over- or under-fitting).

    python benchmarks/paper/large_scale.py --profile quick
    python benchmarks/paper/large_scale.py --profile paper --device cuda --out RESULTS_DIR/large_scale
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench import plots, references, runner
from _bench.datasets import SEED_KNOWN, make_task
from _bench.methods import build
from _bench.objective import matched_corr, measure
from fig2_known_codes import crossover_flops, final_records

PROFILES = {
    "smoke": {
        "seeds": 1, "n_components": 40, "n_features": 16, "n_nonzero_coefs": 4,
        "n_train": 256, "n_test": 256, "batch_size": 64, "epochs": 2, "widths": [8],
        "points": 2,
    },
    "quick": {
        "seeds": 1, "n_components": 1000, "n_features": 200, "n_nonzero_coefs": 20,
        "n_train": 20_000, "n_test": 5_000, "batch_size": 1024, "epochs": 16,
        "widths": [256, 1024], "points": 5,
    },
    "paper": {
        "seeds": 5, "n_components": 1000, "n_features": 200, "n_nonzero_coefs": 20,
        "n_train": 500_000, "n_test": 500_000, "batch_size": 1024, "epochs": 100,
        "widths": [256, 512, 1024], "points": 12,
    },
}  # fmt: skip
# The crossover read off the paper's Fig. 8b, and the per-epoch FLOPs of the authors'
# code on their 500k samples.
_CROSSOVER = references.records("large_scale", "crossover")[0]
PAPER_CROSSOVER, PAPER_SAMPLES = _CROSSOVER["total_flops"], _CROSSOVER["n_train"]
PAPER_EPOCH_FLOPS = references.lookup("large_scale", "epoch_flops", "method", "epoch_flops")

def _methods(widths):
    methods = {"SAE": ("sae", "paper", {}), "SAE (library)": ("sae", "library", {})}
    for width in widths:
        methods[f"MLP H={width}"] = ("mlp", "paper", {"hidden_layer_sizes": (width,)})
    return methods


def _evaluate(estimator, task):
    """``measure`` on the test set, plus the same index-matched MCC on as many training
    samples (is a plateau under-fitting or over-fitting?)."""
    record = measure(estimator, task, known_codes=True)
    rows = slice(0, min(len(task.X_train), len(task.X_test)))
    codes = estimator.transform(task.X_train[rows])
    record["train_matched_corr"] = matched_corr(task.codes_train[rows], codes)
    return record


def curve_job(label, method, flavour, params, seed, settings, device=None):
    task = make_task(
        settings["n_components"], settings["n_features"], settings["n_nonzero_coefs"],
        n_train=settings["n_train"], n_test=settings["n_test"], seed=SEED_KNOWN + seed,
    )  # fmt: skip
    estimator = build(
        method, task, scenario="known-codes", flavour=flavour, seed=seed,
        batch_size=settings["batch_size"], **params,
        **({} if device is None else {"device": device}),
    )  # fmt: skip
    epochs = runner.checkpoints(settings["epochs"], settings["points"])
    records = runner.learning_curve(
        estimator, task, epochs, known_codes=True, evaluate=_evaluate
    )
    steps_per_epoch = -(-settings["n_train"] // settings["batch_size"])
    return [
        {"method": label, "seed": seed, **task.describe(), "batch_size": settings["batch_size"],
         **r, "epoch": r["step"], "optimizer_steps": r["step"] * steps_per_epoch}
        for r in records
    ]  # fmt: skip


def run(settings, n_jobs=1, progress=True, device=None):
    """The sweep; ``device`` (``--device``: cpu, cuda, auto) goes to every estimator and
    into each job's settings (a unit computed on one device is not reused for another)."""
    common = {} if device is None else {"device": device}
    return runner.sweep_methods(
        curve_job, _methods(settings["widths"]), settings, n_jobs=n_jobs, progress=progress,
        description="large_scale", **common,
    )  # fmt: skip


def _crossovers(records):
    """The authors' mean crossover, and each width's own (None where it never crosses)."""
    widths = sorted({r["method"] for r in records if r["method"].startswith("MLP")},
                    key=lambda label: int(label.split("=")[1]))  # fmt: skip
    each = {
        label: crossover_flops([r for r in records if r["method"] in ("SAE", label)])
        for label in widths
    }
    return crossover_flops(records), each


def figures(result):
    records = result["records"]
    settings = result["settings"]
    figure, (by_epoch, by_flops) = plots.subplots(2, width=5.0, height=3.6)
    plots.curves(by_epoch, records, x="epoch", y="matched_corr",
                 xlabel="epoch", ylabel="test MCC (index-matched)")  # fmt: skip
    plots.curves(by_flops, records, x="training_flops", y="matched_corr", xlog=True,
                 xlabel="training FLOPs", ylabel="test MCC (index-matched)")  # fmt: skip
    crossover, _ = _crossovers(records)
    if crossover:
        by_flops.axvline(crossover, ls="--", color="k", lw=1, label=f"crossover {crossover:.2g}")
    by_epoch.set_title("MCC per epoch")
    by_flops.set_title("MCC per training FLOP")
    by_epoch.legend(fontsize=7)
    by_flops.legend(fontsize=7)
    figure.suptitle(
        f"Known codes at scale: N={settings['n_components']}, M={settings['n_features']}, "
        f"K={settings['n_nonzero_coefs']}, {settings['n_train']:,} train samples, batch "
        f"{settings['batch_size']} ({result['profile']} profile)"
    )
    figure.tight_layout()
    return {"large_scale": figure}


def summary(result):
    records = final_records(result["records"])
    settings = result["settings"]
    rows = runner.mean_std(records, "matched_corr", ["method"])
    for row in rows:
        group = [r for r in records if r["method"] == row["method"]]
        for key in ("latent_mcc", "train_matched_corr", "training_flops", "fit_seconds"):
            row[key] = float(np.mean([r[key] for r in group]))
        per_epoch = row["training_flops"] / group[0]["epoch"]
        row["epoch_flops_paper_n"] = per_epoch * PAPER_SAMPLES / group[0]["n_train"]
        paper = PAPER_EPOCH_FLOPS.get(row["method"])
        row["paper_epoch"] = f"{paper:.2g}" if paper else "-"
    crossover, each = _crossovers(result["records"])
    table = runner.format_table(
        rows,
        [("method", "method"), ("matched_corr", "MCC"), ("matched_corr_std", "±"),
         ("latent_mcc", "Hungarian MCC"), ("train_matched_corr", "train MCC"),
         ("training_flops", "train FLOPs"),
         ("fit_seconds", "fit s"), ("epoch_flops_paper_n", "FLOPs/epoch @500k"),
         ("paper_epoch", "paper")],
        title=(f"Known codes at scale, final epoch {records[0]['epoch']} "
               f"({records[0]['epoch'] * -(-settings['n_train'] // settings['batch_size'])} "
               f"steps of {settings['batch_size']}), {settings['n_train']:,} train / "
               f"{settings['n_test']:,} test samples"),
    )  # fmt: skip
    sae_epoch = next(row["training_flops"] for row in rows if row["method"] == "SAE")
    sae_epoch /= records[0]["epoch"]

    def show(value):
        if value is None:
            return "none (never beat the SAE)"
        return f"{value:.3g} (= {value / sae_epoch:.3g} SAE epochs)"

    lines = [f"  {label}: {show(value)}" for label, value in each.items()]
    ours = show(crossover)
    paper_epochs = PAPER_CROSSOVER / PAPER_EPOCH_FLOPS["SAE"]
    paper = f"paper ≈{PAPER_CROSSOVER:.0e} (= {paper_epochs:.0f} SAE epochs)"
    return "\n".join([table, f"FLOPs crossover (mean over widths): {ours}; {paper}", *lines])


if __name__ == "__main__":
    runner.main("large_scale", __import__(__name__))
