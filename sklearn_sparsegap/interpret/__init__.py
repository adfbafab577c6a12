"""Interpretability evaluation of sparse codes on real activations.

Feature statistics streamed over an activation set, a self-contained static HTML feature
browser, automated explanations scored by detection / fuzzing (the paper's protocol and
EleutherAI delphi's), with an OpenAI-compatible LLM back end or an offline N-gram one, and
the method-comparison statistics the paper reports (medians with bootstrap intervals,
Kruskal-Wallis, Dunn's test with Bonferroni correction).
"""

from ._clients import BackendError, LLMExplainer, NGramExplainer, OpenAICompatibleClient
from ._browser import write_feature_browser
from ._features import FeatureStatistics, TokenVocabulary, compute_feature_statistics
from ._protocols import detection_metrics, explain_and_score
from ._statistics import compare_methods, dunn_test, plot_score_distributions

__all__ = sorted(
    [
        "BackendError",
        "FeatureStatistics",
        "LLMExplainer",
        "NGramExplainer",
        "OpenAICompatibleClient",
        "TokenVocabulary",
        "compare_methods",
        "compute_feature_statistics",
        "detection_metrics",
        "dunn_test",
        "explain_and_score",
        "plot_score_distributions",
        "write_feature_browser",
    ]
)
