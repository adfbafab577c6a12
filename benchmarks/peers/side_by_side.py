"""Peers at their best, side by side (issues 27 and 28): on the same split of real
activations, at the same width, k, batch and tokens, every library trained (a) at its
own defaults and (b) tuned the same way, ours included.

Families and libraries:

- ``topk`` (k latents per row): our ``SAEEncoder(activation="topk")``, SAELens's
  ``TopKTrainingSAE`` (``_bench/saelens.py``), sparsify's and dictionary_learning's TopK
  trainers (``_bench/peer_saes.py``);
- ``batchtopk``, ``matryoshka`` (BatchTopK with nested widths ``--matryoshka-fractions``
  of the full one) and ``gated`` (over a penalty grid): our ``SAEEncoder``, SAELens's
  training SAEs of those architectures and dictionary_learning's ``BatchTopKTrainer``,
  ``MatryoshkaBatchTopKTrainer`` and ``GatedSAETrainer`` (its ``l1_penalty`` twice our
  ``alpha``: the same objective); the BatchTopK families encode at inference with their
  learned thresholds (SAELens's saved inference SAE, dictionary_learning's
  ``encode``);
- ``transcoder`` (TopK, ``--train-y``/``--test-y`` the targets of the same tokens, e.g.
  an MLP block's output for its input): our ``SAETranscoder`` and sparsify's
  ``transcode=True`` (input and output of one width); FVU on the targets. SAELens 6.54
  has transcoders for inference only, no training SAE;
- ``l1`` (ReLU + L1, over a penalty grid covering L0 16-128): our
  ``SAEEncoder(activation="relu")`` and SAELens's ``StandardTrainingSAE``;
- ``coding`` (iterative inference, k atoms): our minibatch ``GradientSparseCoder`` (OMP
  codes), scikit-learn's ``MiniBatchDictionaryLearning`` (OMP transform) and SAELens's
  ``MatchingPursuitTrainingSAE`` (matching pursuit inside training, at most k atoms).

Settings:

- (a) ``defaults``: each library's own batch size, learning rate and start (SAELens's
  decoder bias at zero and 1,000-step dead window; sparsify's and dictionary_learning's
  1,000 warm-up steps and 10^7-token dead threshold; dictionary_learning refuses a run
  shorter than its warm-up: that refusal is recorded and the unit rerun with the warm-up
  of (b)). Our ``learning_rate=None``.
- (b) ``tuned``: one batch size for all (``--batch``); each library's learning rate
  swept over ``--lr-factors`` times its own default, the same factors for everyone; what
  a careful user changes on a short run: SAELens's decoder bias at the training mean and
  its dead window one epoch, an L1 warm-up over 5% of the steps
  (``SAELensSAE.tuned``); sparsify's and dictionary_learning's warm-up 5% of the steps,
  dead threshold one epoch of rows, sparsify's AuxK on (1/32, dictionary_learning's
  weight), dictionary_learning's BatchTopK threshold estimated from 5% of the steps
  (1,000 by default) and its gated penalty warmed up over 5% (2,000 by default). The
  penalised families sweep the rate at the middle penalty and run the other penalties
  at the best factor.

``--ours-clip 1.0`` also runs our SAEs with ``max_grad_norm=1.0`` (library
``ours-clip``): dictionary_learning's and SAELens's trainers clip gradients at that norm,
and it accounts for most of their lead at one learning rate (``grad_clip.py``).

Every fit is a unit (family, library, setting, learning-rate factor, penalty, seed,
epochs), written to ``OUT/units/<key>.json`` when it ends: a run resumes where it
stopped, and runs in several sessions add up. Measured on the held-out rows: FVU,
mean L0, dead (never active) and dense (active on > 10% of rows) latent fractions;
training rows per second (wall time of the fit). ``--record`` writes the summary: mean
and standard deviation over seeds, the best factor of each library, tables (a) and (b).

Data: ``--train`` and ``--test`` are activation stores (``extract_activations``) or
``.npy`` files; a store's attention sinks are left out (``usable_rows``). Run in the
peers environment (``pip install -e ".[benchmark]"``)::

    python benchmarks/peers/side_by_side.py --train TRAIN_DIR --test TEST_DIR \\
        --out RESULTS_DIR --name smollm2-l15 --seeds 0,1,2 --epochs 1,4 \\
        --record docs/results/side_by_side/smollm2-l15.json
"""

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import threadpoolctl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.memory import peak_rss_mb  # noqa: E402
from _bench.paths import recorded_path, recorded_threadpools  # noqa: E402
from _bench.tables import format_table, with_std  # noqa: E402

