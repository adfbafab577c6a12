"""The ``--interpret`` step of ``sparsegap activations``: explain, score, compare, browse."""

import csv
import html
import json
from pathlib import Path

import numpy as np

from ._report import say

PROTOCOL_NAMES = ("paper", "delphi")


def make_backend(endpoint=None, model_name=None, api_key=None, cache_dir=None):
    """The offline N-gram explainer, or an LLM behind an OpenAI-compatible endpoint."""
    from ..interpret import LLMExplainer, NGramExplainer, OpenAICompatibleClient

    if endpoint is None:
        return NGramExplainer()
    client = OpenAICompatibleClient(endpoint, model=model_name, api_key=api_key,
                                    cache_dir=cache_dir)
    return LLMExplainer(client)


def _write_rows(path, results):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)


def _as_rows(method, result):
    columns = list(result)
    return [{"method": method, **{c: result[c][i] for c in columns}}
            for i in range(len(result["latent"]))]


def f1_samples(per_method, protocol, scorer="detection"):
    """``{method: F1 array}`` of one protocol and scorer (NaN where not scored)."""
    samples = {}
    for method, by_protocol in per_method.items():
        result = by_protocol[protocol]
        samples[method] = np.array(
            [f for f, s in zip(result["f1"], result["scorer"]) if s == scorer], dtype=float
        )
    return samples


def compare(samples, *, random_state=0, n_resamples=9999):
    """:func:`compare_methods` on the methods that have scored latents (or ``None``)."""
    from ..interpret import compare_methods

    usable = {m: v for m, v in samples.items() if np.isfinite(v).any()}
    if len(usable) < 2:
        return None
    try:
        report = compare_methods(usable, random_state=random_state, n_resamples=n_resamples)
    except ValueError:  # too few scored latents for the tests (e.g. fewer than 3)
        return None
    report["unscored_methods"] = sorted(set(samples) - set(usable))
    return report


def format_comparison(report, title):
    """Median F1 with its bootstrap interval per method, and the Kruskal-Wallis/Dunn tests."""
    if report is None:
        return f"{title}: fewer than two methods have scored latents; no comparison."
    summary = report["summary"]
    lines = [title, f"{'method':<14} {'n':>4} {'unscored':>8} {'median F1':>9}  95% CI"]
    for i, method in enumerate(summary["method"]):
        lines.append(
            f"{method:<14} {summary['n'][i]:>4} {summary['n_dropped'][i]:>8} "
            f"{summary['median'][i]:>9.3f}  [{summary['ci_low'][i]:.3f}, "
            f"{summary['ci_high'][i]:.3f}]"
        )
    kruskal = report["kruskal"]
    lines.append(f"Kruskal-Wallis H = {kruskal['statistic']:.2f}, p = {kruskal['p_value']:.3g}")
    dunn = report["dunn"]
    lines.append("Dunn's test (Bonferroni):")
    for i in range(len(dunn["z"])):
        lines.append(
            f"  {dunn['group_a'][i]} vs {dunn['group_b'][i]}: z = {dunn['z'][i]:.2f}, "
            f"p_adj = {dunn['p_adjusted'][i]:.3g}"
        )
    return "\n".join(lines)


