"""Comparing interpretability scores across methods, as the paper's §5 reports them.

Medians with bootstrap confidence intervals (``scipy.stats.bootstrap``), the
Kruskal-Wallis H test across methods (``scipy.stats.kruskal``) and Dunn's pairwise
post-hoc test on the pooled ranks with tie correction and Bonferroni adjustment (a short
implementation: scikit-posthocs provides it but brings pandas, statsmodels and seaborn).
"""

import itertools

import numpy as np
from scipy import stats as scipy_stats

__all__ = ["compare_methods", "dunn_test", "plot_score_distributions"]


def _clean_samples(samples):
    if not hasattr(samples, "items"):
        raise ValueError(
            "samples must be a dict mapping method name -> 1-D array of scores, got "
            f"{type(samples).__name__}."
        )
    if len(samples) < 2:
        raise ValueError(f"samples must hold at least 2 methods, got {len(samples)}.")
    cleaned, dropped = {}, {}
    for name, values in samples.items():
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"samples[{name!r}] must be 1-D, got shape {values.shape}.")
        if np.isinf(values).any():
            raise ValueError(f"samples[{name!r}] contains infinite values.")
        finite = values[~np.isnan(values)]
        if len(finite) == 0:
            raise ValueError(
                f"samples[{name!r}] has no scored values (all NaN: dead or unscored "
                "latents)."
            )
        cleaned[name], dropped[name] = finite, int(len(values) - len(finite))
    return cleaned, dropped


def dunn_test(samples, *, p_adjust="bonferroni"):
    """Run Dunn's pairwise test of stochastic dominance after a Kruskal-Wallis test.

    Ranks all values together (ties get average ranks), compares the mean ranks of each
    pair of groups with the tie-corrected standard error
    ``sqrt((N (N + 1) / 12 - sum(t**3 - t) / (12 (N - 1))) (1 / n_i + 1 / n_j))``,
    and returns two-sided p-values, Bonferroni-adjusted by default (multiplied by the
    number of pairs, capped at 1).

    Parameters
    ----------
    samples : dict of str -> array-like
        Scores per group; NaN values (unscored latents) are dropped.
    p_adjust : {"bonferroni", None}, default="bonferroni"
        Multiple-comparison adjustment.

    Returns
    -------
    table : dict of lists
        One entry per pair: ``group_a``, ``group_b``, ``mean_rank_a``, ``mean_rank_b``,
        ``z`` (positive when ``group_a`` ranks higher), ``p_value`` (unadjusted) and
        ``p_adjusted``.

    Examples
    --------
    >>> from sklearn_sparsegap.interpret import dunn_test
    >>> table = dunn_test({"a": [1, 2, 3, 5, 1], "b": [12, 31, 54, 62, 12],
    ...                    "c": [10, 12, 6, 74, 11]})
    >>> [round(p, 4) for p in table["p_adjusted"]]
    [0.0053, 0.083, 1.0]
    """
    if p_adjust not in ("bonferroni", None):
        raise ValueError(f"p_adjust must be 'bonferroni' or None, got {p_adjust!r}.")
    cleaned, _ = _clean_samples(samples)
    names = list(cleaned)
    pooled = np.concatenate([cleaned[name] for name in names])
    n_total = len(pooled)
    if n_total < 3:
        raise ValueError("dunn_test needs at least 3 values in total.")
    ranks = scipy_stats.rankdata(pooled)
    _, tie_counts = np.unique(pooled, return_counts=True)
    tie_term = np.sum(tie_counts**3 - tie_counts) / (12.0 * (n_total - 1))
    variance = n_total * (n_total + 1) / 12.0 - tie_term
    bounds = np.cumsum([0] + [len(cleaned[name]) for name in names])
    mean_ranks = {
        name: ranks[bounds[i] : bounds[i + 1]].mean() for i, name in enumerate(names)
    }
    pairs = list(itertools.combinations(names, 2))
    table = {key: [] for key in ("group_a", "group_b", "mean_rank_a", "mean_rank_b",
                                 "z", "p_value", "p_adjusted")}
    for a, b in pairs:
        scale = np.sqrt(variance * (1 / len(cleaned[a]) + 1 / len(cleaned[b])))
        z = (mean_ranks[a] - mean_ranks[b]) / scale if scale > 0 else 0.0
        p = float(2 * scipy_stats.norm.sf(abs(z)))
        table["group_a"].append(a)
        table["group_b"].append(b)
        table["mean_rank_a"].append(float(mean_ranks[a]))
        table["mean_rank_b"].append(float(mean_ranks[b]))
        table["z"].append(float(z))
        table["p_value"].append(p)
        table["p_adjusted"].append(min(1.0, p * len(pairs)) if p_adjust else p)
    return table