from sklearn_sparsegap import GradientSparseCoder, SAEEncoder, SAETranscoder  # noqa: E402
from sklearn_sparsegap.activations import (  # noqa: E402
    fraction_variance_unexplained,
    load_activations,
)
from sklearn_sparsegap.activations._rows import row_norms, usable_rows  # noqa: E402

LIBRARIES = {
    "topk": ("ours", "saelens", "sparsify", "dictionary_learning"),
    "batchtopk": ("ours", "saelens", "dictionary_learning"),
    "matryoshka": ("ours", "saelens", "dictionary_learning"),
    "gated": ("ours", "saelens", "dictionary_learning"),
    "l1": ("ours", "saelens"),
    "coding": ("ours", "sklearn", "saelens"),
    # SAELens 6.54 has transcoder classes for inference only (no training SAE)
    "transcoder": ("ours", "sparsify"),
}
# Each library's name of a family's SAE: SAELens's architecture, dictionary_learning's trainer.
SAELENS_ARCHITECTURE = {"topk": "topk", "batchtopk": "batchtopk", "l1": "standard",
                        "matryoshka": "matryoshka_batchtopk", "gated": "gated",
                        "coding": "matching_pursuit"}  # fmt: skip
DL_TRAINER = {"topk": "topk", "batchtopk": "batchtopk", "matryoshka": "matryoshka_batchtopk",
              "gated": "gated"}  # fmt: skip
PENALISED = ("l1", "gated")  # families swept over a penalty grid
# Our SAEs again with max_grad_norm=--ours-clip (what dictionary_learning and SAELens do).
OURS_CLIPPED = "ours-clip"


def libraries(family, args):
    """The libraries run on ``family``: those of ``--libraries`` that have it, and our
    SAE with gradient clipping beside ours when ``--ours-clip`` is given."""
    chosen = [lib for lib in LIBRARIES[family] if lib in args.libraries]
    if getattr(args, "ours_clip", None) is not None and "ours" in chosen and family != "coding":
        chosen.insert(chosen.index("ours") + 1, OURS_CLIPPED)
    return chosen
DENSE = 0.1  # a latent active on more than this fraction of rows is dense


# ----------------------------------------------------------------------------- data
def usable(path, max_rows=None, targets=None):
    """The rows of a store (attention sinks left out) or of a ``.npy``, float32; with
    ``targets`` (a second store or ``.npy`` of the same tokens, e.g. an MLP's output),
    ``(X, Y)`` with the same rows of both."""

    def load(path):
        if str(path).endswith(".npy"):
            return np.load(path, mmap_mode="r"), None
        return load_activations(path)

    X, meta = load(path)
    keep = np.arange(X.shape[0]) if meta is None else np.flatnonzero(
        usable_rows(meta, X.shape[0], norms=row_norms(X, X.shape[0])))  # fmt: skip
    keep = keep[:max_rows]
    rows = np.asarray(X[keep], dtype=np.float32)
    if targets is None:
        return rows
    Y = load(targets)[0]
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"{targets} has {Y.shape[0]} rows but {path} has {X.shape[0]}.")
    return rows, np.asarray(Y[keep], dtype=np.float32)


