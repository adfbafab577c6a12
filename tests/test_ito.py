"""SAEPlusITO: amortised codes refined on the frozen dictionary, and the amortisation gap."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_sparsegap import (
    MLPEncoder,
    SAEEncoder,
    SAEPlusITO,
    make_sparse_dictionary_data,
    mean_corr_coef,
)


@pytest.fixture(scope="module")
def data():
    return make_sparse_dictionary_data(1024, random_state=0)


# The FISTA refinement kept per sample by the objective, with a refitted decoder bias (the
# synthetic experiments' settings): most tests below exercise it explicitly.
FISTA = {"transform_algorithm": "fista", "guard": "objective", "refit_intercept": True}


@pytest.fixture(scope="module")
def known(data):
    X, dictionary, _ = data
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    return SAEPlusITO(encoder, transform_alpha=0.01, device="cpu", **FISTA).fit(X)


def test_ito_beats_its_encoder_with_a_known_dictionary(data, known):
    X, dictionary, codes = data
    np.testing.assert_array_equal(known.components_, dictionary)
    sae = mean_corr_coef(codes, known.encoder_.transform(X))
    ito = mean_corr_coef(codes, known.transform(X))
    assert ito > sae + 0.05 and ito > 0.95


def test_amortisation_gap_is_nonnegative_and_matches_objectives(data, known):
    X, _, _ = data
    gaps = known.amortisation_gap(X, per_sample=True)
    assert gaps.shape == (X.shape[0],) and np.all(gaps >= 0)
    assert known.amortisation_gap(X) == pytest.approx(gaps.mean())
    assert known.amortisation_gap(X) > 0
    # The gap is the difference of the scored objectives.
    refined = -known.score(X)
    encoder_codes = known.encoder_.transform(X)
    # The encoder's codes are scored on its own decoder bias.
    residual = X - encoder_codes @ known.components_ - known.encoder_.intercept_
    encoder_objective = np.mean(
        0.5 * np.sum(residual**2, axis=1) + 0.01 * np.abs(encoder_codes).sum(axis=1)
    )
    assert encoder_objective - refined == pytest.approx(known.amortisation_gap(X), rel=1e-6)


def test_init_from_encoder_differs_from_zeros_under_a_small_budget(data, known):
    X, _, _ = data
    warm = known.set_params(transform_max_iter=3, init="encoder").transform(X)
    cold = known.set_params(init="zeros").transform(X)
    known.set_params(transform_max_iter=500, init="encoder")
    assert not np.allclose(warm, cold)


def test_zeros_init_returns_the_cold_start_solver_codes_unchanged(data, known):
    from sklearn_sparsegap import sparse_encode

    X, _, _ = data
    known.set_params(init="zeros", transform_max_iter=3, guard=None)
    try:
        cold = known.transform(X[:200])
        expected = sparse_encode(
            X[:200] - known.intercept_, known.components_, alpha=known._alpha(),
            positive=True, max_iter=3, tol=known.tol, device="cpu",
        )  # fmt: skip
        np.testing.assert_allclose(cold, expected, rtol=1e-6, atol=1e-8)
    finally:
        known.set_params(init="encoder", transform_max_iter=500, guard="objective")


@pytest.mark.parametrize(
    "algorithm", ["fista", "ista", "lca", "paper_lca", "omp", "mp", "gradient_pursuit", "topk", "adam"]
)
def test_every_algorithm_is_never_worse_than_the_encoder(data, known, algorithm):
    X, _, _ = data
    known.set_params(transform_algorithm=algorithm, transform_max_iter=50, transform_n_nonzero_coefs=3)
    try:
        assert np.all(known.amortisation_gap(X[:200], per_sample=True) >= 0)
    finally:
        known.set_params(transform_algorithm="fista", transform_max_iter=500, transform_n_nonzero_coefs=None)


def test_unknown_dictionary_ito_is_not_worse_than_its_sae(data):
    X, dictionary, codes = data
    model = SAEPlusITO(
        SAEEncoder(n_components=16, max_iter=500, random_state=0, device="cpu"), device="cpu",
        **FISTA,
    ).fit(X)
    assert model.score(X) >= model.encoder_.score(X) - 1e-9
    assert model.training_flops_ == model.encoder_.training_flops_
    assert model.inference_flops(10) > model.encoder_.inference_flops(10)


def test_a_frozen_fitted_encoder_is_reused_without_refitting(data):
    from sklearn.frozen import FrozenEstimator

    X, _, _ = data
    sae = SAEEncoder(n_components=16, max_iter=50, random_state=0, device="cpu").fit(X)
    before = sae.components_.copy()
    model = SAEPlusITO(FrozenEstimator(sae), device="cpu", **FISTA).fit(X[:100])
    np.testing.assert_array_equal(model.components_, before)
    assert model.training_flops_ == sae.training_flops_
    assert model.score(X) >= sae.score(X) - 1e-9


def _assert_refined_codes_are_the_solver_codes_where_kept(model, X):
    """Where ITO keeps its refinement (gap > 0) the codes are sparse_encode's on the
    frozen dictionary, warm-started from the encoder; elsewhere the encoder's codes."""
    from sklearn_sparsegap import sparse_encode

    start = np.asarray(model.encoder_.transform(X), dtype=X.dtype)
    expected = sparse_encode(
        X - model.intercept_, model.components_, algorithm=model.transform_algorithm,
        alpha=model.transform_alpha_, positive=model.positive_code,
        max_iter=model.transform_max_iter, tol=model.tol, init=start, device="cpu",
    )  # fmt: skip
    codes = model.transform(X)
    gaps = model.amortisation_gap(X, per_sample=True)
    assert np.all(gaps >= 0)
    kept = gaps > 0
    assert kept.mean() > 0.5
    np.testing.assert_allclose(codes[kept], expected[kept], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(codes[~kept], start[~kept], rtol=1e-7, atol=1e-10)


def test_refined_codes_are_sparse_encode_on_the_frozen_dictionary(data, known):
    X, _, _ = data
    _assert_refined_codes_are_the_solver_codes_where_kept(known, X)


def test_works_with_mlp_and_known_codes_encoders(data):
    X, _, codes = data
    mlp = SAEPlusITO(MLPEncoder(n_components=16, hidden_layer_sizes=(16,), max_iter=20,
                                device="cpu"), transform_alpha=0.01, device="cpu", **FISTA).fit(X)
    _assert_refined_codes_are_the_solver_codes_where_kept(mlp, X[:300])
    supervised = SAEPlusITO(
        SAEEncoder(target="codes", max_iter=20, device="cpu"), transform_alpha=0.01,
        device="cpu", **FISTA,
    ).fit(X, codes)
    _assert_refined_codes_are_the_solver_codes_where_kept(supervised, X[:300])


def test_a_foreign_encoder_goes_through_its_transform(data):
    # scikit-learn's DictionaryLearning has no tensor-level _encode: ITO uses transform.
    from sklearn.decomposition import DictionaryLearning

    X, _, codes = data
    encoder = DictionaryLearning(n_components=16, alpha=0.5, max_iter=5, fit_algorithm="cd",
                                 transform_algorithm="lasso_cd", transform_alpha=0.5,
                                 positive_code=True, random_state=0)  # fmt: skip
    model = SAEPlusITO(encoder, transform_alpha=0.0125, device="cpu", **FISTA).fit(X[:256])
    assert model.transform_alpha_ == 0.0125
    np.testing.assert_array_equal(model.intercept_, np.zeros(8))
    _assert_refined_codes_are_the_solver_codes_where_kept(model, X[:256])


def test_library_encoders_are_encoded_on_tensors_like_their_transform(data, known):
    import torch

    X, _, _ = data
    with torch.no_grad():
        codes = known._encoder_codes(torch.tensor(X))
    np.testing.assert_array_equal(codes.numpy(), known.encoder_.transform(X))


def test_objective_never_worse_than_the_encoder_and_transform_matches_the_gap(data, known):
    import torch
    from sklearn_sparsegap._training import objective

    X, _, _ = data
    codes = known.transform(X)
    start = known.encoder_.transform(X)
    refined = objective(torch.tensor(X), torch.tensor(codes), torch.tensor(known.components_),
                        torch.tensor(known.intercept_), known.transform_alpha_,
                        per_sample=True).numpy()  # fmt: skip
    encoder = objective(torch.tensor(X), torch.tensor(start), torch.tensor(known.components_),
                        torch.tensor(known.encoder_.intercept_), known.transform_alpha_,
                        per_sample=True).numpy()  # fmt: skip
    # Where the encoder's codes are kept they are scored on the encoder's own bias.
    kept_encoder = np.all(codes == start, axis=1)
    refined[kept_encoder] = encoder[kept_encoder]
    assert np.all(refined <= encoder + 1e-12)
    np.testing.assert_allclose(encoder - refined, known.amortisation_gap(X, per_sample=True),
                               atol=1e-12)  # fmt: skip


def test_true_dictionary_refinement_recovers_the_codes(data, known):
    X, _, codes = data
    assert mean_corr_coef(codes, known.transform(X)) > 0.98


def test_transform_alpha_is_resolved_and_positive_code_is_honoured(data):
    X, dictionary, _ = data
    encoder = SAEEncoder(dictionary=dictionary, alpha=0.2, max_iter=50, random_state=0,
                         device="cpu")  # fmt: skip
    model = SAEPlusITO(encoder, device="cpu").fit(X)
    assert model.transform_alpha_ == 0.0  # greedy: no penalty
    assert np.all(model.transform(X) >= 0)
    explicit = SAEPlusITO(encoder, transform_alpha=0.07, device="cpu", **FISTA).fit(X)
    assert explicit.transform_alpha_ == 0.07
    # Without the constraint the lasso's codes go negative on some samples.
    free = SAEPlusITO(encoder, transform_alpha=0.005, positive_code=False, device="cpu",
                      transform_algorithm="fista", guard="objective").fit(X)  # fmt: skip
    assert np.any(free.transform(X) < 0)
    _assert_refined_codes_are_the_solver_codes_where_kept(free, X[:300])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"transform_algorithm": "omp", "transform_n_nonzero_coefs": 9},
         "transform_n_nonzero_coefs"),
        ({"transform_algorithm": "topk", "transform_n_nonzero_coefs": 17},
         "transform_n_nonzero_coefs"),
        ({"transform_alpha": -1.0}, "transform_alpha"),
        ({"transform_max_iter": 0}, "transform_max_iter"),
        ({"positive_code": "yes"}, "positive_code"),
    ],
)
def test_bad_transform_parameters(data, params, match):
    X, dictionary, _ = data
    encoder = SAEEncoder(dictionary=dictionary, max_iter=5, device="cpu")
    with pytest.raises(ValueError, match=match):
        SAEPlusITO(encoder, device="cpu", **params).fit(X[:100])


