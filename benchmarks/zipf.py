"""App. D — Zipf-distributed codes: the known-codes, known-dictionary and unknown-dictionary
experiments (Figs. 2–4) rerun on the paper's Zipf generator.

Support drawn with probability w_i ∝ i^-1 and magnitudes |N(0,1)|·(w_i + 0.1), as in the
authors' branch (protocol §11; the paper text omits the magnitude scaling). Each part is
the corresponding figure's own ``run`` with ``distribution="zipf"``, so methods, settings
and metrics are identical to the halfnormal runs; the quick profile uses one seed per part.

    python benchmarks/zipf.py --profile quick
"""

import fig2_known_codes
import fig3_known_dictionary
import fig4_unknown_dictionary
from _bench import runner

PARTS = {
    "known_codes": fig2_known_codes,
    "known_dictionary": fig3_known_dictionary,
    "unknown_dictionary": fig4_unknown_dictionary,
}


def _one_seed(settings):
    return {**settings, "seeds": 1} if "seeds" in settings else settings


PROFILES = {
    "smoke": {part: module.PROFILES["smoke"] for part, module in PARTS.items()},
    "quick": {part: _one_seed(module.PROFILES["quick"]) for part, module in PARTS.items()},
    "paper": {part: module.PROFILES["paper"] for part, module in PARTS.items()},
}


def run(settings, n_jobs=1, progress=True):
    records = []
    for part, module in PARTS.items():
        part_records = module.run(settings[part], n_jobs=n_jobs, progress=progress, distribution="zipf")
        records += [{"part": part, **record} for record in part_records]
    return records


def _part(result, part):
    records = [{k: v for k, v in r.items() if k != "part"} for r in result["records"] if r["part"] == part]
    return {**result, "settings": result["settings"][part], "records": records}


def figures(result):
    figures = {}
    for part, module in PARTS.items():
        for name, figure in module.figures(_part(result, part)).items():
            figure.suptitle(f"Zipf codes: {figure.get_suptitle() or name}")
            figures[f"zipf_{name}"] = figure
    return figures


def summary(result):
    return "\n\n".join(module.summary(_part(result, part)) for part, module in PARTS.items())


if __name__ == "__main__":
    runner.main("zipf", __import__(__name__))