# ------------------------------------------------------------------ learning rates
def default_lr(family, library, n_components):
    """The learning rate ``library`` uses at its defaults for this width (the centre
    of the sweep); None for scikit-learn, which has none."""
    if library in ("ours", OURS_CLIPPED):
        if family == "coding":
            return None
        est = (SAETranscoder if family == "transcoder" else SAEEncoder)(n_components=n_components)
        return est._resolved_learning_rate(full_batch=False, n_components=n_components)
    if library == "saelens":
        import dataclasses

        from sae_lens.config import LanguageModelSAERunnerConfig

        return {f.name: f.default for f in dataclasses.fields(LanguageModelSAERunnerConfig)}["lr"]
    scale = (n_components / 2**14) ** 0.5
    if library == "sparsify":
        return 5e-3 / scale  # sparsify 1.3's rule for its default optimizer (signum)
    if library == "dictionary_learning":
        # GatedSAETrainer's default; the TopK trainers' rule
        return 5e-5 if family == "gated" else 2e-4 / scale
    return None


def penalty_grids(args):
    """Each library's penalty grid of the penalised families: ours ``alpha``,
    SAELens's ``l1_coefficient``, dictionary_learning's gated ``l1_penalty`` (twice our
    alpha: the same objective, see ``_families.family_gradient_function``)."""
    return {"ours": args.alphas, OURS_CLIPPED: args.alphas, "saelens": args.l1,
            "dictionary_learning": [2 * a for a in args.alphas]}


def matryoshka_widths(args):
    """The nested widths below the full one (``--matryoshka-fractions`` of it)."""
    return [max(1, round(f * args.n_components)) for f in args.matryoshka_fractions]