def test_bad_parameters(data):
    X, _, _ = data
    with pytest.raises(ValueError, match="transform_algorithm"):
        SAEPlusITO(transform_algorithm="lars").fit(X)
    with pytest.raises(ValueError, match="encoder"):
        SAEPlusITO(encoder="sae").fit(X)
    with pytest.raises(ValueError, match="init"):
        SAEPlusITO(init="random").fit(X)


def test_synthetic_refinement_recovers_known_dictionary_codes(data):
    # The synthetic experiments' settings: transform_alpha a fraction of the encoder's
    # alpha and a refitted intercept.
    from sklearn_sparsegap.experiments._methods import synthetic_ito_params

    X, dictionary, codes = data
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    ito = SAEPlusITO(encoder, device="cpu", **synthetic_ito_params(encoder.alpha)).fit(X)
    assert ito.transform_alpha_ == pytest.approx(0.025 * encoder.alpha)
    assert mean_corr_coef(codes, ito.transform(X)) > 0.98


def test_refit_intercept_replaces_the_encoders_shrinkage_compensating_bias(data):
    # The data has no bias; the SAE's learned bias compensates its shrinkage and is far
    # from zero. The refitted one is close to zero and recovers the codes better.
    X, dictionary, codes = data
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    kept = SAEPlusITO(encoder, transform_alpha=0.01, device="cpu",
                      **{**FISTA, "refit_intercept": False}).fit(X)  # fmt: skip
    refit = SAEPlusITO(encoder, transform_alpha=0.01, device="cpu", **FISTA).fit(X)
    np.testing.assert_array_equal(kept.intercept_, kept.encoder_.intercept_)
    assert np.linalg.norm(refit.intercept_) < 0.5 * np.linalg.norm(kept.intercept_)
    assert mean_corr_coef(codes, refit.transform(X)) > mean_corr_coef(codes, kept.transform(X))


