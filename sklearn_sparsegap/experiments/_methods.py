"""The methods compared by ``sparsegap compare`` and by ``benchmarks/``: one definition each.

A method is a name (``"sae"``, ``"mlp"``, ``"sparse-coding"``, ...), a scenario (what is
known: nothing, the dictionary, or the codes) and a flavour: ``"library"`` (the estimators'
own defaults) or ``"paper"`` (the settings of the authors' code for the paper's §4:
per-entry L1 penalty 0.01, Adam at 1e-3, no biases, exp-parametrised Adam sparse coding and
ITO). :func:`build_method` returns the unfitted estimator; the command line and every
benchmark call it, so a method means the same thing everywhere.

What the ``"paper"`` flavour keeps different from the authors' code: encoders start as the
decoder's transpose instead of a random matrix (on known codes the output layer starts at
the regression onto the codes), known-codes training uses the per-sample cosine loss the
paper writes, and Adam on the per-sample objective equals theirs up to Adam's epsilon
(docs/results.md discusses each).
"""

from .._baselines import LarsDictionaryLearning
from .._ito import SAEPlusITO
from .._metrics import paper_l1_to_alpha
from .._sae import MLPEncoder, SAEEncoder
from .._sparse_coding import GradientSparseCoder

SCENARIOS = ("unknown", "known-dictionary", "known-codes")
FLAVOURS = ("library", "paper")
METHODS = ("sae", "topk-sae", "jumprelu-sae", "mlp", "sparse-coding", "sae+ito", "lars")
# The methods of ``sparsegap compare``, in the order of its table.
COMPARE_METHODS = ("sae", "mlp", "sparse-coding", "sae+ito", "lars")

# The authors' settings (their code for the paper's §4): per-entry L1 penalty, Adam's
# learning rate, and the Adam steps of test-time inference for sparse coding and SAE+ITO.
PAPER_L1 = 0.01
PAPER_LEARNING_RATE = 1e-3
PAPER_ITO_ITER = 10_000

# SAEPlusITO's settings in the synthetic experiments (its defaults before they were chosen
# for real activations): FISTA from the SAE codes at this fraction of the SAE's alpha,
# 500 iterations, the decoder bias refitted, each sample keeping the codes of lower
# objective (no guard from a zero start). Written out so the recorded numbers stay put.
SYNTHETIC_ITO_ALPHA_FRACTION = 0.025
SYNTHETIC_ITO_MAX_ITER = 500

# Scenarios a method cannot run: sparse coding and LARS learn no encoder to train on known
# codes; the LARS adapter has no fixed-dictionary mode.
UNSUPPORTED = {
    "known-codes": frozenset({"sparse-coding", "lars"}),
    "known-dictionary": frozenset({"lars"}),
}
_ENCODERS = ("sae", "topk-sae", "jumprelu-sae", "mlp")


def supports(method, scenario):
    """Whether ``method`` can run ``scenario``."""
    return method not in UNSUPPORTED.get(scenario, ())


def paper_alpha(n_features, n_components, l1_penalty=PAPER_L1):
    """The library ``alpha`` equivalent to the paper's per-entry L1 penalty."""
    return paper_l1_to_alpha(l1_penalty, n_features, n_components)


def synthetic_ito_params(encoder_alpha, **params):
    """:class:`SAEPlusITO` parameters of the synthetic experiments, updated by ``params``.

    The settings of ``SYNTHETIC_ITO_*`` (``transform_alpha`` is
    ``SYNTHETIC_ITO_ALPHA_FRACTION * encoder_alpha``), ``refit_intercept=True`` and
    ``guard="objective"`` (None when ``params`` has ``init="zeros"``, the authors' cold
    start); ``params`` win.
    """
    resolved = {
        "transform_algorithm": "fista",
        "transform_alpha": SYNTHETIC_ITO_ALPHA_FRACTION * float(encoder_alpha),
        "transform_max_iter": SYNTHETIC_ITO_MAX_ITER,
        "refit_intercept": True,
        **params,
    }
    resolved.setdefault("guard", None if resolved.get("init") == "zeros" else "objective")
    return resolved


