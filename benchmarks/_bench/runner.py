"""Profiles, the command line, joblib sweeps, learning curves, and the results folder."""

import argparse
import contextlib
import hashlib
import importlib
import inspect
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .datasets import DISTRIBUTIONS
from .objective import fit_and_measure, measure
from .tables import format_table  # noqa: F401  (the experiments' runner.format_table)

PROFILES = ("smoke", "quick", "paper")
DEFAULT_RESULTS = Path(__file__).resolve().parents[1] / "results"


# ------------------------------------------------------------------------ sweeps
class UnitStore:
    """One result file per finished unit of work (one sweep job), so that an interrupted
    run continues where it stopped.

    A unit is keyed by the sweep function (its script's name and qualified name), every
    setting of its job and the library version, hashed to ``<directory>/<sha256>.json``; a
    file is reused only when its stored key is that key, so a unit computed with other
    settings is never taken for this one. Each file also holds the unit's wall time.
    ``computed``/``reused`` count the units of this run, ``seconds`` their compute time
    (the reused ones' from the run that computed them).
    """

    def __init__(self, directory, stored_only=False):
        self.directory = Path(directory)
        self.stored_only = stored_only  # run nothing: only the stored units come back
        self.computed = 0
        self.reused = 0
        self.seconds = 0.0

    def key(self, function, job):
        import sklearn_sparsegap

        source = Path(inspect.getsourcefile(function) or function.__module__).stem
        return {
            "function": f"{source}.{function.__qualname__}",
            "job": _jsonable(job),
            "sklearn_sparsegap": sklearn_sparsegap.__version__,
        }

    def path(self, key):
        text = json.dumps(key, sort_keys=True, default=repr)
        return self.directory / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"

    def load(self, key):
        """The stored unit for ``key`` (its ``result`` and ``seconds``), or None."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):  # a file cut short by the interruption: recompute
            return None
        if json.dumps(stored.get("key"), sort_keys=True) != json.dumps(
            json.loads(json.dumps(key, default=repr)), sort_keys=True
        ):
            return None
        return stored

    def summary(self):
        return {"computed": self.computed, "reused": self.reused,
                "unit_seconds": self.seconds}  # fmt: skip


_STORE = None  # the UnitStore of the running experiment (set by ``unit_store``)


@contextlib.contextmanager
def unit_store(directory, stored_only=False):
    """Within the block every :func:`sweep` reuses and writes units under ``directory``;
    with ``stored_only`` it runs nothing and returns the stored units only (the finished
    part of an unfinished run, in job order)."""
    global _STORE
    previous, _STORE = _STORE, UnitStore(directory, stored_only)
    try:
        yield _STORE
    finally:
        _STORE = previous


_DRY = None  # with ``dry_run``: the list that collects (function, jobs) of every sweep


@contextlib.contextmanager
def dry_run():
    """Within the block :func:`sweep` runs nothing: it records ``(function, jobs)`` into
    the list it yields and returns an empty result per job (an experiment's job list,
    e.g. to estimate a profile's cost before running it)."""
    global _DRY
    previous, _DRY = _DRY, []
    try:
        yield _DRY
    finally:
        _DRY = previous


def job_lists(module, settings, **run_params):
    """``[(function, jobs), ...]`` of every sweep ``module.run(settings)`` would run."""
    with dry_run() as sweeps:
        module.run(settings, n_jobs=1, progress=False, **run_params)
    return sweeps


def _run_unit(function, job, path=None, key=None):
    """``function(**job)``; with ``path``, written (atomically) as a unit file first and
    returned as read back (the JSON form the record will have). Returns (result, seconds)."""
    start = time.perf_counter()
    result = function(**job)
    seconds = time.perf_counter() - start
    if path is None:
        return result, seconds
    payload = json.dumps({"key": key, "seconds": seconds, "result": _jsonable(result)}, default=repr)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.part")
    partial.write_text(payload)
    os.replace(partial, path)
    return json.loads(payload)["result"], seconds


def sweep(function, jobs, *, n_jobs=1, progress=True, description="sweep"):
    """``[function(**job) for job in jobs]``, run through joblib.

    Every job seeds its own data and model, so the results do not depend on where or in
    which order they run: under ``joblib.parallel_config(backend="dask")`` the jobs spread
    over a dask cluster and return exactly what the sequential loop returns.

    Inside :func:`unit_store` each job is a unit of work: one already stored with the same
    settings is read back instead of run, and each job run is stored as soon as it ends.
    """
    jobs = list(jobs)
    if _DRY is not None:
        _DRY.append((function, jobs))
        return [[] for _ in jobs]
    store = _STORE
    results = [None] * len(jobs)
    todo = []  # (index, path, key) of the jobs to run
    for index, job in enumerate(jobs):
        if store is None:
            todo.append((index, None, None))
            continue
        key = store.key(function, job)
        stored = store.load(key)
        if stored is None:
            todo.append((index, store.path(key), key))
        else:
            results[index] = stored["result"]
            store.reused += 1
            store.seconds += stored["seconds"]
    if store is not None and store.stored_only:
        return [result for index, result in enumerate(results)
                if index not in {i for i, _, _ in todo}]  # fmt: skip
    if n_jobs == 1:
        outputs = (_run_unit(function, jobs[i], path, key) for i, path, key in todo)
    else:
        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
        outputs = parallel(delayed(_run_unit)(function, jobs[i], path, key) for i, path, key in todo)
    bar = tqdm(outputs, total=len(todo), desc=description, disable=not progress)
    for (index, _, _), (result, seconds) in zip(todo, bar):
        results[index] = result
        if store is not None:
            store.computed += 1
            store.seconds += seconds
    return results


def sweep_methods(function, methods, settings, *, n_jobs=1, progress=True,
                  description="sweep", **common):
    """:func:`sweep` of ``function`` over every method and seed: ``methods`` maps a label to
    ``(method, flavour, params)``, each job gets ``settings`` and the ``common`` keywords,
    and the records of all jobs come back as one list (method by method, seed by seed)."""
    jobs = [
        {"label": label, "method": m, "flavour": f, "params": p, "seed": seed,
         "settings": settings, **common}
        for label, (m, f, p) in methods.items()
        for seed in range(settings["seeds"])
    ]  # fmt: skip
    results = sweep(function, jobs, n_jobs=n_jobs, progress=progress, description=description)
    return [record for records in results for record in records]


def method_sweep(function, methods, description):
    """The ``run(settings, n_jobs, progress, distribution)`` of an experiment that is one
    :func:`sweep_methods` of ``function`` over ``methods(settings["widths"])``."""

    def run(settings, n_jobs=1, progress=True, distribution="halfnormal"):
        return sweep_methods(
            function, methods(settings["widths"]), settings, n_jobs=n_jobs, progress=progress,
            description=description, distribution=distribution,
        )  # fmt: skip

    return run


def present_mean(records, key):
    """The mean of ``key`` over the records that hold a value for it, or None."""
    values = [r[key] for r in records if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def checkpoints(total, n_points):
    """About ``n_points`` integer steps spaced geometrically up to ``total`` (included)."""
    points = np.unique(np.geomspace(1, total, n_points).round().astype(int))
    return [int(p) for p in points]


def learning_curve(
    estimator, task, steps, *, known_codes=False, evaluate=None, label=None, refinements=None
):
    """Test metrics after each number of training steps in ``steps`` (increasing).

    Estimators with ``warm_start`` train once, in segments; the others (the sparse
    coders) are refitted with ``max_iter=step``, which gives the same iterate because
    their training is deterministic and has no step-dependent schedule (with geometric
    ``steps`` that costs at most about twice the final fit). ``evaluate(estimator, task)``
    replaces :func:`~_bench.objective.measure` when given.

    Each record has ``step``, ``n_iter`` (iterations actually run), ``fit_seconds`` and the
    metrics; with ``label`` also ``method``. ``refinements`` maps a method name to
    ``refine(fitted, task) -> metrics`` (e.g. ITO on the SAE as it is at that step): each
    adds a record of its own per step, with the same step, n_iter and fit_seconds.
    """
    evaluate = evaluate or (lambda est, t: measure(est, t, known_codes=known_codes))
    records = []
    warm = "warm_start" in estimator.get_params()
    if warm:
        estimator.set_params(warm_start=True)
    done = 0
    fit_seconds = 0.0
    for step in steps:
        start = time.perf_counter()
        if warm:
            estimator.set_params(max_iter=step - done)
        else:
            estimator.set_params(max_iter=step)
        estimator.fit(task.X_train, task.codes_train if known_codes else None)
        elapsed = time.perf_counter() - start
        fit_seconds = fit_seconds + elapsed if warm else elapsed
        done = step
        at_step = {"step": step, "n_iter": int(estimator.n_iter_), "fit_seconds": fit_seconds}
        method = {} if label is None else {"method": label}
        records.append({**method, **evaluate(estimator, task), **at_step})
        for name, refine in (refinements or {}).items():
            records.append({"method": name, **refine(estimator, task), **at_step})
    return records


def last_checkpoints(records):
    """The records at each method's last training step."""
    last = {}
    for record in records:
        last[record["method"]] = max(last.get(record["method"], 0), record["step"])
    return [r for r in records if r["step"] == last[r["method"]]]


def run_method(method_builder, task, *, known_codes=False):
    """Fit the estimator ``method_builder()`` returns and measure it (a sweep job)."""
    return fit_and_measure(method_builder(), task, known_codes=known_codes)


# ------------------------------------------------------------------------ dataset variants
def accepts_distribution(module):
    """Whether the experiment's ``run`` takes the code ``distribution`` (a dataset
    parameter)."""
    return "distribution" in inspect.signature(module.run).parameters


class DatasetVariant:
    """Experiments rerun on another dataset: each part is an experiment script whose
    ``run`` takes ``distribution``; methods, settings and metrics stay those of the
    script, only the data change.

    Behaves like an experiment module (``PROFILES``, ``run``, ``figures``, ``summary``):
    the records carry a ``"part"`` key, the figures are prefixed with ``name``.
    ``quick_seeds`` caps the quick profile's seeds (one seed per part keeps it short).
    """

    def __init__(self, name, parts, *, distribution, title, quick_seeds=None):
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}.")
        self.name = name
        self.distribution = distribution
        self.title = title
        self.__doc__ = title
        self.parts = {part: importlib.import_module(module) for part, module in parts.items()}
        for module in self.parts.values():
            if not accepts_distribution(module):
                raise ValueError(f"{module.__name__}.run takes no distribution.")

        def quick(settings):
            if quick_seeds is None or "seeds" not in settings:
                return settings
            return {**settings, "seeds": min(settings["seeds"], quick_seeds)}

        self.PROFILES = {
            profile: {part: module.PROFILES[profile] for part, module in self.parts.items()}
            for profile in PROFILES
        }
        self.PROFILES["quick"] = {
            part: quick(settings) for part, settings in self.PROFILES["quick"].items()
        }

    def run(self, settings, n_jobs=1, progress=True):
        records = []
        for part, module in self.parts.items():
            part_records = module.run(
                settings[part], n_jobs=n_jobs, progress=progress, distribution=self.distribution
            )
            records += [{"part": part, **record} for record in part_records]
        return records

    def _part(self, result, part):
        records = [{k: v for k, v in r.items() if k != "part"} for r in result["records"]
                   if r["part"] == part]  # fmt: skip
        return {**result, "settings": result["settings"][part], "records": records}

    def figures(self, result):
        figures = {}
        for part, module in self.parts.items():
            for name, figure in module.figures(self._part(result, part)).items():
                figure.suptitle(f"{self.title}: {figure.get_suptitle() or name}")
                figures[f"{self.name}_{name}"] = figure
        return figures

    def summary(self, result):
        return "\n\n".join(
            module.summary(self._part(result, part)) for part, module in self.parts.items()
        )


# ------------------------------------------------------------------------ output
def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def environment():
    """Versions and machine, stored beside every result."""
    import sklearn
    import torch

    import sklearn_sparsegap

    return {
        "sklearn_sparsegap": sklearn_sparsegap.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def save(result, figures, out_dir):
    """Write ``result.json`` and one PNG per figure into ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "result.json"]
    paths[0].write_text(json.dumps(_jsonable(result), indent=1) + "\n")
    for name, figure in figures.items():
        path = out_dir / f"{name}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        paths.append(path)
    return paths


def group_means(records, by, keys, *, keyed=False):
    """Group ``records`` by the values of the keys ``by``; per group, the mean and std of
    each of ``keys``, as rows ``{by..., key: mean, key_std: std, ..., "n": count}`` in
    first-seen order (with ``keyed``, a dict of those rows keyed by the tuple of ``by``
    values)."""
    groups = {}
    for record in records:
        groups.setdefault(tuple(record[b] for b in by), []).append(record)
    rows = []
    for group, members in groups.items():
        row = dict(zip(by, group))
        for key in keys:
            values = np.asarray([r[key] for r in members], dtype=float)
            row[key], row[f"{key}_std"] = float(values.mean()), float(values.std())
        rows.append({**row, "n": len(members)})
    if keyed:
        return {tuple(row[b] for b in by): row for row in rows}
    return rows


def ito_method_rows(records, keys):
    """Per method, :func:`group_means` of ``keys`` and ``kept``: the mean fraction of test
    samples whose ITO codes were kept (None for a method without ITO)."""
    rows = group_means(records, ["method"], keys)
    for row in rows:
        group = [r for r in records if r["method"] == row["method"]]
        row["kept"] = present_mean(group, "ito_kept_fraction")
    return rows


def mean_std(records, key, by):
    """:func:`group_means` of the single ``key``."""
    return group_means(records, by, [key])


# ------------------------------------------------------------------------ entry point
def parse_args(description, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--profile", choices=PROFILES, default="quick",
        help="quick: a few minutes on 2 CPU cores (fewer seeds, steps and grid points, "
        "same code path); paper: the paper's settings; smoke: a tiny run for the tests.",
    )  # fmt: skip
    parser.add_argument("--n-jobs", type=int, default=1, help="joblib workers for sweeps.")
    parser.add_argument(
        "--out", type=Path, default=None,
        help=f"results folder (default {DEFAULT_RESULTS}/<experiment>).",
    )  # fmt: skip
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars.")
    parser.add_argument(
        "--distribution", choices=DISTRIBUTIONS, default=None,
        help="code distribution of the generator (default: the experiment's own; only "
        "for experiments whose data take one).",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action=argparse.BooleanOptionalAction, default=None,
        help="keep one result file per finished unit of work (sweep job) in <out>/units and "
        "reuse those whose settings match, so an interrupted run continues where it stopped "
        "(default: on for the paper profile, off otherwise).",
    )  # fmt: skip
    parser.add_argument(
        "--device", default=None,
        help="torch device for every estimator (cpu, cuda, auto); only for experiments "
        "whose run takes one (large_scale).",
    )  # fmt: skip
    return parser.parse_args(argv)


def accepts(module, parameter):
    """Whether the experiment's ``run`` takes ``parameter``."""
    return parameter in inspect.signature(module.run).parameters


UNITS = "units"  # the folder of unit files inside an experiment's results folder


def main(name, module, argv=None):
    """Run experiment ``module`` (its PROFILES, run, figures, summary) from the command line.

    Returns the result dict (also written as JSON with the figures).
    """
    args = parse_args((module.__doc__ or name).strip().splitlines()[0], argv)
    settings = module.PROFILES[args.profile]
    out_dir = args.out or DEFAULT_RESULTS / name
    warnings.filterwarnings("ignore", module="sklearn")  # ConvergenceWarnings of LARS/lasso
    start = time.perf_counter()
    run_params = {}
    if args.distribution is not None:
        if not accepts_distribution(module):
            raise SystemExit(f"{name}: --distribution is not a parameter of this experiment.")
        run_params["distribution"] = args.distribution
    if args.device is not None:
        if not accepts(module, "device"):
            raise SystemExit(f"{name}: --device is not a parameter of this experiment.")
        run_params["device"] = args.device
    resume = args.profile == "paper" if args.resume is None else args.resume
    store = unit_store(out_dir / UNITS) if resume else contextlib.nullcontext()
    with store as units:
        records = module.run(settings, n_jobs=args.n_jobs, progress=not args.quiet, **run_params)
    seconds = time.perf_counter() - start
    result = {
        "experiment": name,
        "profile": args.profile,
        "settings": settings,
        **run_params,
        "seconds": seconds,
        **({"units": units.summary()} if units is not None else {}),
        "environment": environment(),
        "records": records,
    }
    figures = {}
    if not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")
        figures = module.figures(result)
    paths = save(result, figures, out_dir)
    print(module.summary(result))
    reused = f" ({units.reused} of {units.reused + units.computed} units reused)" if units else ""
    print(f"\n{name} ({args.profile} profile): {seconds:.1f} s{reused}; wrote {len(paths)} files to {out_dir}")
    if figures:
        import matplotlib.pyplot as plt

        plt.close("all")
    sys.stdout.flush()
    return result