def test_refit_intercept_finds_a_shift_of_the_data(data):
    X, dictionary, codes = data
    shift = np.linspace(-1.0, 1.0, X.shape[1])
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    ito = SAEPlusITO(encoder, transform_alpha=0.001, transform_max_iter=2000, device="cpu",
                     **FISTA).fit(X + shift)  # fmt: skip
    np.testing.assert_allclose(ito.intercept_, shift, atol=0.05)
    assert mean_corr_coef(codes, ito.transform(X + shift)) > 0.98


def test_intercept_refit_on_evenly_spaced_rows_of_large_data(data, monkeypatch):
    # Large training sets: the intercept is refitted on a bounded subset of rows.
    import sklearn_sparsegap._ito as ito_module

    X, dictionary, codes = data
    shift = np.linspace(-1.0, 1.0, X.shape[1])
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    monkeypatch.setattr(ito_module, "_MAX_INTERCEPT_ROWS", 256)
    ito = SAEPlusITO(encoder, transform_alpha=0.001, transform_max_iter=2000, device="cpu",
                     **FISTA).fit(X + shift)  # fmt: skip
    np.testing.assert_allclose(ito.intercept_, shift, atol=0.05)


# --- the defaults: never worse than the encoder at the same L0 -----------------------


def _squared_errors(X, codes, components, intercept):
    return ((X - codes @ components - intercept) ** 2).sum(axis=1)