def plot_f1(comparisons_samples, path):
    """One violin panel per (protocol, scorer) of per-latent F1, like the paper's Figure 7."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..interpret import plot_score_distributions

    panels = [(label, samples) for label, samples in comparisons_samples.items()
              if sum(np.isfinite(v).any() for v in samples.values()) >= 2]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (label, samples) in zip(axes[0], panels):
        usable = {m: v for m, v in samples.items() if np.isfinite(v).any()}
        plot_score_distributions(usable, ax=ax, ylabel="F1")
        ax.set_title(label, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _index_html(texts, methods, title):
    links = "".join(f'<li><a href="{html.escape(m)}.html">{html.escape(m)}</a></li>'
                    for m in methods)
    blocks = "".join(f"<pre>{html.escape(t)}</pre>" for t in texts)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
        "margin:2em;max-width:60em}pre{background:#f6f6f6;padding:1em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><h2>Feature browsers</h2><ul>{links}</ul>"
        "<h2>Detection F1 per method</h2>"
        "<img src='f1_violin.png' alt='F1 distributions' style='max-width:100%'>"
        f"{blocks}</body></html>"
    )


def run_interpret(fitted, X, metadata, *, vocabulary, W_U=None, out, n_latents=200,
                  endpoint=None, model_name=None, api_key=None, min_firing=None,
                  random_state=0, n_resamples=9999, progress=True):
    """Feature statistics, explanations, detection F1 and their comparison, per method.

    Parameters
    ----------
    fitted : dict of str -> fitted estimator
        The methods, fitted on data scaled like ``X``.
    X : ndarray of shape (n_tokens, n_features)
        Holdout activations (the rows of whole sequences, in order).
    metadata : dict of ndarray
        Their ``document``, ``sequence``, ``position`` and ``token``.
    vocabulary : tokenizer or sequence of str
        Token strings.
    W_U : ndarray of shape (vocab, n_features), default=None
        Unembedding, for logit effects.
    out : path
        Output directory (created).
    n_latents : int, default=200
        Latents evaluated per method: the same random indices for every method.
    endpoint, model_name, api_key : str, default=None
        An OpenAI-compatible endpoint for the LLM back end; offline N-gram otherwise.
    min_firing : dict of protocol -> int, default=None
        Fewest firing tokens for a latent to be scored; the protocols' own by default.
    random_state : int, default=0
        Seed of the latent sample, the protocols and the bootstrap.
    n_resamples : int, default=9999
        Bootstrap resamples of each median's interval.
    progress : bool, default=True
        Progress lines on stderr.

    Returns
    -------
    record : dict
        ``backend``, ``latents``, per-protocol ``comparisons`` (summary, Kruskal-Wallis,
        Dunn), ``status_counts`` and ``paths``.
    """
    from ..interpret import compute_feature_statistics, explain_and_score, write_feature_browser

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backend = make_backend(endpoint, model_name, api_key, cache_dir=out / "llm-cache")
    n_components = min(est.components_.shape[0] for est in fitted.values())
    rng = np.random.default_rng(random_state)
    latents = np.sort(rng.choice(n_components, min(n_latents, n_components), replace=False))
    min_firing = dict(min_firing or {})
    per_method, rows, status_counts, paths = {}, [], {}, {}
    for method, estimator in fitted.items():
        say(f"interpret {method}: feature statistics over {X.shape[0]} tokens",
            progress=progress)
        stats = compute_feature_statistics(estimator, X, metadata, vocabulary=vocabulary,
                                           W_U=W_U, random_state=random_state)
        per_method[method] = {}
        for protocol in PROTOCOL_NAMES:
            say(f"interpret {method}: {protocol} protocol on {len(latents)} latents "
                f"({getattr(backend, 'name', type(backend).__name__)})", progress=progress)
            result = explain_and_score(stats, backend, protocol=protocol, latents=latents,
                                       min_firing=min_firing.get(protocol),
                                       random_state=random_state)
            per_method[method][protocol] = result
            rows.extend(_as_rows(method, result))
            for status in result["status"]:
                key = f"{method}/{protocol}/{status.split(':')[0]}"
                status_counts[key] = status_counts.get(key, 0) + 1
        page = out / f"{method}.html"
        write_feature_browser(stats, page, title=f"{method}: feature browser",
                              results=[per_method[method][p] for p in PROTOCOL_NAMES])
        paths[f"browser_{method}"] = str(page)
    _write_rows(out / "scores.csv", rows)
    panels = {
        "paper protocol, detection (macro F1)": f1_samples(per_method, "paper"),
        "delphi protocol, detection (positive-class F1)": f1_samples(per_method, "delphi"),
        "delphi protocol, fuzzing (positive-class F1)": f1_samples(per_method, "delphi",
                                                                   "fuzzing"),
    }
    comparisons, texts = {}, []
    for label, samples in panels.items():
        report = compare(samples, random_state=random_state, n_resamples=n_resamples)
        comparisons[label] = report
        texts.append(format_comparison(report, label))
    try:
        plotted = plot_f1(panels, out / "f1_violin.png")
        if plotted is not None:
            paths["f1_plot"] = str(plotted)
    except ImportError:
        say("matplotlib is not installed: no F1 plot", progress=progress)
    text = "\n\n".join(texts)
    (out / "comparison.txt").write_text(text + "\n")
    index = out / "index.html"
    index.write_text(_index_html(texts, list(fitted), "sparsegap activations --interpret"))
    paths.update(interpret_index=str(index), scores=str(out / "scores.csv"),
                 comparison=str(out / "comparison.txt"))
    record = {"backend": getattr(backend, "name", type(backend).__name__),
              "latents": latents.tolist(), "comparisons": comparisons,
              "status_counts": status_counts, "text": text, "paths": paths}
    if hasattr(backend, "client"):
        record["usage"] = dict(backend.client.usage)
    with open(out / "comparison.json", "w") as handle:
        json.dump({k: v for k, v in record.items() if k != "paths"}, handle, indent=2,
                  default=float)
        handle.write("\n")
    return record
