"""SAEPlusITO: amortised codes refined on the frozen dictionary, and the amortisation gap."""

import numpy as np
import pytest

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


@pytest.fixture(scope="module")
def known(data):
    X, dictionary, _ = data
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    return SAEPlusITO(encoder, transform_alpha=0.01, device="cpu").fit(X)


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
    known.set_params(init="zeros", transform_max_iter=3)
    try:
        cold = known.transform(X[:200])
        expected = sparse_encode(
            X[:200] - known.intercept_, known.components_, alpha=known._alpha(),
            positive=True, max_iter=3, tol=known.tol, device="cpu",
        )  # fmt: skip
        np.testing.assert_allclose(cold, expected, rtol=1e-6, atol=1e-8)
    finally:
        known.set_params(init="encoder", transform_max_iter=500)


@pytest.mark.parametrize("algorithm", ["fista", "ista", "omp", "mp", "gradient_pursuit", "topk", "adam"])
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
        SAEEncoder(n_components=16, max_iter=500, random_state=0, device="cpu"), device="cpu"
    ).fit(X)
    assert model.score(X) >= model.encoder_.score(X) - 1e-9
    assert model.training_flops_ == model.encoder_.training_flops_
    assert model.inference_flops(10) > model.encoder_.inference_flops(10)


def test_a_frozen_fitted_encoder_is_reused_without_refitting(data):
    from sklearn.frozen import FrozenEstimator

    X, _, _ = data
    sae = SAEEncoder(n_components=16, max_iter=50, random_state=0, device="cpu").fit(X)
    before = sae.components_.copy()
    model = SAEPlusITO(FrozenEstimator(sae), device="cpu").fit(X[:100])
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
                                device="cpu"), device="cpu").fit(X)
    _assert_refined_codes_are_the_solver_codes_where_kept(mlp, X[:300])
    supervised = SAEPlusITO(
        SAEEncoder(target="codes", max_iter=20, device="cpu"), device="cpu"
    ).fit(X, codes)
    _assert_refined_codes_are_the_solver_codes_where_kept(supervised, X[:300])


def test_a_foreign_encoder_goes_through_its_transform(data):
    # scikit-learn's DictionaryLearning has no tensor-level _encode: ITO uses transform.
    from sklearn.decomposition import DictionaryLearning

    X, _, codes = data
    encoder = DictionaryLearning(n_components=16, alpha=0.5, max_iter=5, fit_algorithm="cd",
                                 transform_algorithm="lasso_cd", transform_alpha=0.5,
                                 positive_code=True, random_state=0)  # fmt: skip
    model = SAEPlusITO(encoder, device="cpu").fit(X[:256])
    assert model.transform_alpha_ == pytest.approx(0.025 * 0.5)
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
    # The encoder's alpha applies to its scaled input; the refinement runs on X's scale.
    assert model.transform_alpha_ == pytest.approx(0.025 * 0.2 / model.encoder_.input_scale_)
    assert np.all(model.transform(X) >= 0)
    explicit = SAEPlusITO(encoder, transform_alpha=0.07, device="cpu").fit(X)
    assert explicit.transform_alpha_ == 0.07
    # Without the constraint the lasso's codes go negative on some samples.
    free = SAEPlusITO(encoder, positive_code=False, refit_intercept=False, device="cpu").fit(X)
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


def test_default_refinement_recovers_known_dictionary_codes(data):
    # Defaults: transform_alpha a fraction of the encoder's alpha and a refitted intercept.
    X, dictionary, codes = data
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    ito = SAEPlusITO(encoder, device="cpu").fit(X)
    assert mean_corr_coef(codes, ito.transform(X)) > 0.98


def test_refit_intercept_replaces_the_encoders_shrinkage_compensating_bias(data):
    # The data has no bias; the SAE's learned bias compensates its shrinkage and is far
    # from zero. The refitted one is close to zero and recovers the codes better.
    X, dictionary, codes = data
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    kept = SAEPlusITO(encoder, transform_alpha=0.01, refit_intercept=False, device="cpu").fit(X)
    refit = SAEPlusITO(encoder, transform_alpha=0.01, device="cpu").fit(X)
    np.testing.assert_array_equal(kept.intercept_, kept.encoder_.intercept_)
    assert np.linalg.norm(refit.intercept_) < 0.5 * np.linalg.norm(kept.intercept_)
    assert mean_corr_coef(codes, refit.transform(X)) > mean_corr_coef(codes, kept.transform(X))


def test_refit_intercept_finds_a_shift_of_the_data(data):
    X, dictionary, codes = data
    shift = np.linspace(-1.0, 1.0, X.shape[1])
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    ito = SAEPlusITO(encoder, transform_alpha=0.001, transform_max_iter=2000, device="cpu").fit(X + shift)
    np.testing.assert_allclose(ito.intercept_, shift, atol=0.05)
    assert mean_corr_coef(codes, ito.transform(X + shift)) > 0.98


def test_intercept_refit_on_evenly_spaced_rows_of_large_data(data, monkeypatch):
    # Large training sets: the intercept is refitted on a bounded subset of rows.
    import sklearn_sparsegap._ito as ito_module

    X, dictionary, codes = data
    shift = np.linspace(-1.0, 1.0, X.shape[1])
    encoder = SAEEncoder(dictionary=dictionary, max_iter=300, random_state=0, device="cpu")
    monkeypatch.setattr(ito_module, "_MAX_INTERCEPT_ROWS", 256)
    ito = SAEPlusITO(encoder, transform_alpha=0.001, transform_max_iter=2000, device="cpu").fit(X + shift)
    np.testing.assert_allclose(ito.intercept_, shift, atol=0.05)
