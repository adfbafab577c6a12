"""The methods, on a benchmark :class:`~_bench.datasets.Task`.

Every method is defined once, in ``sklearn_sparsegap._methods`` (which ``sparsegap
compare`` uses too); :func:`build` only reads the task's sizes and dictionary. Two
flavours: ``"paper"`` (the authors' code settings, paper App. B) and ``"library"`` (the
estimators' own defaults).
"""

from sklearn_sparsegap._methods import (
    FLAVOURS,
    METHODS,
    PAPER_ITO_ITER,
    PAPER_L1,
    PAPER_LEARNING_RATE,
    SCENARIOS,
    build_method,
)
from sklearn_sparsegap._methods import paper_alpha as _paper_alpha

__all__ = [
    "FLAVOURS", "METHODS", "PAPER_ITO_ITER", "PAPER_L1", "PAPER_LEARNING_RATE", "SCENARIOS",
    "build", "paper_alpha",
]  # fmt: skip


def paper_alpha(task, l1_penalty=PAPER_L1, n_components=None):
    """The library ``alpha`` equivalent to the paper's per-entry L1 penalty on ``task``."""
    n_components = task.n_components if n_components is None else n_components
    return _paper_alpha(task.n_features, n_components, l1_penalty)


def build(
    method,
    task,
    *,
    scenario="unknown",
    flavour="library",
    seed=0,
    steps=None,
    l1_penalty=PAPER_L1,
    n_components=None,
    ito=None,
    **params,
):
    """An unfitted estimator for ``method`` on ``task``: ``build_method`` with the task's
    sizes and dictionary, ``random_state=seed`` and ``max_iter=steps``.

    ``n_components`` overrides the model size (over/under-complete runs; the known-codes
    scenario always uses the true one); ``params`` are further estimator parameters.
    """
    if n_components is None or scenario == "known-codes":
        n_components = task.n_components
    return build_method(
        method,
        n_components=n_components,
        n_features=task.n_features,
        n_nonzero_coefs=task.n_nonzero_coefs,
        dictionary=task.dictionary,
        scenario=scenario,
        flavour=flavour,
        random_state=seed,
        max_iter=steps,
        l1_penalty=l1_penalty,
        ito=ito,
        **params,
    )
