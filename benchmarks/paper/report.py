"""Build ``docs/results.md`` from its template and the stored quick-profile results.

Every ``{{summary:<experiment>}}`` marker in ``docs/results_template.md`` becomes that
experiment's printed summary table, recomputed from ``docs/results/<experiment>/result.json``
(so the tables in the docs are exactly what the run produced); ``{{times}}`` becomes the
per-experiment wall times recorded in each experiment's ``result.json`` (its latest run).

    python benchmarks/paper/run_all.py --profile quick --out docs/results
    python benchmarks/paper/report.py

Every ``{{paper:<experiment>}}`` marker becomes that experiment's paper-profile section:
its summary from ``docs/results/paper/<experiment>/result.json`` where the paper profile
finished on this machine, else that it was not run here, its estimated cost
(``docs/results/paper/estimates.json``) and the command; ``{{paper_times}}`` the table of
all of them. ``--collect RESULTS_DIR`` first copies the finished paper-profile records of a
``run_all.py --profile paper --out RESULTS_DIR`` run (possibly still going) into
``docs/results/paper`` and writes the estimates from the units measured there.

    python benchmarks/paper/report.py --collect RESULTS_DIR

With ``--figures`` it also redraws every experiment's PNG figures from its stored
``result.json`` (no re-run: the figures are functions of the recorded numbers).
"""

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench import runner
from run_all import EXPERIMENTS, estimate, experiment

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAPER = "paper"  # docs/results/paper/<experiment>/: the paper-profile records
ESTIMATES = "estimates.json"  # docs/results/paper/estimates.json: per-unit timings, costs
# The command that runs (and, rerun, resumes) one experiment at the paper's settings.
PAPER_COMMAND = ("nice -n 19 python benchmarks/paper/run_all.py --profile paper --n-jobs 1 "
                 "--only {name} --out RESULTS_DIR")


def _summary(name, results):
    path = results / name / "result.json"
    if not path.exists():
        return (f"(no results yet: run `python benchmarks/paper/run_all.py --profile quick --only {name} "
                "--out docs/results`)")
    result = json.loads(path.read_text())
    header = f"{result['profile']} profile, {result['seconds']:.0f} s, torch {result['environment']['torch']}"
    return f"```text\n{experiment(name).summary(result)}\n```\n_{header}._"


def _times(results):
    """Each experiment's wall time from its own ``result.json`` (its latest run, whether
    from ``run_all.py`` or re-run alone)."""
    rows, profiles = [], set()
    for name in EXPERIMENTS:
        file = results / name / "result.json"
        if file.exists():
            stored = json.loads(file.read_text())
            rows.append({"experiment": name, "seconds": stored["seconds"]})
            profiles.add(stored["profile"])
    total = sum(r["seconds"] for r in rows) / 60
    title = f"{'/'.join(sorted(profiles))} profile, latest run of each experiment: {total:.1f} min in all"
    return "```text\n" + runner.format_table(rows, ["experiment", "seconds"], title=title) + "\n```"


def _minutes(seconds):
    return "-" if seconds is None else f"{seconds / 60:.0f} min"


# Per experiment: (the script's table of the authors' numbers, [(our key, index of the
# authors' value in that table's tuples, label)]) for the difference table of a paper run.
DIFFERENCES = {
    "fig2_known_codes": ("PAPER", [("matched_corr", 0, "MCC")]),
    "fig3_known_dictionary": ("PAPER", [("latent_mcc", 0, "MCC")]),
    "fig4_unknown_dictionary": ("PAPER", [("latent_mcc", 0, "latent MCC"),
                                          ("dictionary_mcc_greedy", 2, "dict MCC")]),
}  # fmt: skip


def _differences(name, result):
    """Ours (final seed mean ± std) minus the authors' per method, where the script
    records the authors' value for that method: a text table, or ''."""
    if name not in DIFFERENCES:
        return ""
    module = experiment(name)
    table, keys = DIFFERENCES[name]
    authors = getattr(module, table)
    records = module.final_records(result["records"])
    rows = []
    for label in dict.fromkeys(r["method"] for r in records):
        if label not in authors:
            continue
        group = [r for r in records if r["method"] == label]
        row = {"method": label, "seeds": len(group)}
        for key, index, title in keys:
            values = [r[key] for r in group if r.get(key) is not None]
            theirs = authors[label][index]
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
            row[f"ours {title}"] = f"{mean:.3f}±{std:.3f}"
            row[f"authors {title}"] = f"{theirs:.3f}"
            row[f"diff {title}"] = f"{mean - theirs:+.3f}"
        rows.append(row)
    if not rows:
        return ""
    columns = ["method", "seeds"] + [f"{side} {title}" for _, _, title in keys
                                     for side in ("ours", "authors", "diff")]  # fmt: skip
    return runner.format_table(rows, columns, title="ours - authors, final step (same settings)")


