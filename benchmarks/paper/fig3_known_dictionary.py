"""Fig. 3 — known dictionary: SAE, MLP encoders and SAE + inference-time optimisation.

The decoder is the true dictionary, frozen; the encoders (SAE, MLP H=32 and H=256) are
trained on the reconstruction + L1 objective with the authors' settings (per-entry L1
0.01, Adam 1e-3, full batch, no biases), and the library's default SAE and MLP (H=256)
are shown beside them. SAE+ITO refines the trained paper-setting SAE's test codes on the
true dictionary, and is shown:

- with the paper-faithful Adam ITO (exp-parametrised codes), started from the SAE's codes
  (``init="encoder"``, what the paper describes) **and** from the constant ``exp(-10)``
  (``init="zeros"``, what the authors' code actually ran: its ``initial_S`` was ignored,
  so their "init" and "random" curves are one and the same);
- with our FISTA ITO (positive lasso, same objective, both inits) and OMP (K = the true 3
  atoms, greedy, init-free);
- and ``SAEPlusITO`` with the synthetic settings (FISTA at 0.025 x the SAE's alpha 0.2,
  ``experiments._methods.synthetic_ito_params``) on the library SAE.

Panels: test latent MCC (Hungarian) against training steps (the ITO variants drawn along
the SAE's training, refining each checkpoint's SAE with the full ITO budget); against total
FLOPs, training + inference on the 1024 test samples, where SAE+ITO = SAE FLOPs + ITO FLOPs
at each ITO iteration count on the final SAE, as the authors plot it; and against ITO
iterations on the final SAE. Paper §4.2 (FLOPs App. I, Zipf codes App. D); the authors' numbers are in
``references/fig3_known_dictionary.json``.

Paper-versus-code discrepancies followed: the codes are |N(0,1)| (the authors' code, not
the paper's N(0,1)); FLOPs are counted as in the authors' notebook (training + one test
inference pass; SAE+ITO adds the SAE's FLOPs, contradicting the paper's "zero training
FLOPs"); MCC is Hungarian. Differences that remain: the authors' known-dictionary ITO ran
20,000 Adam steps at lr 1e-3, ``sparse_encode(algorithm="adam")`` uses lr 3e-3 (the
authors' test-time rate) with the profile's iteration count; our encoders start as the
dictionary's transpose (theirs random), so our SAE starts at its plateau MCC instead of
rising to the authors' 0.71 peak at ~1.5k steps (and then decaying to 0.61 by 20k);
``SAEPlusITO`` keeps, per sample, whichever of the SAE codes and the refined codes has the
lower objective, so ``init="zeros"`` is the authors' run with that safeguard (it matters
only at small ITO budgets: the "ITO kept" column and panel (c) show when the refinement
wins); FISTA FLOPs count the whole iteration budget (an upper bound: its tolerance stops
it earlier).

    python benchmarks/paper/fig3_known_dictionary.py --profile quick
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench import plots, references, runner
from _bench.datasets import SEED_KNOWN, split_task
from _bench.methods import build
from _bench.objective import ITO_KEPT_NOTE, measure, measure_refined
from _bench.tables import with_std


PROFILES = {
    "smoke": {
        "seeds": 1, "steps": 20, "widths": [32, 256], "n_train": 128, "points": 3,
        "ito_iter": 20, "fista_iter": 20, "ito_points": 3,
    },
    "quick": {
        "seeds": 3, "steps": 3000, "widths": [32, 256], "n_train": 1024, "points": 10,
        "ito_iter": 5000, "fista_iter": 500, "ito_points": 8,
    },
    "paper": {
        "seeds": 5, "steps": 20000, "widths": [32, 256], "n_train": 1024, "points": 25,
        "ito_iter": 20000, "fista_iter": 500, "ito_points": 15,
    },
}  # fmt: skip
# The authors' (latent MCC, std, total FLOPs), halfnormal and Zipf codes (App. D); see
# references/fig3_known_dictionary.json for what they are.
_PAPER_VALUES = ("latent_mcc", "latent_mcc_std", "total_flops")
PAPER = references.lookup("fig3_known_dictionary", "halfnormal", "method", _PAPER_VALUES)
PAPER_ZIPF = references.lookup("fig3_known_dictionary", "zipf", "method", _PAPER_VALUES)
PAPER_NOTE = references.load("fig3_known_dictionary")["notes"]
# The summary table's columns, and the note under it (its numbers from the run's settings).
SUMMARY_COLUMNS = [
    ("method", "method"), *with_std("latent_mcc", "MCC"), ("training_flops", "train FLOPs"),
    ("inference_flops", "test FLOPs"), ("total_flops", "total FLOPs"),
    ("fit_seconds", "fit s"), ("transform_seconds", "transform s"), ("kept", "ITO kept"),
    ("paper", "paper MCC @ FLOPs (20k steps)"),
]  # fmt: skip
SUMMARY_NOTE = (
    "ITO budgets: adam {ito_iter} iterations (lr 3e-3; authors: 20,000 at 1e-3), fista "
    "{fista_iter} (upper bound), omp K atoms. Paper SAE peak 0.71 at ~1.5k steps (the "
    f"authors' runs). {ITO_KEPT_NOTE} (the others keep the SAE codes)."
)

SAE_LABEL = "SAE"
SAE_LIBRARY_LABEL = "SAE (library)"
ITO_LIBRARY_LABEL = "SAE (library) + ITO fista (library)"


def _encoders(widths):
    """Label -> (method, flavour, params) of the encoders trained along a curve."""
    methods = {SAE_LABEL: ("sae", "paper", {}), SAE_LIBRARY_LABEL: ("sae", "library", {})}
    for width in widths:
        methods[f"MLP H={width}"] = ("mlp", "paper", {"hidden_layer_sizes": (width,)})
    methods["MLP H=256 (library)"] = ("mlp", "library", {"hidden_layer_sizes": (256,)})
    return methods


def ito_variants(settings, task, alpha):
    """Label -> SAEPlusITO parameters of the refinements of the paper-setting SAE; its
    ``alpha`` (the paper's L1) is the ITO's, as in the authors' code."""
    adam = {"transform_algorithm": "adam", "transform_max_iter": settings["ito_iter"], "tol": 0.0,
            "transform_alpha": alpha}  # fmt: skip
    fista = {"transform_algorithm": "fista", "transform_max_iter": settings["fista_iter"], "transform_alpha": alpha}
    return {
        "SAE+ITO adam, SAE init": {**adam, "init": "encoder"},
        "SAE+ITO adam, zero init (authors')": {**adam, "init": "zeros"},
        "SAE+ITO fista, SAE init": {**fista, "init": "encoder"},
        "SAE+ITO fista, zero init": {**fista, "init": "zeros"},
        f"SAE+ITO omp, K={task.n_nonzero_coefs}": {
            "transform_algorithm": "omp", "transform_n_nonzero_coefs": task.n_nonzero_coefs,
            "transform_alpha": alpha,
        },
    }  # fmt: skip


def curve_job(label, method, flavour, params, seed, settings, distribution="halfnormal"):
    """One encoder's training curve; for the two SAEs also their SAE+ITO variants along
    the curve, and, for the paper SAE, the ITO-iteration curves on its final state."""
    task = split_task(settings, SEED_KNOWN, seed, distribution)
    estimator = build(
        method, task, scenario="known-dictionary", flavour=flavour, seed=seed, **params
    )
    variants = {}
    if label == SAE_LABEL:
        variants = ito_variants(settings, task, estimator.alpha)
    elif label == SAE_LIBRARY_LABEL:
        # The synthetic ITO settings (SAEPlusITO's defaults before issue 15, filled in by
        # synthetic_ito_params: FISTA from the SAE codes, transform_alpha 0.025 x the
        # SAE's, refitted decoder bias, 500 iterations), shortened only by the smoke profile.
        library_default = {
            "transform_algorithm": "fista", "init": "encoder",
            "transform_max_iter": min(500, settings["fista_iter"]),
        }  # fmt: skip
        variants = {ITO_LIBRARY_LABEL: library_default}

    def evaluate(encoder, task):
        record = measure(encoder, task)
        record["total_flops"] = record["training_flops"] + record["inference_flops"]
        return record

    steps = runner.checkpoints(settings["steps"], settings["points"])
    common = {"seed": seed, "flavour": flavour, "curve": "training", **task.describe()}
    refinements = {
        name: (lambda fitted, t, p=p: measure_refined(fitted, t, p)) for name, p in variants.items()
    }
    curve = runner.learning_curve(
        estimator, task, steps, evaluate=evaluate, label=label, refinements=refinements
    )
    records = [{**record, **common} for record in curve]
    if label == SAE_LABEL:
        # The authors' SAE+ITO curve: ITO iterations on the final SAE (greedy OMP has none).
        for name, params in variants.items():
            if params["transform_algorithm"] == "omp":
                continue
            for n_iter in runner.checkpoints(params["transform_max_iter"], settings["ito_points"]):
                metrics = measure_refined(estimator, task, {**params, "transform_max_iter": n_iter})
                records.append(
                    {"method": name, **common, "curve": "ito", **metrics,
                     "step": steps[-1], "ito_iter": n_iter}
                )  # fmt: skip
    return records


run = runner.method_sweep(curve_job, _encoders, description="fig3")


# ------------------------------------------------------------------------ reporting
def final_records(records):
    """The last training-curve checkpoint of every method."""
    return runner.last_checkpoints([r for r in records if r["curve"] == "training"])


def figures(result):
    records = result["records"]
    training = [r for r in records if r["curve"] == "training"]
    ito = [{**r, "step": r["ito_iter"]} for r in records if r["curve"] == "ito"]
    styles = plots.method_styles(plots.method_labels(training))
    figure, (by_step, by_flops, by_iter) = plots.subplots(3, width=4.6, height=3.6)
    ylabel = "test latent MCC"
    plots.styled_curves(by_step, training, styles, x="step", y="latent_mcc", xlog=True,
         xlabel="training steps (SAE steps for SAE+ITO)", ylabel=ylabel)  # fmt: skip
    by_step.set_title("(a) MCC vs training steps", fontsize=9)
    encoders = [r for r in training if "ITO" not in r["method"]]
    # Refinements without an ITO-iteration curve: one point at their final FLOPs.
    points = [
        {**r, "step": 0} for r in final_records(training)
        if r.get("transform_algorithm") == "omp" or r["method"] == ITO_LIBRARY_LABEL
    ]  # fmt: skip
    plots.styled_curves(by_flops, encoders + ito + points, styles,
         x="total_flops", y="latent_mcc", xlog=True,
         xlabel="total FLOPs (training + test inference)", ylabel=ylabel)  # fmt: skip
    by_flops.set_title("(b) MCC vs FLOPs (SAE+ITO: final SAE + ITO)", fontsize=9)
    plots.styled_curves(by_iter, ito, styles, x="ito_iter", y="latent_mcc", xlog=True,
         xlabel="ITO iterations on the final SAE", ylabel=ylabel)  # fmt: skip
    by_iter.set_title("(c) SAE+ITO vs ITO iterations", fontsize=9)
    title = f"Known dictionary, {records[0]['distribution']} codes ({plots.runs_note(result)})"
    return {"known_dictionary": plots.finish_with_side_legend(figure, by_step, title)}


def _paper_cell(label, distribution):
    reference = (PAPER_ZIPF if distribution == "zipf" else PAPER).get(label)
    if not reference:
        return "-"
    mean, std, flops = reference
    text = f"{mean:.3f}" + (f"±{std:.3f}" if std is not None else "")
    text += f" @ {flops:.3g}" if flops else ""
    return text + PAPER_NOTE.get(label, "")


def summary(result):
    records = final_records(result["records"])
    distribution = records[0]["distribution"]
    rows = runner.ito_method_rows(records, [
        "latent_mcc", "training_flops", "inference_flops", "total_flops", "fit_seconds",
        "transform_seconds",
    ])  # fmt: skip
    for row in rows:
        row["paper"] = _paper_cell(row["method"], distribution)
    table = runner.format_table(
        rows, SUMMARY_COLUMNS,
        title=f"Known dictionary ({distribution} codes), final step "
        f"{max(r['step'] for r in records)}, {rows[0]['n']} seeds; SAE+ITO total FLOPs = "
        "SAE training + SAE and ITO inference",
    )  # fmt: skip
    return f"{table}\n{SUMMARY_NOTE.format(**result['settings'])}"


if __name__ == "__main__":
    runner.main("fig3_known_dictionary", __import__(__name__))