# --------------------------------------------------------------------- one fit
def make_estimator(unit, n_train, args):
    """The estimator of ``unit`` (a dict), not fitted, and the settings it records."""
    family, library, tuned = unit["family"], unit["library"], unit["setting"] == "tuned"
    n, k, epochs, seed = args.n_components, args.k, unit["epochs"], unit["seed"]
    lr = unit["lr"]
    batch = args.batch if tuned else None
    steps = epochs * (n_train // (batch or 4096))
    if library in ("ours", OURS_CLIPPED) and family != "coding":
        params = {
            "topk": dict(activation="topk", n_nonzero_coefs=k, alpha=0.0),
            "batchtopk": dict(activation="batchtopk", n_nonzero_coefs=k, alpha=0.0),
            "matryoshka": dict(activation="batchtopk", n_nonzero_coefs=k, alpha=0.0,
                               matryoshka_prefixes=tuple(matryoshka_widths(args))),
            "l1": dict(activation="relu", alpha=unit["penalty"]),
            "gated": dict(activation="gated", alpha=unit["penalty"]),
            "transcoder": dict(activation="topk", n_nonzero_coefs=k, alpha=0.0),
        }[family]  # fmt: skip
        if library == OURS_CLIPPED:
            params["max_grad_norm"] = args.ours_clip
        estimator = SAETranscoder if family == "transcoder" else SAEEncoder
        return estimator(n_components=n, max_iter=epochs, batch_size=batch, learning_rate=lr,
                         random_state=seed, device="cpu", **params)  # fmt: skip
    if library == "ours":  # minibatch alternation needs a batch size: 4,096 at (a)
        return GradientSparseCoder(n_components=n, fit_algorithm="omp",
                                   transform_n_nonzero_coefs=k, batch_size=batch or 4096,
                                   max_iter=epochs, random_state=seed)  # fmt: skip
    if library == "sklearn":
        from sklearn.decomposition import MiniBatchDictionaryLearning

        return MiniBatchDictionaryLearning(n_components=n, batch_size=batch or 256,
                                           max_iter=epochs, transform_algorithm="omp",
                                           transform_n_nonzero_coefs=k, random_state=seed)
    if library == "saelens":
        from _bench.saelens import SAELensSAE

        params = dict(
            n_components=n, k=None if family in PENALISED else k,
            architecture=SAELENS_ARCHITECTURE[family],
            matryoshka_widths=matryoshka_widths(args) if family == "matryoshka" else None,
            l1_coefficient=unit.get("penalty") or 1.0,
            batch_size=batch or 4096, epochs=epochs, random_state=seed,
            lr=default_lr(family, library, n) if lr is None else lr,
        )  # fmt: skip
        return SAELensSAE.tuned(n_train, **params) if tuned else SAELensSAE(**params)
    from _bench.peer_saes import DictionaryLearningSAE, SparsifySAE

    careful = dict(dead_feature_threshold=n_train) if tuned and family != "gated" else {}
    if library == "sparsify":
        if tuned:
            careful.update(lr_warmup_steps=steps // 20, auxk_alpha=1 / 32)
        return SparsifySAE(n, k=k, batch_size=batch or 4096, epochs=epochs, lr=lr,
                           random_state=seed, **careful)  # fmt: skip
    options = {}
    if family == "matryoshka":
        edges = [0, *matryoshka_widths(args), n]
        options["group_fractions"] = [(b - a) / n for a, b in zip(edges, edges[1:])]
    if family == "gated":
        options["l1_penalty"] = unit["penalty"]
    if tuned:
        careful.update(warmup_steps=steps // 20)
        if family == "gated":
            options["sparsity_warmup_steps"] = steps // 20
        if family in ("batchtopk", "matryoshka"):
            options["threshold_start_step"] = steps // 20
    return DictionaryLearningSAE(n, k=k, trainer=DL_TRAINER[family], batch_size=batch or 8192,
                                 epochs=epochs, lr=lr, trainer_options=options,
                                 random_state=seed, **careful)  # fmt: skip


def fit_unit(unit, X_train, X_test, args, Y_train=None, Y_test=None):
    """Fit ``unit`` on ``X_train`` (a transcoder: to ``Y_train``); its measurements on
    ``X_test`` (a transcoder's FVU on ``Y_test``)."""
    est = make_estimator(unit, len(X_train), args)
    transcoder = unit["family"] == "transcoder"
    targets = (Y_train,) if transcoder else ()
    record = {}
    start = time.perf_counter()
    try:
        est.fit(X_train, *targets)
    except AssertionError as error:  # dictionary_learning refusing a run shorter than its warm-up
        if unit["library"] != "dictionary_learning" or unit["setting"] != "defaults":
            raise
        record["default_refused"] = f"AssertionError: {error}"
        # rerun with the warm-ups of (b), the one change
        steps = unit["epochs"] * (len(X_train) // est.batch_size)
        est.warmup_steps = steps // 20
        if unit["family"] == "gated":
            est.trainer_options = {**est.trainer_options, "sparsity_warmup_steps": steps // 20}
        start = time.perf_counter()
        est.fit(X_train, *targets)
    wall = time.perf_counter() - start
    seconds = getattr(est, "train_seconds_", wall)
    rows_seen = getattr(est, "rows_seen_", None)
    if rows_seen is None:
        rows_seen = unit["epochs"] * len(X_train)
    codes = est.transform(X_test)
    target = Y_test if transcoder else X_test
    reconstruction = est.predict(X_test) if transcoder else est.inverse_transform(codes)
    record.update(
        **held_out_metrics(codes, target, reconstruction),
        train_seconds=seconds,
        fit_wall_seconds=wall,
        rows_seen=int(rows_seen),
        rows_per_second=rows_seen / seconds,
        lr_used=_lr_used(est),
        peak_rss_mb=peak_rss_mb(),
        settings=_settings(est),
    )
    return record


def held_out_metrics(codes, target, reconstruction):
    """FVU of ``reconstruction`` against ``target`` (the library's
    ``fraction_variance_unexplained``), the mean L0 of ``codes`` and their dead (never
    active) and dense (active on more than ``DENSE`` of the rows) latent fractions."""
    frequency = (codes != 0).mean(axis=0)
    return {"fvu": float(fraction_variance_unexplained(target, reconstruction)),
            "l0": float(frequency.sum()), "dead": float((frequency == 0).mean()),
            "dense": float((frequency > DENSE).mean())}


def _lr_used(est):
    for name in ("learning_rate_", "lr_", "lr"):
        value = getattr(est, name, None)
        if isinstance(value, float):
            return value
    return None


def _settings(est):
    if hasattr(est, "settings_"):
        return est.settings_
    params = est.get_params() if hasattr(est, "get_params") else vars(est)
    return {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, type(None)))}


def warm_up(X):
    """One tiny fit of each of our estimators, so that the first unit's fit time does not
    include what a process pays once (lazy imports, the first optimiser): the peers'
    times are of their trainers' loops alone."""
    rows = X[:64]
    SAEEncoder(n_components=8, max_iter=1, batch_size=32, random_state=0).fit(rows)
    SAETranscoder(n_components=8, max_iter=1, batch_size=32, random_state=0).fit(rows, rows)
    GradientSparseCoder(n_components=8, fit_algorithm="omp", transform_n_nonzero_coefs=2,
                        batch_size=32, max_iter=1, random_state=0).fit(rows)  # fmt: skip


# ------------------------------------------------------------------------- units
def unit_key(unit):
    parts = [unit["family"], unit["library"], unit["setting"], f"e{unit['epochs']}",
             f"s{unit['seed']}"]  # fmt: skip
    if unit.get("lr_factor") is not None:
        parts.append(f"lr{unit['lr_factor']:g}")
    if unit.get("penalty") is not None:
        parts.append(f"p{unit['penalty']:g}")
    return "-".join(parts)


def plan(args, done):
    """The units to run, in order: seed by seed (every library's first seed before any
    second), the fewer epochs first, (a) then (b); a penalised family's penalties other
    than the middle one after its sweep, at the best factor so far (from ``done``)."""
    units = []
    for seed, epochs, family in itertools.product(args.seeds, args.epochs, args.families):
        grids = penalty_grids(args) if family in PENALISED else {}
        for library in libraries(family, args):
            centre = default_lr(family, library, args.n_components)
            grid = grids.get(library, [None])
            middle = _middle(grid)
            common = {"family": family, "library": library, "epochs": epochs, "seed": seed}
            if "defaults" in args.settings:
                units += [dict(common, setting="defaults", lr=None, lr_factor=None, penalty=p)
                          for p in grid]  # fmt: skip
            if "tuned" not in args.settings:
                continue
            factors = sweep(done, family, library, epochs, middle, args.lr_factors) \
                if centre is not None else [None]  # fmt: skip
            units += [dict(common, setting="tuned", penalty=middle, lr_factor=f,
                           lr=None if f is None else f * centre) for f in factors]  # fmt: skip
            best = best_factor(done, family, library, epochs, middle)
            if best is not None:
                units += [dict(common, setting="tuned", penalty=p, lr_factor=best,
                               lr=best * centre) for p in grid if p != middle]  # fmt: skip
    return units


# A sweep whose best factor is at an end of the grid goes on past it, a step of 3 at a
# time, up to this factor of the library's own default either way.
MAX_LR_FACTOR = 30


def sweep(done, family, library, epochs, penalty, factors):
    """The learning-rate factors to try: ``factors``, extended by 3x past whichever end
    has the lowest mean FVU so far (every library gets the same treatment)."""
    factors = sorted(factors)
    tried = {u["lr_factor"] for u in done if (u["family"], u["library"], u["epochs"],
             u.get("penalty"), u["setting"]) == (family, library, epochs, penalty, "tuned")}
    while True:
        if not tried.issuperset(factors):
            return factors  # extend only once every factor so far has a result
        best = best_factor(done, family, library, epochs, penalty, factors)
        if best is None or best not in (factors[0], factors[-1]):
            return factors
        step = 3.0 if best == factors[-1] else 1 / 3
        nxt = round(best * step, 4)
        if not 1 / MAX_LR_FACTOR <= nxt <= MAX_LR_FACTOR or nxt in factors:
            return factors
        factors = sorted([*factors, nxt])


def best_factor(done, family, library, epochs, penalty, among=None):
    """The learning-rate factor of the lowest mean FVU over seeds among the finished
    tuned units of this library at ``penalty`` (of the factors ``among``, when given);
    None before any."""
    by_factor = {}
    for unit in done:
        if (unit["family"], unit["library"], unit["setting"], unit["epochs"],
                unit.get("penalty")) == (family, library, "tuned", epochs, penalty) \
                and unit.get("lr_factor") is not None \
                and (among is None or unit["lr_factor"] in among):  # fmt: skip
            by_factor.setdefault(unit["lr_factor"], []).append(unit["fvu"])
    if not by_factor:
        return None
    return min(by_factor, key=lambda f: np.mean(by_factor[f]))


def load_done(out):
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "units").glob("*.json"))]