def _paper(name, results):
    """The paper-profile section of ``name``: its summary (ours beside the authors') with
    seeds and wall time where the paper profile finished here, else that it was not run,
    its estimated cost and the command."""
    path = results / PAPER / name / "result.json"
    command = PAPER_COMMAND.format(name=name)
    if path.exists():
        result = json.loads(path.read_text())
        units = result.get("units") or {}
        compute = units.get("unit_seconds")
        header = (
            f"paper profile, run here: {_minutes(result['seconds'])} wall time for the last "
            f"(resumed) run, {_minutes(compute)} of compute summed over its "
            f"{units.get('computed', 0) + units.get('reused', 0)} units, on 2 CPU cores shared with "
            f"other jobs at nice 19, torch {result['environment']['torch']}"
        )
        difference = _differences(name, result)
        difference = f"\n\n{difference}" if difference else ""
        return f"```text\n{experiment(name).summary(result)}{difference}\n```\n_{header}._"
    stored = results / PAPER / ESTIMATES
    guess = json.loads(stored.read_text())["experiments"].get(name) if stored.exists() else None
    lines = ["**Not run at paper settings here** (it did not fit in this session's time on "
             "this machine)."]
    partial = results / PAPER / name / PARTIAL
    if partial.exists():
        record = json.loads(partial.read_text())
        units = record["units"]
        finished = ", ".join(units["finished"])
        lines.append(
            f"Only {units['reused']} of its {units['jobs']} units finished here ({finished}; "
            f"{_minutes(record['seconds'])} of compute); the table is those units alone, "
            "at the paper's settings, not the experiment:\n"
        )
        difference = _differences(name, record)
        difference = f"\n\n{difference}" if difference else ""
        lines.append(f"```text\n{experiment(name).summary(record)}{difference}\n```\n")
    if guess:
        lines.append(
            f"{guess['jobs']} units; {guess['done']} finished here before the session ended. "
            f"Estimated cost on this machine: {_minutes(guess['seconds'])} "
            f"({guess['basis']})."
        )
    lines.append(f"Run (or resume) it with\n\n```bash\n{command}\n```")
    return "\n".join(lines)


def _paper_times(results):
    """One row per experiment: paper profile run here or not, units, wall time/estimate."""
    stored = results / PAPER / ESTIMATES
    estimates = json.loads(stored.read_text()) if stored.exists() else {"experiments": {}}
    rows = []
    for name in EXPERIMENTS:
        path = results / PAPER / name / "result.json"
        guess = estimates["experiments"].get(name, {})
        if path.exists():
            result = json.loads(path.read_text())
            units = result.get("units") or {}
            rows.append({"experiment": name, "paper profile": "run here",
                         "units": units.get("computed", 0) + units.get("reused", 0),
                         "minutes": (units.get("unit_seconds") or result["seconds"]) / 60})
        else:
            done = guess.get("done", 0)
            rows.append({"experiment": name, "paper profile": "not run" if not done else "partial",
                         "units": f"{done}/{guess.get('jobs', '?')}",
                         "minutes": guess["seconds"] / 60 if guess.get("seconds") else None})
    table = runner.format_table(
        rows, ["experiment", "paper profile", "units", "minutes"],
        title="paper profile on this machine: measured compute where run, else estimated",
    )  # fmt: skip
    return "```text\n" + table + "\n```"


PARTIAL = "partial.json"  # the finished units of an unfinished paper run, as a record


def partial_record(name, source, profile="paper"):
    """The record of the units of ``name`` finished under ``source`` (its run not done):
    the experiment's ``run`` with only the stored units (nothing computed), the settings of
    the profile, and ``units`` (how many of how many, their summed compute seconds)."""
    module = experiment(name)
    settings = module.PROFILES[profile]
    with runner.unit_store(Path(source) / name / runner.UNITS, stored_only=True) as store:
        records = module.run(settings, n_jobs=1, progress=False)
    sweeps = runner.job_lists(module, settings)
    jobs = sum(len(jobs) for _, jobs in sweeps)
    finished = [
        f"{job.get('label') or job.get('method')} seed {job.get('seed')}"
        for function, group in sweeps for job in group
        if store.load(store.key(function, job)) is not None
    ]  # fmt: skip
    return {"experiment": name, "profile": profile, "settings": settings, "partial": True,
            "seconds": store.seconds,
            "units": {**store.summary(), "jobs": jobs, "finished": finished},
            "environment": runner.environment(), "records": records}  # fmt: skip