def _assert_never_worse_at_the_same_l0(model, X):
    """Per sample: no more non-zeros than the encoder's codes, no larger squared error."""
    codes = model.transform(X)
    start = model.encoder_.transform(X)
    l0, start_l0 = (codes != 0).sum(axis=1), (start != 0).sum(axis=1)
    assert np.all(l0 <= start_l0)
    errors = _squared_errors(X, codes, model.components_, model.intercept_)
    start_errors = _squared_errors(X, start, model.components_, model.encoder_.intercept_)
    assert np.all(errors <= start_errors * (1 + 1e-5) + 1e-10)
    gaps = model.amortisation_gap(X, per_sample=True)
    assert np.all(gaps >= 0)
    np.testing.assert_allclose(gaps, 0.5 * (start_errors - errors), rtol=1e-4, atol=1e-6)
    return errors.sum() / start_errors.sum()


def _activation_like_data(n_samples, random_state, n_components=48, n_features=16):
    """Zipf-frequency sparse codes plus the large shared offset, anisotropic scale and
    noise of residual-stream activations (a tiny stand-in for real data)."""
    X, _, _ = make_sparse_dictionary_data(
        n_samples, n_components=n_components, n_features=n_features, n_nonzero_coefs=4,
        code_distribution="zipf", noise_std=0.05, random_state=random_state,
    )  # fmt: skip
    rng = np.random.default_rng(random_state)
    scale = np.exp(rng.normal(scale=0.5, size=n_features))
    return (X * scale + rng.normal(scale=3.0, size=n_features)).astype(np.float32)


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_defaults_are_never_worse_than_the_encoder_on_activation_like_data(activation):
    X = _activation_like_data(768, random_state=1)
    X_train, X_test = X[:512], X[512:]
    # An explicit small alpha: the default leaves this short ReLU training all-zero.
    params = {"n_nonzero_coefs": 4} if activation == "topk" else {"alpha": 0.05}
    sae = SAEEncoder(n_components=48, activation=activation, max_iter=150, batch_size=128,
                     random_state=0, device="cpu", **params).fit(X_train)  # fmt: skip
    ito = SAEPlusITO(sae, prefit=True, device="cpu").fit(X_train)
    assert ito.transform_algorithm == "omp" and ito.guard == "l0" and not ito.refit_intercept
    ratio = _assert_never_worse_at_the_same_l0(ito, X_test)
    if activation == "relu":
        # OMP at the same L0 lowers the squared error on a learned dictionary. (The TopK
        # SAE of the scale-free defaults merged from main gains nothing here: to investigate.)
        assert ratio < 0.95