# ----------------------------------------------------------------------- summary
def summarise(done):
    """Mean and standard deviation over seeds of each (family, library, setting,
    epochs, factor, penalty), with the best factor of each tuned library marked."""
    groups = {}
    for unit in done:
        key = (unit["family"], unit["library"], unit["setting"], unit["epochs"],
               unit.get("lr_factor"), unit.get("penalty"))  # fmt: skip
        groups.setdefault(key, []).append(unit)
    rows = []
    for key, units in sorted(groups.items(), key=lambda item: str(item[0])):
        row = dict(zip(("family", "library", "setting", "epochs", "lr_factor", "penalty"), key))
        row["seeds"] = len(units)
        for name in ("fvu", "l0", "dead", "dense", "rows_per_second"):
            values = [u[name] for u in units]
            row[name], row[f"{name}_std"] = float(np.mean(values)), float(np.std(values))
        row["lr"] = units[0].get("lr_used")
        rows.append(row)
    for row in rows:
        if row["setting"] == "tuned":
            # the factor chosen at the middle penalty (the L1 sweep), used for every penalty
            middle = _middle(sorted({r["penalty"] for r in rows if r["family"] == row["family"]
                                     and r["library"] == row["library"]
                                     and r["penalty"] is not None}))  # fmt: skip
            best = best_factor(done, row["family"], row["library"], row["epochs"], middle)
            row["best"] = row["lr_factor"] == best
    return rows


