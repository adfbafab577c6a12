"""Fig. 2 — known sparse codes: SAE against MLP encoders, MCC against steps and FLOPs.

Each encoder is trained on the true codes (``target="codes"``, per-sample cosine loss)
with the authors' settings (Adam 1e-3, full batch, encoder biases, the encoder's own output
unscaled: ``rescale_codes=False``); the library's defaults (its learning rates, codes
rescaled per sample) are shown beside them for the SAE and the widest MLP. The test metric is the authors'
index-matched Pearson correlation (``matched_corr``); the Hungarian MCC is recorded too.
The dashed line is the FLOP count at which the MLPs first beat the SAE's final score
(averaged over the paper-setting widths, as in the authors' notebook; the library MLP is
left out). Paper §4.1; the authors' numbers are in ``references/fig2_known_codes.json``.

    python benchmarks/paper/fig2_known_codes.py --profile quick
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench import plots, references, runner
from _bench.datasets import SEED_KNOWN, split_task
from _bench.methods import build

PROFILES = {
    "smoke": {"seeds": 1, "steps": 20, "widths": [8], "n_train": 128, "points": 3},
    "quick": {"seeds": 2, "steps": 2000, "widths": [32, 256, 1024], "n_train": 1024, "points": 10},
    "paper": {"seeds": 5, "steps": 20000, "widths": [32, 256, 1024], "n_train": 1024, "points": 25},
}
# The authors' final (latent MCC, std, total FLOPs), halfnormal and Zipf codes (App. D).
_PAPER_VALUES = ("latent_mcc", "latent_mcc_std", "total_flops")
PAPER = references.lookup("fig2_known_codes", "halfnormal", "method", _PAPER_VALUES)
PAPER_ZIPF = references.lookup("fig2_known_codes", "zipf", "method", _PAPER_VALUES)


def _methods(widths):
    methods = {"SAE": ("sae", "paper", {}), "SAE (library)": ("sae", "library", {})}
    for width in widths:
        methods[f"MLP H={width}"] = ("mlp", "paper", {"hidden_layer_sizes": (width,)})
    # The library's defaults (learning rate, rescaled codes) at the widest width.
    methods[f"MLP H={max(widths)} (library)"] = (
        "mlp", "library", {"hidden_layer_sizes": (max(widths),)}
    )
    return methods


def curve_job(label, method, flavour, params, seed, settings, distribution="halfnormal"):
    task = split_task(settings, SEED_KNOWN, seed, distribution)
    estimator = build(method, task, scenario="known-codes", flavour=flavour, seed=seed, **params)
    steps = runner.checkpoints(settings["steps"], settings["points"])
    records = runner.learning_curve(estimator, task, steps, known_codes=True)
    return [{"method": label, "seed": seed, **task.describe(), **r} for r in records]


run = runner.method_sweep(curve_job, _methods, description="fig2")


final_records = runner.last_checkpoints


def crossover_flops(records, metric="matched_corr"):
    """Mean over the paper-setting MLP widths of the FLOPs where the seed-mean MLP curve
    first exceeds the SAE's final seed-mean score (the authors' midpoint rule), or None."""
    final = runner.mean_std(final_records(records), metric, ["method"])
    sae_final = next(row[metric] for row in final if row["method"] == "SAE")
    points = []
    paper_mlps = {
        r["method"] for r in records
        if r["method"].startswith("MLP") and not r["method"].endswith("(library)")
    }  # fmt: skip
    for label in paper_mlps:
        curve = runner.mean_std([r for r in records if r["method"] == label], metric, ["step"])
        flops = runner.mean_std([r for r in records if r["method"] == label], "training_flops", ["step"])
        above = [i for i, row in enumerate(curve) if row[metric] > sae_final]
        if above:
            i = above[0]
            previous = flops[i - 1]["training_flops"] if i else flops[i]["training_flops"]
            points.append((previous + flops[i]["training_flops"]) / 2)
    return float(np.mean(points)) if points else None


def figures(result):
    records = result["records"]
    figure, (by_step, by_flops) = plots.subplots(2)
    plots.curves(by_step, records, x="step", y="matched_corr", xlog=True, ylabel="test MCC (index-matched)")
    plots.curves(by_flops, records, x="training_flops", y="matched_corr", xlog=True,
                 xlabel="training FLOPs", ylabel="test MCC (index-matched)")  # fmt: skip
    crossover = crossover_flops(records)
    if crossover:
        by_flops.axvline(crossover, ls="--", color="k", lw=1, label=f"crossover {crossover:.2g}")
    by_flops.legend(fontsize=7)
    figure.suptitle(f"Known codes ({result['profile']} profile)")
    return {"known_codes": figure}


def summary(result):
    records = final_records(result["records"])
    means = ["matched_corr", "latent_mcc", "training_flops", "fit_seconds"]
    rows = runner.group_means(records, ["method"], means)
    for row in rows:
        group = [r for r in records if r["method"] == row["method"]]
        reference = PAPER_ZIPF if group[0]["distribution"] == "zipf" else PAPER
        paper = reference.get(row["method"])
        row["paper"] = f"{paper[0]:.3f}±{paper[1]:.3f} @ {paper[2]:.3g}" if paper else "-"
    crossover = crossover_flops(result["records"])
    table = runner.format_table(
        rows,
        [("method", "method"), ("matched_corr", "MCC"), ("matched_corr_std", "±"),
         ("latent_mcc", "Hungarian MCC"), ("training_flops", "train FLOPs"),
         ("fit_seconds", "fit s"), ("paper", "paper (20k steps)")],
        title=f"Known codes ({records[0]['distribution']} codes), final step {records[0]['step']}",
    )  # fmt: skip
    paper_crossover = "paper ≈2.7e9 on halfnormal codes"
    ours = f"{crossover:.3g}" if crossover else "none (no MLP beat the SAE)"
    return f"{table}\nFLOPs crossover: {ours} ({paper_crossover})"


if __name__ == "__main__":
    runner.main("fig2_known_codes", __import__(__name__))