@given(
    seed=st.integers(0, 2**16),
    activation=st.sampled_from(["relu", "topk"]),
    algorithm=st.sampled_from(["omp", "mp", "gradient_pursuit", "topk", "fista"]),
    positive=st.booleans(),
)
@settings(max_examples=8)
def test_never_worse_at_the_same_l0_property(seed, activation, algorithm, positive):
    X, _, _ = make_sparse_dictionary_data(
        160, n_components=16, n_features=8, random_state=seed, noise_std=0.05
    )
    params = {"n_nonzero_coefs": 3} if activation == "topk" else {}
    sae = SAEEncoder(n_components=16, activation=activation, max_iter=30, random_state=seed,
                     device="cpu", **params).fit(X[:128])  # fmt: skip
    ito = SAEPlusITO(sae, prefit=True, transform_algorithm=algorithm, positive_code=positive,
                     transform_max_iter=100, device="cpu").fit(X[:128])  # fmt: skip
    _assert_never_worse_at_the_same_l0(ito, X[128:])


def test_greedy_budget_is_each_samples_encoder_l0(data):
    from sklearn_sparsegap import sparse_encode

    X, _, _ = data
    sae = SAEEncoder(n_components=16, max_iter=100, random_state=0, device="cpu").fit(X)
    ito = SAEPlusITO(sae, prefit=True, guard=None, device="cpu").fit(X)
    start_l0 = (sae.transform(X) != 0).sum(axis=1)
    codes = ito.transform(X)
    assert len(np.unique(start_l0)) > 2
    assert np.all((codes != 0).sum(axis=1) <= start_l0)
    for budget in np.unique(start_l0[start_l0 > 0])[:3]:
        rows = start_l0 == budget
        expected = sparse_encode(X[rows] - ito.intercept_, ito.components_, algorithm="omp",
                                 n_nonzero_coefs=int(budget), positive=True, device="cpu")
        np.testing.assert_allclose(codes[rows], expected, rtol=1e-7, atol=1e-10)
    np.testing.assert_array_equal(codes[start_l0 == 0], 0.0)
    # A fixed budget overrides the encoder's.
    fixed = ito.set_params(transform_n_nonzero_coefs=2).transform(X)
    assert np.all((fixed != 0).sum(axis=1) <= 2)
    # FLOPs at the mean L0, rounded up.
    ito.set_params(transform_n_nonzero_coefs=None)
    assert ito.inference_flops(10) > sae.inference_flops(10)


def test_l0_guard_keeps_the_encoder_codes_where_the_refinement_is_denser(data):
    X, _, _ = data
    sae = SAEEncoder(n_components=16, max_iter=100, random_state=0, device="cpu").fit(X)
    dense = {"transform_algorithm": "fista", "transform_alpha": 1e-4}
    unguarded = SAEPlusITO(sae, prefit=True, guard=None, device="cpu", **dense).fit(X)
    guarded = SAEPlusITO(sae, prefit=True, device="cpu", **dense).fit(X)
    start = sae.transform(X)
    start_l0 = (start != 0).sum(axis=1)
    denser = (unguarded.transform(X) != 0).sum(axis=1) > start_l0
    assert denser.mean() > 0.5
    codes = guarded.transform(X)
    np.testing.assert_array_equal(codes[denser], start[denser])
    _assert_never_worse_at_the_same_l0(guarded, X)


