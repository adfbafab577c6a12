"""The paper's §5 on a real model: ``sparsegap activations``.

One function per stage, so the command line stays a thin shell and each stage is tested
on its own: the offline corpus, the cached extraction, the split by sequence, the input
scale, the method runs and their table, the FVU-vs-FLOPs plot and the interpretability step.
"""

import hashlib
import json
import os
import re
import time
from pathlib import Path

from dataclasses import dataclass

import numpy as np
import torch

from ..activations._corpora import corpus_texts, text_batches
from ..activations._evaluation import loss_recovered, reconstruction_metrics
from ..activations._extract import extract_activations, get_submodule, load_activations
from ..activations._rows import (
    MAX_NORM_RATIO,
    holdout_sequences,
    input_scale,
    row_norms,
    split_by_sequence,
)
from ._methods import (
    ACTIVATION_BUDGETS,
    ACTIVATION_METHODS,
    activation_k,
    build_activation_method,
)
from ._report import say

DEFAULT_MODULE = "model.layers.15"
# The columns of the table, in order (see ``format_table``).
TABLE_COLUMNS = ("method", "fvu", "mean_l0", "dead_fraction", "dense_fraction",
                 "loss_recovered", "training_flops", "inference_flops", "fit_seconds",
                 "transform_seconds", "matched")
# What each method is held to so the rows compare at the same sparsity (the "matched"
# column; ``k`` is the experiment's L0). SAE+ITO's fit seconds include its SAE's.
MATCHED = {
    "sae": "TopK k={k}",
    "mlp": "TopK k={k}",
    "sparse-coding": "OMP k={k} (fit and codes)",
    "sae+ito": "the SAE's dictionary; OMP at each token's SAE L0",
}
_HEADERS = {"fvu": "FVU", "mean_l0": "L0", "dead_fraction": "dead", "dense_fraction": "dense",
            "loss_recovered": "loss rec.", "training_flops": "train FLOPs",
            "inference_flops": "infer FLOPs", "fit_seconds": "fit s",
            "transform_seconds": "transform s", "matched": "matched"}


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-")[-40:] or "model"