def build_method(
    method,
    *,
    n_components,
    n_features,
    n_nonzero_coefs,
    dictionary=None,
    scenario="unknown",
    flavour="library",
    random_state=0,
    max_iter=None,
    l1_penalty=PAPER_L1,
    ito=None,
    device="auto",
    **params,
):
    """An unfitted estimator for ``method`` in ``scenario``.

    Parameters
    ----------
    method : str
        One of ``METHODS``. ``"sae+ito"`` wraps the SAE of the same flavour in
        :class:`SAEPlusITO`; ``"topk-sae"`` is a TopK SAE keeping ``n_nonzero_coefs``.
    n_components : int
        Number of atoms the model learns (the true number in the known-codes scenario).
    n_features : int
        Signal dimension (sets the paper flavour's ``alpha``).
    n_nonzero_coefs : int
        True number of non-zeros per code (the TopK SAE's k).
    dictionary : ndarray of shape (n_components, n_features) or None
        The true dictionary; required and held fixed in the known-dictionary scenario.
    scenario : {"unknown", "known-dictionary", "known-codes"}
        What is known besides the signals.
    flavour : {"library", "paper"}
        The estimators' defaults, or the authors' settings.
    random_state : int
        Seed of the estimator.
    max_iter : int or None
        Training budget (steps or outer iterations); None keeps the flavour's.
    l1_penalty : float
        The paper's per-entry L1 penalty; sets ``alpha`` in the paper flavour.
    ito : dict or None
        :class:`SAEPlusITO` parameters for ``"sae+ito"``, applied last.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"`` (not used by LARS).
    **params
        Further parameters of the estimator (of the encoder for ``"sae+ito"``), applied last.

    Returns
    -------
    estimator : estimator object
        Unfitted.
    """
    _check_method(method, scenario, flavour, dictionary)
    paper = flavour == "paper"
    alpha = paper_alpha(n_features, n_components, l1_penalty)
    if method == "sae+ito":
        encoder = build_method(
            "sae", n_components=n_components, n_features=n_features,
            n_nonzero_coefs=n_nonzero_coefs, dictionary=dictionary, scenario=scenario,
            flavour=flavour, random_state=random_state, max_iter=max_iter,
            l1_penalty=l1_penalty, device=device, **params,
        )  # fmt: skip
        return _ito_method(encoder, paper=paper, alpha=alpha, device=device, ito=ito)
    common = {"random_state": random_state}
    if max_iter is not None:
        common["max_iter"] = max_iter
    if method == "lars":
        # scikit-learn's DictionaryLearning runs on the CPU only.
        return LarsDictionaryLearning(n_components=n_components, **{**common, **params})
    common["device"] = device
    if scenario == "known-dictionary":
        common["dictionary"] = dictionary
    else:
        common["n_components"] = n_components
    if method == "sparse-coding":
        if paper:
            common.update(fit_algorithm="adam", alpha=alpha, learning_rate=PAPER_LEARNING_RATE,
                          transform_max_iter=PAPER_ITO_ITER, tol=0.0)  # fmt: skip
        return GradientSparseCoder(**{**common, **params})
    common.update(_encoder_params(method, scenario, n_nonzero_coefs, paper=paper, alpha=alpha))
    cls = MLPEncoder if method == "mlp" else SAEEncoder
    return cls(**{**common, **params})


def _check_method(method, scenario, flavour, dictionary):
    """The ``ValueError`` of :func:`build_method`'s arguments, if any."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}; got {scenario!r}.")
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}; got {flavour!r}.")
    if not supports(method, scenario):
        raise ValueError(f"method {method!r} cannot run the {scenario} scenario.")
    if scenario == "known-dictionary" and dictionary is None:
        raise ValueError("the known-dictionary scenario needs the dictionary.")


def _ito_method(encoder, *, paper, alpha, device, ito):
    """:class:`SAEPlusITO` on ``encoder``: the synthetic recipe, with the authors' Adam
    ITO in the paper flavour; ``ito`` wins."""
    ito_params = {"device": device}
    if paper:
        ito_params.update(
            transform_algorithm="adam", transform_max_iter=PAPER_ITO_ITER, transform_alpha=alpha
        )
    ito_params = synthetic_ito_params(encoder.alpha, **{**ito_params, **(ito or {})})
    return SAEPlusITO(encoder, **ito_params)


def _encoder_params(method, scenario, n_nonzero_coefs, *, paper, alpha):
    """The parameters that make an SAE/MLP encoder ``method`` in ``scenario``: the
    activation, the known-codes target, and the authors' settings in the paper flavour."""
    params = {}
    if scenario == "known-codes":
        params["target"] = "codes"
    if method == "topk-sae":
        params.update(activation="topk", n_nonzero_coefs=n_nonzero_coefs)
    elif method == "jumprelu-sae":
        params["activation"] = "jumprelu"
    if paper:
        params.update(
            alpha=alpha,
            learning_rate=PAPER_LEARNING_RATE,
            # The authors' known-codes encoder is nn.Linear with its default bias.
            fit_intercept=scenario == "known-codes",
            # The paper trains on its unit-scale data as generated.
            scale_input=False,
        )
        if scenario == "known-codes":
            params["rescale_codes"] = False
    return params