# --- prefit --------------------------------------------------------------------------


def test_prefit_encoder_is_used_as_is(data):
    X, _, _ = data
    sae = SAEEncoder(n_components=16, max_iter=50, random_state=0, device="cpu").fit(X)
    components, n_iter = sae.components_.copy(), sae.n_iter_
    ito = SAEPlusITO(sae, prefit=True, device="cpu").fit(X[:200])
    assert ito.encoder_ is sae and sae.n_iter_ == n_iter
    np.testing.assert_array_equal(ito.components_, components)
    np.testing.assert_array_equal(ito.intercept_, sae.intercept_)  # no refit by default
    assert ito.training_flops_ == sae.training_flops_
    assert ito.encoder_l0_ == pytest.approx((sae.transform(X[:200]) != 0).sum(axis=1).mean())
    assert ito.n_features_in_ == X.shape[1]
    # Asked for, the intercept is refitted; the encoder is still not trained.
    refit = SAEPlusITO(sae, prefit=True, refit_intercept=True, transform_algorithm="fista",
                       transform_alpha=0.01, device="cpu").fit(X)  # fmt: skip
    assert not np.allclose(refit.intercept_, sae.intercept_) and sae.n_iter_ == n_iter


def test_prefit_errors(data):
    X, _, _ = data
    with pytest.raises(ValueError, match="prefit=True but the encoder SAEEncoder is not fitted"):
        SAEPlusITO(SAEEncoder(), prefit=True).fit(X)
    with pytest.raises(ValueError, match="prefit=True needs a fitted encoder"):
        SAEPlusITO(prefit=True).fit(X)
    sae = SAEEncoder(n_components=16, max_iter=5, random_state=0, device="cpu").fit(X)
    with pytest.raises(ValueError, match="features"):
        SAEPlusITO(sae, prefit=True).fit(np.hstack([X, X]))
    with pytest.raises(ValueError, match="guard"):
        SAEPlusITO(sae, prefit=True, guard="mse").fit(X)
    with pytest.raises(ValueError, match="transform_alpha"):
        SAEPlusITO(sae, prefit=True, transform_algorithm="adam").fit(X)


# --- L1 solvers: the penalty matching the encoder's L0 --------------------------------


@pytest.mark.parametrize("algorithm", ["fista", "lca"])
def test_l1_penalty_is_bisected_to_match_the_encoders_l0(data, algorithm):
    X, _, _ = data
    sae = SAEEncoder(n_components=16, max_iter=100, random_state=0, device="cpu").fit(X)
    ito = SAEPlusITO(sae, prefit=True, transform_algorithm=algorithm, guard=None,
                     device="cpu").fit(X)  # fmt: skip
    l0 = (ito.transform(X) != 0).sum(axis=1).mean()
    assert ito.transform_alpha_ > 0
    assert l0 == pytest.approx(ito.encoder_l0_, rel=0.1)
    # Not the near-dense codes of a small fixed penalty.
    dense = SAEPlusITO(sae, prefit=True, transform_algorithm=algorithm, guard=None,
                       transform_alpha=0.025 * sae.alpha, device="cpu").fit(X)  # fmt: skip
    assert (dense.transform(X) != 0).sum(axis=1).mean() > 1.3 * l0


