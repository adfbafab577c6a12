"""The feature browser: one self-contained static HTML file.

The list of features is embedded as compact columnar JSON and drawn as a virtualised list
(only the rows in view are in the page); each feature's page data is a separate JSON
string parsed only when the page is opened, so a report of 10,000+ latents opens quickly
from a ``file://`` URL with no server and no network. Token strings are stored once in a
shared table.
"""

import html
import json
import math
import os
import re
from importlib import resources

import numpy as np

__all__ = ["write_feature_browser"]


def _number(value, digits=6):
    value = float(value)
    return None if not math.isfinite(value) else round(value, digits)


def _embed(obj):
    """JSON safe inside a <script> element (no '</script>' can appear)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _results_by_latent(results):
    if results is None:
        return {}
    tables = [results] if hasattr(results, "keys") else list(results)
    by_latent = {}
    for table in tables:
        if "latent" not in table:
            raise ValueError(
                "results must be explain_and_score output (a dict with a 'latent' "
                "column) or a list of them."
            )
        columns = list(table)
        for values in zip(*(table[c] for c in columns)):
            row = dict(zip(columns, values))
            by_latent.setdefault(int(row["latent"]), []).append(row)
    return by_latent


class _StringTable:
    """Token strings stored once: ``index(text)`` is the position of ``text`` in
    ``strings``, appended the first time it is seen."""

    def __init__(self):
        self.strings = []
        self._positions = {}

    def index(self, text):
        if text not in self._positions:
            self._positions[text] = len(self.strings)
            self.strings.append(text)
        return self._positions[text]


def _encode_contexts(contexts, strings, max_contexts):
    """Contexts as [token string indices, activations to 4 digits, centre]."""
    contexts = contexts if max_contexts is None else contexts[:max_contexts]
    return [
        [
            [strings.index(t) for t in c["tokens"]],
            np.round(np.asarray(c["activations"], dtype=np.float64), 4).tolist(),
            c["centre"],
        ]
        for c in contexts
    ]


def _list_label(explanation, dead, top):
    """The searchable text of a latent's list row: its explanation (or "never fires")
    and the distinct tokens at the centre of its first five top contexts."""
    top_tokens = []
    for context in top[:5]:
        token_text = context["tokens"][context["centre"]].strip()
        if token_text not in top_tokens:
            top_tokens.append(token_text)
    label = explanation or ("never fires" if dead else "")
    if top_tokens:
        label += (" · " if label else "") + "top: " + " ".join(top_tokens)
    return label


def _append_list_row(index, stats, latent, rows, top):
    """Add one latent to the columnar list: scalars, the first scored F1 and its label."""
    scored = [r for r in rows if r["status"] == "scored"]
    explanation = next((r["explanation"] for r in rows if r.get("explanation")), "")
    index["id"].append(latent)
    index["freq"].append(_number(stats.frequency[latent], 8))
    index["mean"].append(_number(stats.mean_activation[latent], 5))
    index["max"].append(_number(stats.max_activation[latent], 5))
    index["f1"].append(_number(scored[0]["f1"], 4) if scored else None)
    index["dead"].append(bool(stats.dead[latent]))
    index["text"].append(_list_label(explanation, stats.dead[latent], top))


def _score_cells(row):
    """The columns of one explain_and_score row shown on a page, as plain JSON values."""
    return {
        key: (_number(row[key], 4) if isinstance(row[key], (float, np.floating))
              else (int(row[key]) if isinstance(row[key], (np.integer,)) else row[key]))
        for key in ("protocol", "scorer", "backend", "status", "explanation",
                    "precision", "recall", "f1", "f1_average", "accuracy")
    }


def _feature_page(stats, latent, rows, top, strings, max_contexts):
    """One latent's page data: histogram, contexts, scores and logit effects."""
    page = {
        "n": int(stats.n_firing[latent]),
        "peak": _number(stats.max_activation[latent], 5),
        "h": np.round(stats.histogram_counts[latent], 2).tolist(),
        "e": [
            _number(stats.histogram_edges[latent][0], 4),
            _number(stats.histogram_edges[latent][-1], 4),
        ],
        "top": _encode_contexts(top, strings, max_contexts),
        "quantiles": _encode_contexts(stats.quantile_contexts(latent), strings,
                                      max_contexts),
        "scores": [_score_cells(r) for r in rows],
    }
    effects = stats.logit_effects(latent)
    if effects is not None:
        page["lt"] = [[strings.index(t), _number(v, 4)] for t, v in effects["top"]]
        page["lb"] = [[strings.index(t), _number(v, 4)] for t, v in effects["bottom"]]
    return page


