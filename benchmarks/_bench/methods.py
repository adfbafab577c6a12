"""The methods, configured in one of two flavours.

``"paper"``  the authors' code settings (reference/protocol.md §1): per-entry L1 penalty
             0.01 (``alpha = paper_l1_to_alpha(0.01, M, N)``), Adam at 1e-3, no biases,
             exp-parametrised Adam sparse coding and ITO. What differs from their code
             (and stays different): our encoders start as the decoder's transpose instead
             of a random matrix (on known codes, the output layer starts at the
             regression onto the codes: least squares for a linear encoder, ridge for
             an MLP), known-codes training uses the per-sample cosine loss the paper
             writes (their code uses a column-wise cosine) and returns the encoder's
             output unscaled (``rescale_codes=False``), and Adam on our per-sample
             objective equals theirs up to Adam's epsilon.
``"library"`` the estimators' own defaults (chosen in issues 3 and 4 by measured quality).

``build(method, task, ...)`` returns an unfitted estimator; ``steps`` sets the training
budget (``max_iter``) where the method trains by steps.
"""

from sklearn_sparsegap import (
    GradientSparseCoder,
    LarsDictionaryLearning,
    MLPEncoder,
    SAEEncoder,
    SAEPlusITO,
    paper_l1_to_alpha,
)

PAPER_L1 = 0.01
PAPER_LEARNING_RATE = 1e-3
# Test-code inference of the authors' sparse coding and SAE+ITO (10k Adam steps at 3e-3).
PAPER_ITO_ITER = 10_000
SCENARIOS = ("unknown", "known-dictionary", "known-codes")
FLAVOURS = ("paper", "library")
METHODS = ("sae", "topk-sae", "jumprelu-sae", "mlp", "sparse-coding", "sae+ito", "lars")


def paper_alpha(task, l1_penalty=PAPER_L1, n_components=None):
    """The library ``alpha`` equivalent to the paper's per-entry L1 penalty."""
    n_components = task.n_components if n_components is None else n_components
    return paper_l1_to_alpha(l1_penalty, task.n_features, n_components)


def _scenario_params(task, scenario, n_components):
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}.")
    if scenario == "known-dictionary":
        return {"dictionary": task.dictionary}
    if scenario == "known-codes":
        return {"n_components": task.n_components, "target": "codes"}
    return {"n_components": n_components}


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
    """An unfitted estimator for ``method`` on ``task``.

    Parameters
    ----------
    method : str
        One of ``METHODS``. ``"sae+ito"`` wraps the SAE of the same flavour.
    task : Task
        The data (its dictionary is used in the known-dictionary scenario).
    scenario : str
        ``"unknown"``, ``"known-dictionary"`` or ``"known-codes"``.
    flavour : {"paper", "library"}
        The authors' settings or the library defaults.
    seed : int
        ``random_state``.
    steps : int or None
        ``max_iter`` (training steps / outer iterations); None keeps the flavour's.
    l1_penalty : float
        The paper's per-entry penalty; sets ``alpha`` in the paper flavour (the library
        flavour keeps its default ``alpha`` unless ``params`` gives one).
    n_components : int or None
        Model size when it differs from the true one (over/under-complete runs).
    ito : dict or None
        SAEPlusITO parameters for ``"sae+ito"`` (``transform_algorithm``, ``init``, ...).
    **params
        Further estimator parameters (``hidden_layer_sizes``, ``alpha``, ``k``,
        ``learning_rate``, ``fit_intercept`` ...), applied last.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    n_components = task.n_components if n_components is None else n_components
    paper = flavour == "paper"
    alpha = paper_alpha(task, l1_penalty, n_components)
    common = {"random_state": seed}
    if steps is not None and method not in ("lars", "sae+ito"):
        common["max_iter"] = steps

    if method == "sae+ito":
        encoder = build(
            "sae", task, scenario=scenario, flavour=flavour, seed=seed, steps=steps,
            l1_penalty=l1_penalty, n_components=n_components, **params,
        )  # fmt: skip
        ito_params = (
            {"transform_algorithm": "adam", "transform_max_iter": PAPER_ITO_ITER, "transform_alpha": alpha}
            if paper
            else {}
        )
        return SAEPlusITO(encoder, **{**ito_params, **(ito or {})})

    if method in ("sae", "topk-sae", "jumprelu-sae", "mlp"):
        estimator_params = {**common, **_scenario_params(task, scenario, n_components)}
        if method == "topk-sae":
            estimator_params.update(activation="topk", n_nonzero_coefs=task.n_nonzero_coefs)
        elif method == "jumprelu-sae":
            estimator_params["activation"] = "jumprelu"
        if paper:
            estimator_params.update(
                alpha=alpha,
                learning_rate=PAPER_LEARNING_RATE,
                # The authors' known-codes encoder is nn.Linear with its default bias.
                fit_intercept=scenario == "known-codes",
            )
            if scenario == "known-codes":
                estimator_params["rescale_codes"] = False
        cls = MLPEncoder if method == "mlp" else SAEEncoder
        return cls(**{**estimator_params, **params})

    if method == "sparse-coding":
        if scenario == "known-codes":
            raise ValueError("sparse coding learns no encoder: it has no known-codes mode.")
        estimator_params = dict(common)
        if scenario == "known-dictionary":
            estimator_params["dictionary"] = task.dictionary
        else:
            estimator_params["n_components"] = n_components
        if paper:
            estimator_params.update(
                fit_algorithm="adam",
                alpha=alpha,
                learning_rate=PAPER_LEARNING_RATE,
                transform_max_iter=PAPER_ITO_ITER,
                tol=0.0,
            )
        return GradientSparseCoder(**{**estimator_params, **params})

    # method == "lars"
    return LarsDictionaryLearning(n_components=n_components, random_state=seed, **params)