def test_l0_matching_alpha_bisection():
    import torch

    from sklearn_sparsegap._ito import _l0_matching_alpha
    from sklearn_sparsegap._solvers._sparse_encode import encode_tensor

    X, D, _ = make_sparse_dictionary_data(256, n_components=32, n_features=16,
                                          n_nonzero_coefs=5, random_state=0)  # fmt: skip
    X, D = torch.tensor(X), torch.tensor(D)
    for target in (2.0, 5.0, 9.0):
        alpha, l0 = _l0_matching_alpha(X, D, target, algorithm="fista", positive=True,
                                       max_iter=500, tol=1e-6)  # fmt: skip
        codes, _ = encode_tensor(X, D, algorithm="fista", alpha=alpha, positive=True,
                                 max_iter=500, tol=1e-6)  # fmt: skip
        measured = float((codes != 0).sum(dim=1).double().mean())
        assert l0 == pytest.approx(target, rel=0.05)
        assert measured == pytest.approx(target, rel=0.05)
    # A zero target: the penalty that zeroes every code.
    alpha, l0 = _l0_matching_alpha(X, D, 0.0, algorithm="fista", positive=True, max_iter=10,
                                   tol=1e-4)  # fmt: skip
    assert l0 == 0.0 and alpha == pytest.approx(float((X @ D.T).clamp_min(0).max()))


def test_synthetic_experiments_keep_their_ito_settings():
    from sklearn_sparsegap.experiments._methods import PAPER_ITO_ITER, build_method, paper_alpha

    library = build_method("sae+ito", n_components=16, n_features=8, n_nonzero_coefs=3)
    params = library.get_params()
    assert params["transform_algorithm"] == "fista" and params["guard"] == "objective"
    assert params["refit_intercept"] and params["transform_max_iter"] == 500
    assert params["transform_alpha"] == pytest.approx(0.025 * library.encoder.alpha)
    paper = build_method("sae+ito", n_components=16, n_features=8, n_nonzero_coefs=3,
                         flavour="paper", ito={"init": "zeros"}).get_params()  # fmt: skip
    assert paper["transform_algorithm"] == "adam" and paper["transform_max_iter"] == PAPER_ITO_ITER
    assert paper["transform_alpha"] == pytest.approx(paper_alpha(8, 16))
    assert paper["guard"] is None  # the authors' cold start is returned as it is


def test_per_sample_budgets_encode_each_group_on_its_own():
    import torch

    from sklearn_sparsegap._ito import _encode_per_sample_budget
    from sklearn_sparsegap._solvers._sparse_encode import encode_tensor

    X, dictionary, _ = make_sparse_dictionary_data(40, random_state=1)
    X, dictionary = torch.tensor(X), torch.tensor(dictionary)
    budgets = torch.tensor([0, 1, 3] * 13 + [2])
    codes = _encode_per_sample_budget(X, dictionary, budgets, algorithm="omp", positive=True)
    assert torch.all(codes[budgets == 0] == 0)
    assert torch.all((codes != 0).sum(dim=1) <= budgets)
    rows = torch.nonzero(budgets == 3)[:, 0]
    alone = encode_tensor(X[rows], dictionary, algorithm="omp", n_nonzero_coefs=3,
                          positive=True)[0]  # fmt: skip
    torch.testing.assert_close(codes[rows], alone)


@pytest.mark.parametrize("guard", ["l0", "objective", None])
def test_guard_keeps_per_sample_the_codes_its_rule_prefers(guard):
    import torch

    from sklearn_sparsegap._ito import _guard_codes
    from sklearn_sparsegap._training import objective

    dictionary = torch.eye(2, dtype=torch.float64)
    intercept = torch.zeros(2, dtype=torch.float64)
    X = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    start = torch.tensor([[0.5, 0.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    # Row 0: refined is exact and as sparse; row 1: refined is worse; row 2: refined is
    # exact but denser than the start.
    refined = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    codes, before, after = _guard_codes(X, start, refined, dictionary, intercept, intercept,
                                        0.1, guard)  # fmt: skip
    kept = {"l0": [True, False, False], "objective": [True, False, True],
            None: [True, True, True]}[guard]  # fmt: skip
    expected = torch.where(torch.tensor(kept)[:, None], refined, start)
    torch.testing.assert_close(codes, expected)
    alpha = 0.0 if guard == "l0" else 0.1
    torch.testing.assert_close(before, objective(X, start, dictionary, alpha=alpha, per_sample=True))
    torch.testing.assert_close(after, objective(X, codes if guard else refined, dictionary,
                                                alpha=alpha, per_sample=True))  # fmt: skip