def _middle(grid):
    return grid[len(grid) // 2] if grid else None


COLUMNS = [("family", "family"), ("library", "library"), ("epochs", "epochs"),
           ("lr_factor", "lr x"), ("penalty", "penalty"), ("seeds", "seeds"),
           *with_std("fvu", "FVU"), ("l0", "L0"), ("dead", "dead"), ("dense", "dense"),
           ("rows_per_second", "rows/s"), ("lr", "lr")]  # fmt: skip


def tables(rows):
    """Table (a), every defaults row; table (b), the tuned rows at each library's best
    factor (and the L1 grid at it), plus our factor-1 rows (``learning_rate=None``)."""
    defaults = [r for r in rows if r["setting"] == "defaults"]
    tuned = [r for r in rows if r["setting"] == "tuned"
             and (r.get("best") or (r["library"] == "ours" and r["lr_factor"] == 1))]
    return (format_table(defaults, COLUMNS, title="(a) each library at its own defaults"),
            format_table(tuned, COLUMNS, title="(b) tuned the same way (best learning-rate "
                         "factor; ours also at factor 1 = learning_rate=None)"))


# --------------------------------------------------------------------------- main
def _floats(text):
    return [float(v) for v in text.split(",") if v]


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="training store or .npy")
    parser.add_argument("--test", required=True, help="held-out store or .npy")
    parser.add_argument("--out", required=True, help="folder of the units (resumable)")
    parser.add_argument("--name", required=True, help="the activation set's label")
    parser.add_argument("--families", default=",".join(f for f in LIBRARIES if f != "transcoder"),
                        help="comma-separated, of " + ", ".join(LIBRARIES))
    parser.add_argument("--libraries", default="ours,saelens,sparsify,dictionary_learning,sklearn")
    parser.add_argument("--settings", default="defaults,tuned")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", default="1,4")
    parser.add_argument("--lr-factors", default="0.33,1,3")
    parser.add_argument("--alphas", default="0.1,0.3,1,3", help="our L1 penalties")
    parser.add_argument("--l1", default="1,3,10,30", help="SAELens's L1 coefficients")
    parser.add_argument("--matryoshka-fractions", default="0.0625,0.25",
                        help="the nested widths below the full one, as fractions of it")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--expansion", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4096, help="the tuned batch size")
    parser.add_argument("--ours-clip", type=float, default=None,
                        help="also run our SAEs with this max_grad_norm (library ours-clip)")
    parser.add_argument("--train-y", default=None,
                        help="the transcoders' targets for the training rows (same tokens)")
    parser.add_argument("--test-y", default=None, help="the same for the held-out rows")
    parser.add_argument("--max-train-rows", type=int, default=None)
    parser.add_argument("--max-test-rows", type=int, default=10_000)
    parser.add_argument("--dry-run", action="store_true", help="list the units and stop")
    parser.add_argument("--record", default=None, help="the summary's JSON file")
    args = parser.parse_args(argv)
    args.families = args.families.split(",")
    args.libraries = args.libraries.split(",")
    args.settings = args.settings.split(",")
    args.seeds, args.epochs = _ints(args.seeds), _ints(args.epochs)
    args.lr_factors, args.alphas, args.l1 = (_floats(args.lr_factors), _floats(args.alphas),
                                             _floats(args.l1))  # fmt: skip
    args.matryoshka_fractions = _floats(args.matryoshka_fractions)
    if "transcoder" in args.families:
        if not (args.train_y and args.test_y):
            parser.error("the transcoder family needs --train-y and --test-y")
        X_train, Y_train = usable(args.train, args.max_train_rows, targets=args.train_y)
        X_test, Y_test = usable(args.test, args.max_test_rows, targets=args.test_y)
    else:
        X_train, X_test = usable(args.train, args.max_train_rows), usable(args.test,
                                                                         args.max_test_rows)
        Y_train = Y_test = None
    args.n_components = args.expansion * X_train.shape[1]
    print(f"{args.name}: {len(X_train)} training rows, {len(X_test)} test rows, "
          f"d={X_train.shape[1]}, {args.n_components} latents, k={args.k}", flush=True)
    units_dir = Path(args.out) / "units"
    units_dir.mkdir(parents=True, exist_ok=True)
    warm_up(X_train)
    while True:
        done = load_done(args.out)
        finished = {unit_key(u) for u in done}
        todo = [u for u in plan(args, done) if unit_key(u) not in finished]
        if args.dry_run:
            print("\n".join(unit_key(u) for u in todo))
            return
        if not todo:
            break
        unit = todo[0]
        print(f"[{len(finished) + 1}/{len(finished) + len(todo)}+] {unit_key(unit)}",
              end=" ", flush=True)  # fmt: skip
        torch.manual_seed(unit["seed"])
        result = {**unit, **fit_unit(unit, X_train, X_test, args, Y_train, Y_test)}
        print(f"FVU {result['fvu']:.4f} L0 {result['l0']:.1f} dead {result['dead']:.3f} "
              f"{result['rows_per_second']:.0f} rows/s", flush=True)
        (units_dir / f"{unit_key(unit)}.json").write_text(json.dumps(result, indent=1))
    rows = summarise(done)
    table_a, table_b = tables(rows)
    print("\n" + table_a + "\n\n" + table_b)
    if args.record:
        record = {
            "name": args.name,
            "command": "python benchmarks/peers/side_by_side.py " + " ".join(
                recorded_path(a) if "/" in a else a
                for a in (argv if argv is not None else sys.argv[1:])),
            "train_rows": len(X_train), "test_rows": len(X_test),
            "n_features": X_train.shape[1], "n_components": args.n_components, "k": args.k,
            "tuned_batch": args.batch, "lr_factors": args.lr_factors,
            "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "threadpools": recorded_threadpools(threadpoolctl.threadpool_info()),
            "summary": rows, "tables": [table_a, table_b], "units": done,
        }  # fmt: skip
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