def _newly_computed(finished, kept, profile):
    """Whether the record ``finished`` should replace the one kept in ``kept``: it is of
    ``profile`` and either nothing is kept yet or its run computed units (a resumed run
    that only reused every unit would replace the measured wall time with seconds)."""
    record = json.loads(finished.read_text())
    if record["profile"] != profile:
        return False
    computed = record.get("units", {}).get("computed")
    return not (kept / "result.json").exists() or computed != 0


def collect(source, results=DOCS / "results", profile="paper"):
    """Copy the finished paper-profile records (``result.json`` and figures) of a run
    folder ``source`` (``run_all.py --profile paper --out SOURCE``) into
    ``results/paper/<experiment>/``, and write ``results/paper/estimates.json``: per
    experiment its units, how many finished in ``source`` and the estimated cost on this
    machine. Experiments with measured units are estimated from them; the others from the
    quick run, scaled by the slowdown the measured ones showed against that same quick
    estimate (the machine's load at the time). No path of ``source`` is recorded."""
    source = Path(source)
    target = results / PAPER
    experiments, slowdowns = {}, []
    for name in EXPERIMENTS:
        finished = source / name / "result.json"
        if finished.exists() and _newly_computed(finished, target / name, profile):
            (target / name).mkdir(parents=True, exist_ok=True)
            for file in [finished, *sorted((source / name).glob("*.png"))]:
                shutil.copy(file, target / name / file.name)
        partial = target / name / PARTIAL
        if partial.exists():
            partial.unlink()
        measured = estimate(name, measured=source, profile=profile)
        if measured["done"] and not finished.exists():
            record = partial_record(name, source, profile)
            (target / name).mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(runner._jsonable(record), indent=1) + "\n")
        if measured["done"]:
            quick = estimate(name, profile=profile)
            if quick["seconds"]:
                slowdown = measured["seconds"] / quick["seconds"]
                slowdowns.append(slowdown)
                measured["basis"] += f"; {slowdown:.1f}x the estimate from the quick run"
        experiments[name] = measured
    slowdowns.sort()
    # Their geometric mean: the quick-run scaling misses different costs per experiment.
    factor = float(np.exp(np.mean(np.log(slowdowns)))) if slowdowns else 1.0
    spread = f"{slowdowns[0]:.0f}-{slowdowns[-1]:.0f}x" if slowdowns else "none measured"
    for name, guess in experiments.items():
        if not guess["done"] and guess["seconds"] is not None:
            guess["seconds"] *= factor
            guess["remaining"] = guess["seconds"]
            guess["basis"] += (f", x {factor:.0f} (the geometric mean of the slowdowns measured "
                               f"here against this scaling: {spread} over the experiments with "
                               "units; read it as a range)")
    target.mkdir(parents=True, exist_ok=True)
    record = {"experiments": experiments, "load_average": list(os.getloadavg()),
              "environment": runner.environment()}  # fmt: skip
    (target / ESTIMATES).write_text(json.dumps(runner._jsonable(record), indent=1) + "\n")
    return record


def build(template=DOCS / "results_template.md", results=DOCS / "results", out=DOCS / "results.md"):
    text = template.read_text()
    text = re.sub(r"\{\{summary:(\w+)\}\}", lambda m: _summary(m.group(1), results), text)
    text = re.sub(r"\{\{paper:(\w+)\}\}", lambda m: _paper(m.group(1), results), text)
    text = text.replace("{{paper_times}}", _paper_times(results))
    text = text.replace("{{times}}", _times(results))
    out.write_text(text)
    return out


def redraw(results=DOCS / "results"):
    """Redraw each experiment's figures from its ``result.json``; return the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name in EXPERIMENTS:
        file = results / name / "result.json"
        if not file.exists():
            continue
        figures = experiment(name).figures(json.loads(file.read_text()))
        for figure_name, figure in figures.items():
            path = results / name / f"{figure_name}.png"
            figure.savefig(path, dpi=110, bbox_inches="tight")
            paths.append(path)
        plt.close("all")
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", action="store_true", help="also redraw the figures.")
    parser.add_argument(
        "--collect", type=Path, default=None, metavar="RESULTS_DIR",
        help="first copy the finished paper-profile records of RESULTS_DIR (run_all.py "
        "--profile paper --out RESULTS_DIR) into docs/results/paper and estimate the rest.",
    )  # fmt: skip
    args = parser.parse_args()
    if args.collect is not None:
        collected = collect(args.collect)
        print(json.dumps(collected["experiments"], indent=1))
    if args.figures:
        print(f"redrew {len(redraw())} figures")
    print(f"wrote {build()}")