# ---------------------------------------------------------------------------------------
# Methods of ``sparsegap activations`` (the paper's §5 on a real model). Inputs are scaled
# so the mean squared row norm equals n_features before any method sees them, so these
# settings do not depend on the model's activation scale. Every method is compared at the
# same sparsity, L0 = ACTIVATION_K: the SAE and the MLP encoder are TopK with k = 32 (an
# L1 SAE at the library's defaults collapsed to all-zero codes on SmolLM2's residual
# stream); sparse coding learns its dictionary by minibatch dictionary learning with OMP
# codes of exactly k non-zeros, and encodes with the same OMP; SAE+ITO takes the SAE the
# experiment fitted (prefit) and refits each token's codes with OMP at that token's own
# SAE L0, keeping the SAE's codes wherever OMP is not better (the "l0" guard), so it is
# reported at the SAE's L0 and never loses to it (docs/wild.rst has the measurements).
ACTIVATION_METHODS = ("sae", "mlp", "sparse-coding", "sae+ito")
ACTIVATION_K = 32
# Training budgets: epochs, minibatch and learning rate of the encoders; epochs and
# training tokens of sparse coding (every epoch runs OMP on every training token).
# Sized for 2 CPU cores; see docs/wild.rst for what they cost.
ACTIVATION_BUDGETS = {
    "default": {"epochs": 5, "batch_size": 1024, "learning_rate": 1e-3,
                "sc_epochs": 2, "sc_samples": 16384},
    "quick": {"epochs": 3, "batch_size": 128, "learning_rate": 3e-3,
              "sc_epochs": 1, "sc_samples": 512},
}


def activation_k(n_components, n_features=None, n_nonzero_coefs=ACTIVATION_K):
    """The L0 every method of ``sparsegap activations`` is held to.

    ``n_nonzero_coefs`` capped at ``n_components`` and, when ``n_features`` is given, at
    ``n_features // 2`` (OMP needs k <= n_features).
    """
    k = min(n_nonzero_coefs, n_components)
    if n_features is not None:
        k = max(1, min(k, n_features // 2))
    return k


def build_activation_method(
    method, *, n_components, n_features=None, n_nonzero_coefs=ACTIVATION_K, budget="default",
    random_state=0, device="auto", encoder=None,
):
    """An unfitted estimator of ``sparsegap activations`` (inputs scaled, see above).

    Parameters
    ----------
    method : str
        One of ``ACTIVATION_METHODS``.
    n_components : int
        Number of latents (expansion factor times the model's width).
    n_features : int or None
        The model's width; caps k at ``n_features // 2`` (OMP needs k <= n_features).
    n_nonzero_coefs : int
        The L0 every method is held to: k of the TopK SAE and MLP encoder and of
        sparse coding's OMP (:func:`activation_k`).
    budget : {"default", "quick"}
        Training budget (``"quick"``: a smoke run for tests).
    random_state : int
        Seed.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    encoder : SAEEncoder or None
        For ``"sae+ito"``: the fitted SAE to refine (``prefit=True``, nothing is
        retrained). None wraps an unfitted SAE of the ``"sae"`` settings, which
        ``fit`` trains.

    Returns
    -------
    estimator : estimator object
        Unfitted (``"sae+ito"`` with ``encoder``: its ``fit`` only sets up the
        refinement).

    Examples
    --------
    >>> from sklearn_sparsegap.experiments._methods import build_activation_method
    >>> coder = build_activation_method("sparse-coding", n_components=2304, n_features=576)
    >>> coder.fit_algorithm, coder.transform_n_nonzero_coefs
    ('omp', 32)
    """
    if method not in ACTIVATION_METHODS:
        raise ValueError(
            f"method must be one of {', '.join(ACTIVATION_METHODS)}; got {method!r}."
        )
    if budget not in ACTIVATION_BUDGETS:
        raise ValueError(f"budget must be one of {sorted(ACTIVATION_BUDGETS)}; got {budget!r}.")
    if encoder is not None and method != "sae+ito":
        raise ValueError(f"encoder is only used by method 'sae+ito', not {method!r}.")
    settings = ACTIVATION_BUDGETS[budget]
    k = activation_k(n_components, n_features, n_nonzero_coefs)
    params = {
        "n_components": n_components, "activation": "topk", "n_nonzero_coefs": k,
        "alpha": 0.0, "max_iter": settings["epochs"], "batch_size": settings["batch_size"],
        "learning_rate": settings["learning_rate"], "random_state": random_state,
        "device": device,
    }
    if method == "sae":
        return SAEEncoder(**params)
    if method == "mlp":
        # The paper's MLP: one hidden layer of half the number of latents.
        return MLPEncoder(hidden_layer_sizes=(max(1, n_components // 2),), **params)
    if method == "sae+ito":
        # transform_n_nonzero_coefs=None: each token's budget is its own SAE L0, and the
        # default "l0" guard keeps the SAE's codes wherever OMP's are not better.
        if encoder is None:
            return SAEPlusITO(SAEEncoder(**params), transform_algorithm="omp", device=device)
        return SAEPlusITO(encoder, prefit=True, transform_algorithm="omp", device=device)
    return GradientSparseCoder(
        n_components=n_components, fit_algorithm="omp", transform_algorithm="omp",
        transform_n_nonzero_coefs=k, batch_size=settings["batch_size"],
        max_iter=settings["sc_epochs"], random_state=random_state, device=device,
    )