def _browser_data(stats, by_latent, max_contexts):
    """The list (columnar, with the shared string table) and each latent's page as a
    JSON string."""
    strings = _StringTable()
    index = {key: [] for key in ("id", "freq", "mean", "max", "f1", "dead", "text")}
    features = []
    for latent in range(stats.n_latents):
        rows = by_latent.get(latent, [])
        top = stats.top_contexts(latent)
        _append_list_row(index, stats, latent, rows, top)
        features.append(
            _embed(_feature_page(stats, latent, rows, top, strings, max_contexts))
        )
    index["strings"] = strings.strings
    index["meta"] = (
        f"{stats.n_latents} latents · {stats.n_tokens} tokens · "
        f"{int(stats.dead.sum())} never fire"
    )
    return index, features


def _render_page(title, index, features):
    """The HTML template with the title and the embedded data filled in."""
    template = (
        resources.files("sklearn_sparsegap.interpret")
        .joinpath("_assets/browser.html")
        .read_text(encoding="utf-8")
    )
    fills = {
        "__SPARSEGAP_TITLE__": html.escape(title),
        "__SPARSEGAP_INDEX__": _embed(index),
        "__SPARSEGAP_FEATURES__": _embed(features),
    }
    # One pass, so a token string that happens to spell a placeholder stays as it is.
    return re.sub("|".join(fills), lambda match: fills[match.group(0)], template)


def write_feature_browser(stats, path, *, results=None, title="Feature browser",
                          max_contexts=None):
    """Write a static HTML feature browser for every latent.

    The file needs no server and no network (open it from a ``file://`` URL): a
    searchable list sortable by frequency, mean/max activation and F1, and a page per
    latent with token-shaded contexts, its activation histogram, logit effects and its
    explanations with scores.

    Parameters
    ----------
    stats : FeatureStatistics
        From :func:`compute_feature_statistics` (with a vocabulary).
    path : str or path
        The HTML file to write.
    results : dict or list of dict, default=None
        :func:`explain_and_score` output (several, e.g. one per protocol, as a list).
        The list's F1 column shows the first scored F1 of each latent.
    title : str, default="Feature browser"
        Title of the page.
    max_contexts : int, default=None
        Contexts shown per latent and kind (top, quantile); all by default.

    Returns
    -------
    path : str
        The file written.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_sparsegap.interpret import (
    ...     compute_feature_statistics, write_feature_browser)
    >>> class Relu:
    ...     components_ = np.eye(2)
    ...     def transform(self, X):
    ...         return np.maximum(X, 0)
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> metadata = {"document": np.arange(100) // 50, "position": np.arange(100) % 50,
    ...             "token": np.arange(100) % 10}
    >>> stats = compute_feature_statistics(Relu(), X, metadata, vocabulary=list("abcdefghij"))
    >>> path = write_feature_browser(stats, os.path.join(tempfile.mkdtemp(), "f.html"))
    >>> os.path.getsize(path) > 0
    True
    """
    if stats.vocabulary is None:
        raise ValueError(
            "stats has no vocabulary: pass vocabulary= to compute_feature_statistics."
        )
    if max_contexts is not None and (int(max_contexts) != max_contexts or max_contexts < 1):
        raise ValueError(f"max_contexts must be an integer >= 1, got {max_contexts!r}.")
    index, features = _browser_data(stats, _results_by_latent(results), max_contexts)
    page = _render_page(title, index, features)
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path
