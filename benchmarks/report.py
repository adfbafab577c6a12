"""Build ``docs/results.md`` from its template and the stored quick-profile results.

Every ``{{summary:<experiment>}}`` marker in ``docs/results_template.md`` becomes that
experiment's printed summary table, recomputed from ``docs/results/<experiment>/result.json``
(so the tables in the docs are exactly what the run produced); ``{{times}}`` becomes the
per-experiment wall times from ``docs/results/run_all.json``.

    python benchmarks/run_all.py --profile quick --out docs/results
    python benchmarks/report.py
"""

import importlib
import json
import re
from pathlib import Path

from _bench import runner
from run_all import EXPERIMENTS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _summary(name, results):
    path = results / name / "result.json"
    if not path.exists():
        return f"(no results yet: run `python benchmarks/{name}.py --profile quick --out docs/results/{name}`)"
    result = json.loads(path.read_text())
    header = f"{result['profile']} profile, {result['seconds']:.0f} s, torch {result['environment']['torch']}"
    return f"```text\n{importlib.import_module(name).summary(result)}\n```\n_{header}._"


def _times(results):
    path = results / "run_all.json"
    rows = []
    if path.exists():
        stored = json.loads(path.read_text())
        rows = [{"experiment": k, "seconds": v} for k, v in stored["seconds"].items()]
        title = f"{stored['profile']} profile, one run: {stored['total_seconds'] / 60:.1f} min in all"
    else:
        for name in EXPERIMENTS:
            file = results / name / "result.json"
            if file.exists():
                rows.append({"experiment": name, "seconds": json.loads(file.read_text())["seconds"]})
        title = f"sum of separate runs: {sum(r['seconds'] for r in rows) / 60:.1f} min"
    return "```text\n" + runner.format_table(rows, ["experiment", "seconds"], title=title) + "\n```"


def build(template=DOCS / "results_template.md", results=DOCS / "results", out=DOCS / "results.md"):
    text = template.read_text()
    text = re.sub(r"\{\{summary:(\w+)\}\}", lambda m: _summary(m.group(1), results), text)
    text = text.replace("{{times}}", _times(results))
    out.write_text(text)
    return out


if __name__ == "__main__":
    print(f"wrote {build()}")