def compare_methods(
    samples, *, confidence_level=0.95, n_resamples=9999, random_state=0
):
    """Summarise and compare per-latent scores (e.g. F1) of several methods.

    Parameters
    ----------
    samples : dict of str -> array-like
        Per-latent scores of each method; NaN (dead or unscored latents) are dropped
        and counted.
    confidence_level : float, default=0.95
        Of the bootstrap interval of each median.
    n_resamples : int, default=9999
        Bootstrap resamples (``scipy.stats.bootstrap``, BCa intervals).
    random_state : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    report : dict
        ``summary`` (dict of lists: ``method``, ``n``, ``n_dropped``, ``median``,
        ``ci_low``, ``ci_high``, ``mean``), ``kruskal`` (``statistic`` H, ``p_value``)
        and ``dunn`` (the :func:`dunn_test` table, Bonferroni-adjusted).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap.interpret import compare_methods
    >>> rng = np.random.default_rng(0)
    >>> report = compare_methods({"mlp": rng.uniform(0.6, 1.0, 50),
    ...                           "sae": rng.uniform(0.4, 0.8, 50)}, n_resamples=999)
    >>> report["summary"]["method"]
    ['mlp', 'sae']
    >>> bool(report["kruskal"]["p_value"] < 0.01)
    True
    """
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}.")
    cleaned, dropped = _clean_samples(samples)
    rng = np.random.default_rng(random_state)
    summary = {key: [] for key in ("method", "n", "n_dropped", "median", "ci_low",
                                   "ci_high", "mean")}
    for name, values in cleaned.items():
        if len(values) > 1 and np.ptp(values) > 0:
            interval = scipy_stats.bootstrap(
                (values,), np.median, confidence_level=confidence_level,
                n_resamples=n_resamples, method="BCa", random_state=rng,
            ).confidence_interval
            low, high = float(interval.low), float(interval.high)
            if not np.isfinite(low) or not np.isfinite(high):  # BCa can degenerate
                interval = scipy_stats.bootstrap(
                    (values,), np.median, confidence_level=confidence_level,
                    n_resamples=n_resamples, method="percentile", random_state=rng,
                ).confidence_interval
                low, high = float(interval.low), float(interval.high)
        else:  # one value or all equal: the interval is that value
            low = high = float(values[0])
        summary["method"].append(name)
        summary["n"].append(len(values))
        summary["n_dropped"].append(dropped[name])
        summary["median"].append(float(np.median(values)))
        summary["ci_low"].append(low)
        summary["ci_high"].append(high)
        summary["mean"].append(float(np.mean(values)))
    pooled = np.concatenate(list(cleaned.values()))
    if np.ptp(pooled) == 0:
        kruskal = {"statistic": 0.0, "p_value": 1.0}
    else:
        result = scipy_stats.kruskal(*cleaned.values())
        kruskal = {"statistic": float(result.statistic), "p_value": float(result.pvalue)}
    return {"summary": summary, "kruskal": kruskal, "dunn": dunn_test(cleaned)}


def plot_score_distributions(samples, *, ax=None, kind="violin", ylabel="F1"):
    """Draw per-method score distributions, like the paper's Figure 7.

    Parameters
    ----------
    samples : dict of str -> array-like
        Per-latent scores of each method (NaN dropped).
    ax : matplotlib Axes, default=None
        Where to draw; a new figure by default.
    kind : {"violin", "box"}, default="violin"
        Violins (with medians marked) or box plots.
    ylabel : str, default="F1"
        Label of the score axis.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_sparsegap.interpret import plot_score_distributions
    >>> ax = plot_score_distributions({"mlp": [0.9, 0.8, 0.85], "sae": [0.6, 0.5, 0.7]})
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['mlp', 'sae']
    """
    if kind not in ("violin", "box"):
        raise ValueError(f"kind must be 'violin' or 'box', got {kind!r}.")
    cleaned, _ = _clean_samples(samples)
    import matplotlib.pyplot as plt  # lazily: plotting is optional

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.2 * len(cleaned), 3.2))
    names = list(cleaned)
    positions = np.arange(1, len(names) + 1)
    data = [cleaned[name] for name in names]
    if kind == "violin":
        ax.violinplot(data, positions=positions, showmedians=True, showextrema=False)
    else:
        ax.boxplot(data, positions=positions)
    ax.set_xticks(positions, names)
    ax.set_ylabel(ylabel)
    return ax
