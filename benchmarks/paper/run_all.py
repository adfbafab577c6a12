"""Every paper experiment in one run, with one profile; writes each experiment's results
folder under ``--out`` and ``run_all.json`` with the per-experiment and total wall times.

    python benchmarks/paper/run_all.py --profile quick --out docs/results
    python benchmarks/paper/run_all.py --profile quick --only zipf --out docs/results

Each experiment is a script (``benchmarks/paper/<name>.py``, also runnable alone) or a dataset
variant: experiments rerun on another code distribution of the generator (``zipf``:
Figs. 2-4 on the paper's App. D Zipf codes, one seed per part in the quick profile).
"""

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench import runner

DOCS_RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"  # the quick runs
# Dataset variants: name -> (parts: record key -> experiment script, distribution, title).
VARIANTS = {
    "zipf": (
        {
            "known_codes": "fig2_known_codes",
            "known_dictionary": "fig3_known_dictionary",
            "unknown_dictionary": "fig4_unknown_dictionary",
        },
        "zipf",
        "Zipf codes",
    ),
}
# In the order of the paper.
EXPERIMENTS = (
    "fig2_known_codes",
    "fig3_known_dictionary",
    "fig4_unknown_dictionary",
    "fig5_regimes",
    "fig6_pareto",
    "topk",
    "zipf",
    "large_scale",
    "decoder_analysis",
    "ablations",
    "lars_grid",
)


def experiment(name):
    """The experiment ``name``: its script's module, or a :class:`runner.DatasetVariant`."""
    if name in VARIANTS:
        parts, distribution, title = VARIANTS[name]
        return runner.DatasetVariant(
            name, parts, distribution=distribution, title=title, quick_seeds=1
        )
    return importlib.import_module(name)


def _step_scale(settings):
    """The largest training length (any ``*steps*``/``*epochs*``/``*_iter`` setting) of a
    profile, times its sample count where it has one: a rough per-job work measure."""
    values = []

    def walk(value, key=""):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}")  # nested: "steps.sae" counts as a step setting
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and (
            "step" in key or "epoch" in key or key.endswith("_iter")
        ):
            values.append(value)

    walk(settings)
    return max(values, default=1) * settings.get("n_train", 1) if isinstance(settings, dict) else 1


def estimate(name, reference=runner.DEFAULT_RESULTS, measured=None, profile="paper"):
    """The estimated wall time of ``name``'s ``profile`` on this machine, from its job list.

    With unit files of a run of that profile under ``measured/<name>/units`` (the resumable
    runs write them), the mean measured seconds per finished unit times the number of
    units; otherwise the quick profile's recorded wall time (``reference/<name>/result.json``)
    scaled by the ratio of job counts and of training lengths (``_step_scale``): rough.
    Returns a dict (jobs, done, seconds, basis)."""
    module = experiment(name)
    sweeps = runner.job_lists(module, module.PROFILES[profile])
    paper_jobs = sum(len(jobs) for _, jobs in sweeps)
    store = runner.UnitStore(Path(measured) / name / runner.UNITS) if measured else None
    measured_units = []  # (job, seconds or None) for every job of the profile
    for function, jobs in sweeps:
        for job in jobs:
            stored = store.load(store.key(function, job)) if store else None
            measured_units.append((job, None if stored is None else stored["seconds"]))
    done = [(job, seconds) for job, seconds in measured_units if seconds is not None]
    if done:
        # A job not yet run costs what the finished jobs of its method (label) cost, on
        # average, else the mean of all finished jobs.
        mean = sum(seconds for _, seconds in done) / len(done)
        by_label = {}
        for job, seconds in done:
            by_label.setdefault(job.get("label"), []).append(seconds)
        remaining = sum(
            (sum(by_label[job.get("label")]) / len(by_label[job.get("label")]))
            if job.get("label") in by_label else mean
            for job, seconds in measured_units if seconds is None
        )
        spent = sum(seconds for _, seconds in done)
        return {"jobs": paper_jobs, "done": len(done), "seconds": spent + remaining,
                "remaining": remaining,
                "basis": f"{len(done)} units measured here ({spent / 60:.0f} min), the "
                         f"others at their method's measured mean (else {mean:.0f} s)"}  # fmt: skip
    quick = module.PROFILES["quick"]
    quick_jobs = sum(len(jobs) for _, jobs in runner.job_lists(module, quick))
    stored = next((Path(folder) / name / "result.json" for folder in (reference, DOCS_RESULTS)
                   if (Path(folder) / name / "result.json").exists()), None)  # fmt: skip
    if stored is None:
        return {"jobs": paper_jobs, "done": 0, "seconds": None, "remaining": None,
                "basis": "no quick run recorded"}  # fmt: skip
    quick_seconds = json.loads(stored.read_text())["seconds"]
    parts = module.PROFILES[profile]
    if name in VARIANTS:  # a dataset variant: per part
        ratio = sum(_step_scale(parts[p]) for p in parts) / sum(_step_scale(quick[p]) for p in quick)
    else:
        ratio = _step_scale(parts) / _step_scale(quick)
    seconds = quick_seconds * paper_jobs / max(quick_jobs, 1) * ratio
    return {"jobs": paper_jobs, "done": 0, "seconds": seconds, "remaining": seconds,
            "basis": f"quick run {quick_seconds:.0f} s x {paper_jobs}/{quick_jobs} jobs "
                     f"x {ratio:.3g} training length"}  # fmt: skip


def print_estimates(names, measured=None, profile="paper"):
    rows = []
    for name in names:
        guess = estimate(name, measured=measured, profile=profile)
        minutes = None if guess["seconds"] is None else guess["seconds"] / 60
        rows.append({"experiment": name, "units": guess["jobs"], "done": guess["done"],
                     "minutes": minutes, "basis": guess["basis"]})  # fmt: skip
    print(runner.format_table(rows, ["experiment", "units", "done", "minutes", "basis"],
                              title=f"{profile} profile: estimated wall time on this machine"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=runner.PROFILES, default="quick")
    parser.add_argument("--out", type=Path, default=runner.DEFAULT_RESULTS)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=EXPERIMENTS)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures.")
    parser.add_argument(
        "--resume", action=argparse.BooleanOptionalAction, default=None,
        help="one result file per finished unit of work under <out>/<experiment>/units, "
        "reused on a rerun when its settings match (default: on for the paper profile).",
    )  # fmt: skip
    parser.add_argument(
        "--estimate", action="store_true",
        help="print each experiment's number of units and estimated wall time, run nothing "
        "(from the units already under --out where there are some, else from the quick "
        "run recorded in benchmarks/results or docs/results).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.estimate:
        print_estimates(args.only, measured=args.out, profile=args.profile)
        return
    seconds = {}
    start = time.perf_counter()
    for name in args.only:
        print(f"\n=== {name} ===", flush=True)
        began = time.perf_counter()
        options = ["--profile", args.profile, "--out", str(args.out / name),
                   "--n-jobs", str(args.n_jobs), "--quiet"]  # fmt: skip
        if args.resume is not None:
            options.append("--resume" if args.resume else "--no-resume")
        runner.main(name, experiment(name), options + (["--no-plots"] if args.no_plots else []))
        seconds[name] = time.perf_counter() - began
    total = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"profile": args.profile, "seconds": seconds, "total_seconds": total,
               "environment": runner.environment()}  # fmt: skip
    (args.out / "run_all.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n" + runner.format_table(
        [{"experiment": k, "seconds": v} for k, v in seconds.items()],
        ["experiment", "seconds"], title=f"{args.profile} profile: {total:.0f} s in all",
    ))  # fmt: skip


if __name__ == "__main__":
    main()