def cache_path(cache_dir, *, model, module, corpus, max_length, batch_size):
    """The directory of the activation set for these settings under ``cache_dir``.

    The number of tokens is not part of the key: a later run asking for more tokens
    extends the same set (extraction resumes), one asking for fewer uses its prefix.
    """
    key = json.dumps({"model": str(model), "module": module, "corpus": corpus,
                      "max_length": max_length, "batch_size": batch_size}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{_slug(model)}-{_slug(module)}-{digest}"


def prepare_activations(model, tokenizer, *, model_name, module, n_tokens, cache_dir,
                        text_files=None, max_length=128, batch_size=8, progress=True):
    """Extract (or reuse) the activations of ``module`` over the corpus; returns the path.

    The set is cached under ``cache_dir``, keyed by the model, module, corpus and window
    settings (:func:`cache_path`); an interrupted extraction resumes.
    """
    texts, corpus = corpus_texts(text_files)
    path = cache_path(cache_dir, model=model_name, module=module, corpus=corpus,
                      max_length=max_length, batch_size=batch_size)
    batches = text_batches(texts, tokenizer, batch_size=batch_size, max_length=max_length)
    say(f"activations of {module} -> {path}", progress=progress)
    extract_activations(model, batches, module=module, path=path, max_tokens=n_tokens,
                        progress=progress)
    return path


def run_method(name, estimator, X_train, X_holdout, *, model=None, module=None, site="output",
               lm_batches=None, scale=1.0, baseline=None, progress=True):
    """Fit one method and measure it on the holdout rows.

    Returns ``(row, estimator, loss)``: ``loss`` is the :func:`loss_recovered` result
    (None without ``lm_batches``), which a later call on the same ``lm_batches`` takes
    as its ``baseline``: the clean and ablation losses are reused, so only the splice
    runs the model.
    """
    say(f"{name}: fitting {type(estimator).__name__} on {X_train.shape[0]} tokens",
        progress=progress)
    start = time.perf_counter()
    estimator.fit(X_train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = reconstruction_metrics(estimator, X_holdout)
    transform_seconds = time.perf_counter() - start
    row = {
        "method": name,
        "fvu": metrics["fvu"],
        "mean_l0": metrics["mean_l0"],
        "dead_fraction": metrics["dead_fraction"],
        "dense_fraction": metrics["dense_fraction"],
        "loss_recovered": None,
        "loss_recovered_low": None,
        "loss_recovered_high": None,
        "ce_clean": None,
        "ce_ablation": None,
        "ce_reconstruction": None,
        "loss_tokens": 0,
        "training_flops": int(estimator.training_flops_),
        "inference_flops": int(estimator.inference_flops(X_holdout.shape[0])),
        "fit_seconds": fit_seconds,
        "transform_seconds": transform_seconds,
        "n_components": int(estimator.components_.shape[0]),
        "n_train": int(X_train.shape[0]),
        "n_holdout": int(X_holdout.shape[0]),
    }
    result = None
    if lm_batches is not None:
        # The estimator was trained on scale * x; position 0 (the attention sink) stays
        # true in every run and out of the mean.
        result = loss_recovered(model, lm_batches, module=module, site=site,
                                reconstruct=estimator, scale=scale, baseline=baseline)
        interval = result["score_interval"]
        row.update(loss_recovered=result["score"], ce_clean=result["ce_clean"],
                   ce_ablation=result["ce_ablation"],
                   ce_reconstruction=result["ce_reconstruction"],
                   loss_tokens=result["n_tokens"],
                   loss_recovered_low=None if interval is None else interval[0],
                   loss_recovered_high=None if interval is None else interval[1])
    say(f"{name}: FVU {row['fvu']:.3f}, L0 {row['mean_l0']:.1f}, dead "
        f"{row['dead_fraction']:.3f}, fit {fit_seconds:.1f} s", progress=progress)
    return row, estimator, result


def _format(column, value):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if column.endswith("flops"):
        return f"{value:.3g}"
    if column.endswith("seconds"):
        return f"{value:.1f}"
    if column == "mean_l0":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _cell(row, column):
    """One cell; loss recovered with its bootstrap interval when it has one."""
    text = _format(column, row.get(column))
    if column == "loss_recovered" and row.get("loss_recovered_low") is not None:
        text += f" [{row['loss_recovered_low']:.2f}, {row['loss_recovered_high']:.2f}]"
    return text


def format_table(rows):
    """The results as an aligned text table, one line per method."""
    header = [_HEADERS.get(c, c) for c in TABLE_COLUMNS]
    lines = [[row["method"]] + [_cell(row, c) for c in TABLE_COLUMNS[1:]] for row in rows]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def render(cells):
        # Names and the "matched" note left-aligned, numbers right-aligned.
        return "  ".join(c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(l) for l in lines])


def plot_fvu_vs_flops(rows, path, *, title=None):
    """FVU (holdout) against inference FLOPs per token, one marker per method, saved to
    ``path`` (PNG).

    Every method is held to the same L0, so what separates them is what their codes
    cost: the paper's compute-optimality view. The SAE+ITO point is joined to its SAE's
    with an arrow (the same dictionary, refined codes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    points = {}
    for index, row in enumerate(rows):
        flops = row["inference_flops"] / max(row["n_holdout"], 1)
        points[row["method"]] = (flops, row["fvu"])
        ax.plot(flops, row["fvu"], marker="osD^vP*X"[index % 8], markersize=10,
                linestyle="none", label=f"{row['method']} (L0 {row['mean_l0']:.1f})")
    if "sae" in points and "sae+ito" in points:
        ax.annotate("", xy=points["sae+ito"], xytext=points["sae"],
                    arrowprops={"arrowstyle": "->", "color": "0.5"})
    ax.set_xscale("log")
    ax.set_xlabel("inference FLOPs per token (encode + decode)")
    ax.set_ylabel("fraction of variance unexplained (holdout)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3, which="both")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(rows, out, *, settings, environment, interpret=None):
    """``results.csv`` and ``results.json`` (settings, environment, rows) in ``out``."""
    import csv

    out = Path(out)
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    record = {"settings": settings, "environment": environment, "runs": rows}
    if interpret is not None:
        record["interpret"] = interpret
    with open(out / "results.json", "w") as handle:
        json.dump(record, handle, indent=2, default=float)
        handle.write("\n")
    return out / "results.csv", out / "results.json"


def environment():
    """Versions and thread settings recorded with every result."""
    import platform

    from .._version import __version__

    try:
        from threadpoolctl import threadpool_info

        blas = [{k: info.get(k) for k in ("internal_api", "num_threads", "version")}
                for info in threadpool_info()]
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        blas = []
    return {"sklearn_sparsegap": __version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "machine": platform.machine(),
            "threadpools": blas}


def unembedding(model):
    """The model's unembedding matrix ``W_U`` (vocab, d) as numpy, or ``None``."""
    head = getattr(model, "get_output_embeddings", lambda: None)()
    weight = getattr(head, "weight", None)
    if weight is None:
        return None
    return weight.detach().to("cpu", torch.float32).numpy()


def check_module(model, module):
    """Fail early, listing close names, when ``module`` is not a submodule of ``model``."""
    get_submodule(model, module)


def load_rows(path, n_tokens):
    """``(X, metadata, n_rows)`` of the first ``n_tokens`` rows of an activation set."""
    X, metadata = load_activations(path)
    return X, metadata, min(int(n_tokens), X.shape[0])


@dataclass
class ActivationSplit:
    """The rows one run trains and measures on: scaled training and holdout rows, their
    indices in the activation set, the input scale and the attention-sink count."""

    X_train: np.ndarray
    X_holdout: np.ndarray
    train_rows: np.ndarray
    holdout_rows: np.ndarray
    scale: float
    n_massive: int


def split_activations(X, metadata, n_rows, *, max_norm_ratio=MAX_NORM_RATIO,
                      holdout_fraction=0.2, max_holdout=4096, random_state=0):
    """Train and holdout rows of an activation set, scaled to mean squared norm
    ``n_features`` (the training rows' scale, :func:`input_scale`).

    Whole sequences go to one side; position 0 and massive-activation rows are left out
    (:func:`split_by_sequence`); the holdout is cut to at most ``max_holdout`` rows at
    a sequence boundary, so contexts stay complete.
    """
    norms = row_norms(X, n_rows)
    train_rows, holdout_rows = split_by_sequence(metadata, n_rows, norms=norms,
                                                 max_norm_ratio=max_norm_ratio,
                                                 holdout_fraction=holdout_fraction,
                                                 random_state=random_state)
    n_massive = int(np.sum(np.asarray(metadata["position"][:n_rows]) != 0)
                    - len(train_rows) - len(holdout_rows))
    X_train = np.asarray(X[train_rows], dtype=np.float32)
    scale = input_scale(X_train)
    X_train *= scale
    if max_holdout is not None and len(holdout_rows) > max_holdout:
        sequence = np.asarray(metadata["sequence"])[holdout_rows]
        cut = np.searchsorted(sequence, sequence[max_holdout], side="left")
        holdout_rows = holdout_rows[: max(cut, 1)]
    X_holdout = np.asarray(X[holdout_rows], dtype=np.float32) * scale
    return ActivationSplit(X_train, X_holdout, train_rows, holdout_rows, scale, n_massive)


def loss_batches(model, metadata, holdout_rows, n_sequences):
    """Token batches (of 4 sequences) of the loss-recovered splice, or None: no
    sequences asked for, none long enough, or a model without an LM head."""
    if not n_sequences or unembedding(model) is None:  # encoders have no LM loss
        return None
    tokens = holdout_sequences(metadata, holdout_rows, n_sequences=n_sequences)
    return None if tokens is None else list(torch.split(tokens, 4))


def run_methods(methods, split, *, n_components, budget, random_state=0, device="cpu",
                model=None, module=None, lm_batches=None, progress=True):
    """Fit and measure every method on the same split; returns ``(rows, fitted)``.

    SAE+ITO refines the SAE this run fitted (or, without an ``"sae"`` row, one fitted
    here with the same settings): nothing is trained twice, and its fit seconds include
    the SAE's. Sparse coding trains on a prefix of the training rows (every epoch runs
    OMP on every row). The clean and zero-ablation losses are measured once, with the
    first method, and reused.
    """
    n_features = split.X_train.shape[1]
    k = activation_k(n_components, n_features)
    rows, fitted = [], {}
    sae_seconds = baseline = None
    for name in methods:
        build = dict(n_components=n_components, n_features=n_features, budget=budget,
                     random_state=random_state, device=device)
        train = split.X_train
        if name == "sae+ito":
            if "sae" not in fitted:
                say("sae+ito: fitting its SAE", progress=progress)
                start = time.perf_counter()
                fitted["sae"] = build_activation_method("sae", **build).fit(split.X_train)
                sae_seconds = time.perf_counter() - start
            build["encoder"] = fitted["sae"]
        elif name == "sparse-coding":
            train = split.X_train[: ACTIVATION_BUDGETS[budget]["sc_samples"]]
        estimator = build_activation_method(name, **build)
        row, fitted[name], loss = run_method(
            name, estimator, train, split.X_holdout, model=model, module=module,
            lm_batches=lm_batches, scale=split.scale, baseline=baseline, progress=progress,
        )  # fmt: skip
        baseline = baseline or loss
        if name == "sae":
            sae_seconds = row["fit_seconds"]
        elif name == "sae+ito":
            row["fit_seconds"] += sae_seconds
        row["matched"] = MATCHED[name].format(k=k)
        rows.append(row)
    if "sae" not in methods:
        fitted.pop("sae", None)
    return rows, fitted


def _interpret_holdout(fitted, split, metadata, model, tokenizer, out, interpret, progress):
    """The interpretability step on the holdout rows (see ``_activations_interpret``)."""
    from ._activations_interpret import run_interpret

    holdout_metadata = {key: np.asarray(value[split.holdout_rows])
                        for key, value in metadata.items()}
    # Contexts stay within an input sequence (positions restart at each window of a
    # document), so each sequence is a "document" of the feature statistics.
    holdout_metadata["document"] = holdout_metadata["sequence"]
    return run_interpret(fitted, split.X_holdout, holdout_metadata, vocabulary=tokenizer,
                         W_U=unembedding(model), out=out / "interpret", progress=progress,
                         **interpret)


def run_experiment(model, tokenizer, *, model_name, module=DEFAULT_MODULE, n_tokens=30_000,
                   expansion=4, methods=None, out="sparsegap-activations", cache_dir=None,
                   text_files=None, budget="default", n_loss_sequences=8,
                   max_holdout=4096, holdout_fraction=0.2, max_norm_ratio=MAX_NORM_RATIO,
                   random_state=0, device="cpu", progress=True, interpret=None):
    """Run the paper's §5 comparison on one model's activations and write the results.

    Extracts (or reuses) the activations (:func:`prepare_activations`), splits them by
    sequence and scales them (:func:`split_activations`), fits every method on the same
    training tokens at the same number of latents and measures each on the holdout
    tokens (:func:`run_methods`). Writes ``results.csv``, ``results.json`` and
    ``fvu_vs_flops.png`` to ``out`` (and, with ``interpret``, the interpretability
    step's outputs under ``out/interpret``).

    Returns
    -------
    record : dict
        ``rows`` (one dict per method), ``settings``, ``paths`` and ``interpret``.
    """
    methods = list(ACTIVATION_METHODS if methods is None else methods)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    path = prepare_activations(model, tokenizer, model_name=model_name, module=module,
                               n_tokens=n_tokens, cache_dir=cache_dir, text_files=text_files,
                               progress=progress)
    X, metadata, n_rows = load_rows(path, n_tokens)
    if n_rows < n_tokens:
        say(f"the corpus gave only {n_rows} tokens (asked for {n_tokens})", progress=progress)
    split = split_activations(X, metadata, n_rows, max_norm_ratio=max_norm_ratio,
                              holdout_fraction=holdout_fraction, max_holdout=max_holdout,
                              random_state=random_state)
    n_features = X.shape[1]
    n_components = int(expansion * n_features)
    say(f"{len(split.train_rows)} training / {len(split.holdout_rows)} holdout tokens "
        f"(position 0 and {split.n_massive} massive-activation rows excluded), "
        f"{n_features} features, {n_components} latents, input scale {split.scale:.4g}",
        progress=progress)
    lm_batches = loss_batches(model, metadata, split.holdout_rows, n_loss_sequences)
    settings = {"model": str(model_name), "module": module, "n_tokens": n_rows,
                "expansion": expansion, "n_components": n_components, "methods": methods,
                "budget": budget, "budget_settings": ACTIVATION_BUDGETS[budget],
                "n_train": int(len(split.train_rows)),
                "n_holdout": int(len(split.holdout_rows)),
                "input_scale": split.scale, "holdout_fraction": holdout_fraction,
                "max_holdout": max_holdout, "random_state": random_state,
                "max_norm_ratio": max_norm_ratio, "n_massive_excluded": split.n_massive,
                "device": str(device),
                # The set's folder under the cache directory, not the machine's path,
                # so that a record reads the same wherever it was made.
                "activations": path.name,
                "loss_recovered_tokens": 0 if lm_batches is None
                else int(sum(b.numel() for b in lm_batches))}
    rows, fitted = run_methods(methods, split, n_components=n_components, budget=budget,
                               random_state=random_state, device=device, model=model,
                               module=module, lm_batches=lm_batches, progress=progress)
    paths = {"table": str(out / "results.csv"), "json": str(out / "results.json")}
    title = (f"{model_name} {module}: {n_components} latents, {len(split.holdout_rows)} "
             "holdout tokens")
    try:
        paths["plot"] = str(plot_fvu_vs_flops(rows, out / "fvu_vs_flops.png", title=title))
    except ImportError:
        say("matplotlib is not installed: no plot", progress=progress)
    interpret_record = None
    if interpret is not None:
        interpret_record = _interpret_holdout(fitted, split, metadata, model, tokenizer, out,
                                              interpret, progress)
        paths.update(interpret_record.pop("paths"))
    settings["seconds"] = time.perf_counter() - started
    write_results(rows, out, settings=settings, environment=environment(),
                  interpret=interpret_record)
    return {"rows": rows, "settings": settings, "paths": paths, "interpret": interpret_record}
