"""Method-comparison statistics: Dunn's test against worked examples, Kruskal-Wallis and
bootstrap intervals against scipy, the Figure-7-style plot."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from sklearn_sparsegap.interpret import compare_methods, dunn_test, plot_score_distributions

# scikit-posthocs' documented example; reference p-values from
# scikit_posthocs.posthoc_dunn 0.17.1 (p_adjust="bonferroni" and unadjusted).
DOC_EXAMPLE = {"a": [1, 2, 3, 5, 1], "b": [12, 31, 54, 62, 12], "c": [10, 12, 6, 74, 11]}
DOC_BONFERRONI = [0.00532956, 0.08302074, 1.0]
DOC_UNADJUSTED = [0.00177652, 0.02767358, 0.35581429]
# Heavily tied integer scores (tie correction matters), same reference implementation.
TIED = {
    "a": [2, 2, 3, 4, 0, 0, 4, 4, 1, 1, 4, 2, 1, 4, 1, 2, 3, 2, 0, 0],
    "b": [5, 4, 5, 3, 5, 2, 3, 4, 1, 2, 1, 3, 5, 1, 2],
    "c": [1, 3, 0, 2, 1, 0, 3, 0, 1, 1, 1, 0],
}
TIED_BONFERRONI = [0.18307665, 0.28317662, 0.00372524]


def test_dunn_matches_reference_p_values():
    table = dunn_test(DOC_EXAMPLE)
    assert table["group_a"] == ["a", "a", "b"] and table["group_b"] == ["b", "c", "c"]
    np.testing.assert_allclose(table["p_adjusted"], DOC_BONFERRONI, rtol=1e-6)
    np.testing.assert_allclose(table["p_value"], DOC_UNADJUSTED, rtol=1e-6)
    np.testing.assert_allclose(dunn_test(TIED)["p_adjusted"], TIED_BONFERRONI, rtol=1e-6)
    # Mean ranks of the pooled sample: group a holds the five smallest values.
    assert table["mean_rank_a"][0] == 3.0 and table["z"][0] < 0


def test_dunn_agrees_with_scikit_posthocs_when_installed():
    posthocs = pytest.importorskip("scikit_posthocs")
    rng = np.random.default_rng(3)
    samples = {name: np.round(rng.uniform(lo, 1, size=n), 1)
               for name, lo, n in (("sae", 0.3, 40), ("mlp", 0.5, 35), ("lca", 0.3, 30))}
    expected = posthocs.posthoc_dunn(list(samples.values()), p_adjust="bonferroni").values
    table = dunn_test(samples)
    index = {name: i for i, name in enumerate(samples)}
    for a, b, p in zip(table["group_a"], table["group_b"], table["p_adjusted"]):
        assert p == pytest.approx(expected[index[a], index[b]], rel=1e-9)


def test_compare_methods_summary_kruskal_and_dropped_nans():
    rng = np.random.default_rng(0)
    high = rng.uniform(0.6, 1.0, 80)
    low = np.r_[rng.uniform(0.3, 0.7, 60), [np.nan] * 5]
    report = compare_methods({"mlp": high, "sae": low}, n_resamples=2000)
    summary = report["summary"]
    assert summary["n"] == [80, 60] and summary["n_dropped"] == [0, 5]
    assert summary["median"][0] == pytest.approx(np.median(high))
    for median, lo, hi in zip(summary["median"], summary["ci_low"], summary["ci_high"]):
        assert lo < median < hi and hi - lo < 0.15
    expected = scipy_stats.kruskal(high, low[~np.isnan(low)])
    assert report["kruskal"]["statistic"] == pytest.approx(expected.statistic)
    assert report["dunn"]["p_adjusted"][0] < 1e-6


def test_bootstrap_interval_covers_the_true_median():
    # Uniform(0, 1) scores: true median 0.5; 95% intervals from 40 seeds cover it in
    # most of them (binomial: at least 33 of 40 unless coverage is far below 95%).
    covered = 0
    for seed in range(40):
        values = np.random.default_rng(seed).uniform(size=60)
        s = compare_methods({"x": values, "y": values[::-1].copy()},
                            n_resamples=500, random_state=seed)["summary"]
        covered += s["ci_low"][0] <= 0.5 <= s["ci_high"][0]
    assert covered >= 33


def test_constant_and_invalid_inputs():
    report = compare_methods({"a": [1.0, 1.0], "b": [1.0]}, n_resamples=100)
    assert report["kruskal"] == {"statistic": 0.0, "p_value": 1.0}
    assert report["summary"]["ci_low"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="at least 2 methods"):
        compare_methods({"a": [1.0]})
    with pytest.raises(ValueError, match="all NaN"):
        compare_methods({"a": [np.nan], "b": [1.0]})
    with pytest.raises(ValueError, match="p_adjust"):
        dunn_test(DOC_EXAMPLE, p_adjust="holm")


def test_plot_draws_one_violin_per_method():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = plot_score_distributions({"sae": [0.5, 0.6, 0.7], "mlp": [0.8, 0.9, 0.85],
                                   "lca": [0.4, 0.6, np.nan]})
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sae", "mlp", "lca"]
    assert len(ax.collections) >= 3
    box = plot_score_distributions({"a": [1, 2], "b": [2, 3]}, kind="box")
    assert box.get_ylabel() == "F1"
    with pytest.raises(ValueError, match="kind"):
        plot_score_distributions({"a": [1], "b": [2]}, kind="bar")
    matplotlib.pyplot.close("all")
