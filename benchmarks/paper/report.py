"""Build ``docs/results.md`` from its template and the stored quick-profile results.

Every ``{{summary:<experiment>}}`` marker in ``docs/results_template.md`` becomes that
experiment's printed summary table, recomputed from ``docs/results/<experiment>/result.json``
(so the tables in the docs are exactly what the run produced); ``{{times}}`` becomes the
per-experiment wall times recorded in each experiment's ``result.json`` (its latest run).

    python benchmarks/paper/run_all.py --profile quick --out docs/results
    python benchmarks/paper/report.py

With ``--figures`` it also redraws every experiment's PNG figures from its stored
``result.json`` (no re-run: the figures are functions of the recorded numbers).
"""

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench import runner
from run_all import EXPERIMENTS, experiment

DOCS = Path(__file__).resolve().parents[2] / "docs"


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


def build(template=DOCS / "results_template.md", results=DOCS / "results", out=DOCS / "results.md"):
    text = template.read_text()
    text = re.sub(r"\{\{summary:(\w+)\}\}", lambda m: _summary(m.group(1), results), text)
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
    if parser.parse_args().figures:
        print(f"redrew {len(redraw())} figures")
    print(f"wrote {build()}")
