"""Input scaling (``scale_input``): the default parameters mean the same on any scale."""

import warnings

import numpy as np
import pytest
import torch

from sklearn_sparsegap import MLPEncoder, SAEEncoder, make_sparse_dictionary_data
from sklearn_sparsegap._autoencoder import fit_input_scale, fold_input_scale
from sklearn_sparsegap._modules import SparseAutoencoderModule


@pytest.fixture(scope="module")
def data():
    X, _, _ = make_sparse_dictionary_data(256, random_state=0)
    return X


def _small(cls, **params):
    defaults = dict(n_components=16, max_iter=60, random_state=0, device="cpu")
    if cls is MLPEncoder:
        defaults["hidden_layer_sizes"] = (16,)
    return cls(**{**defaults, **params})


def test_fit_input_scale_gives_mean_squared_norm_n_features():
    X = 37.0 * torch.randn(500, 12, dtype=torch.float64) + 5.0
    scale = fit_input_scale(X)
    assert (scale * X).square().sum(dim=1).mean().item() == pytest.approx(12.0)
    assert fit_input_scale(torch.zeros(4, 3)) == 1.0
    centred = fit_input_scale(X, centre=True)
    assert (centred * (X - X.mean(dim=0))).square().sum(dim=1).mean().item() == pytest.approx(12.0)
    assert fit_input_scale(torch.zeros(0, 3)) == 1.0


def test_fit_input_scale_of_float32_rows_over_several_blocks_is_float64_accurate():
    # More rows than one accumulation block, in float32, with a shared offset 30x the
    # spread: the float64 accumulation must not lose the centred norms to it.
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(9000, 12, generator=generator) + 30.0
    reference = X.double() - X.double().mean(dim=0)
    expected = (12.0 / reference.square().sum(dim=1).mean().item()) ** 0.5
    assert fit_input_scale(X, centre=True) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("activation", ["relu", "topk", "jumprelu"])
def test_fold_input_scale_turns_the_model_of_cX_into_the_model_of_X(activation):
    torch.manual_seed(0)
    module = SparseAutoencoderModule(
        (6, 5, 10), activation=activation, k=3 if activation == "topk" else None
    ).double()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_()
    x = torch.randn(20, 6, dtype=torch.float64)
    codes, reconstruction = module(7.0 * x)
    fold_input_scale(module, 1 / 7.0)
    folded_codes, folded_reconstruction = module(x)
    torch.testing.assert_close(folded_codes, codes / 7.0)
    torch.testing.assert_close(folded_reconstruction, reconstruction / 7.0)


@pytest.mark.parametrize(
    "cls, params",
    [
        (SAEEncoder, {}),
        (SAEEncoder, {"activation": "topk", "n_nonzero_coefs": 3}),
        (SAEEncoder, {"activation": "jumprelu"}),
        (MLPEncoder, {}),
    ],
)
def test_defaults_give_the_same_codes_on_any_scale(cls, params, data):
    X = data
    reference = _small(cls, **params).fit(X)
    codes = reference.transform(X)
    assert (codes != 0).any()
    for factor in (100.0, 0.01):
        scaled = _small(cls, **params).fit(factor * X)
        assert scaled.input_scale_ == pytest.approx(reference.input_scale_ / factor)
        scaled_codes = scaled.transform(factor * X)
        np.testing.assert_allclose(scaled_codes, factor * codes, rtol=1e-6, atol=1e-9 * factor)
        np.testing.assert_allclose(
            scaled.inverse_transform(scaled_codes),
            factor * reference.inverse_transform(codes),
            rtol=1e-6,
            atol=1e-9 * factor,
        )
        np.testing.assert_allclose(scaled.components_, reference.components_, atol=1e-9)
        assert scaled.score(factor * X) == pytest.approx(factor**2 * reference.score(X))


def test_without_scaling_the_scale_of_X_changes_the_model(data):
    X = data
    codes = _small(SAEEncoder, scale_input=False).fit(X).transform(X)
    scaled = _small(SAEEncoder, scale_input=False).fit(100.0 * X)
    assert scaled.input_scale_ == 1.0
    assert not np.allclose(scaled.transform(100.0 * X), 100.0 * codes, rtol=1e-2)


def test_scaled_fit_reconstructs_on_the_users_scale(data):
    X = 50.0 * data
    est = _small(SAEEncoder, max_iter=300).fit(X)
    assert est.input_scale_ < 0.1
    residual = X - est.inverse_transform(est.transform(X))
    assert np.mean(residual**2) < 0.2 * np.mean((X - X.mean(axis=0)) ** 2)
    np.testing.assert_allclose(est.intercept_, X.mean(axis=0), atol=0.5 * np.abs(X).mean())


@pytest.mark.parametrize("cls", [SAEEncoder, MLPEncoder])
def test_warm_start_and_partial_fit_keep_the_first_scale(cls, data):
    X = 30.0 * data
    whole = _small(cls, max_iter=40).fit(X)
    segmented = _small(cls, max_iter=20, warm_start=True).fit(X)
    segmented.fit(X)
    assert segmented.input_scale_ == whole.input_scale_
    np.testing.assert_allclose(segmented.transform(X), whole.transform(X), rtol=1e-5, atol=1e-6)
    chunked = _small(cls)
    chunked.partial_fit(X[:128])
    first_scale = chunked.input_scale_
    chunked.partial_fit(3.0 * X[128:])
    assert chunked.input_scale_ == first_scale


def test_known_codes_are_not_scaled():
    X, _, codes = make_sparse_dictionary_data(128, random_state=0)
    est = _small(SAEEncoder, target="codes").fit(10.0 * X, codes)
    assert est.input_scale_ == 1.0


def test_batch_size_and_max_iter_defaults_follow_the_data_size(monkeypatch):
    from sklearn_sparsegap import _sae

    X, _, _ = make_sparse_dictionary_data(300, random_state=0)
    small = _small(SAEEncoder, max_iter=None).set_params(max_iter=None)
    monkeypatch.setitem(_sae._MAX_ITER, "reconstruction", 7)
    small.fit(X)
    assert small.batch_size_ == 300 and small.max_iter_ == 7 and small.n_iter_ == 7
    # Above the full-batch limit: minibatches, and epochs that make the default steps.
    monkeypatch.setattr(_sae, "FULL_BATCH_MAX_ROWS", 200)
    monkeypatch.setattr(_sae, "DEFAULT_BATCH_SIZE", 64)
    big = _small(SAEEncoder, max_iter=None).fit(X)
    assert big.batch_size_ == 64
    assert big.max_iter_ == 2  # 5 steps per epoch, at least 7 steps
    assert big.history_["step"][-1] == 10
    assert _small(SAEEncoder, batch_size=1000, max_iter=2).fit(X).batch_size_ == 300


def test_a_long_run_warns_with_an_estimate(monkeypatch):
    from sklearn_sparsegap import _training

    X, _, _ = make_sparse_dictionary_data(64, random_state=0)
    monkeypatch.setattr(_training, "LONG_RUN_SECONDS", 0.0)
    with pytest.warns(UserWarning, match="will take about .* min. Set max_iter"):
        _small(SAEEncoder, max_iter=8).fit(X)
    monkeypatch.setattr(_training, "LONG_RUN_SECONDS", 1e9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _small(SAEEncoder, max_iter=8).fit(X)


def test_mostly_zero_codes_warn_even_when_some_rows_fire():
    from sklearn.exceptions import ConvergenceWarning

    X, _, _ = make_sparse_dictionary_data(400, random_state=0)
    # A few rows far larger than the rest: only they survive a large penalty.
    X = X.copy()
    X[:4] *= 30.0
    est = _small(SAEEncoder, alpha=40.0, max_iter=150, scale_input=False)
    with pytest.warns(ConvergenceWarning, match="of the training rows have all-zero codes"):
        est.fit(X)
    codes = est.transform(X)
    assert (codes != 0).any()
    assert (codes == 0).all(axis=1).mean() >= 0.95


def test_divergence_names_scale_input_when_it_is_off():
    X, _, _ = make_sparse_dictionary_data(128, random_state=0)
    with pytest.raises(ValueError, match="diverged.*scale_input=True"):
        _small(SAEEncoder, scale_input=False, learning_rate=1e300, max_iter=20).fit(1e6 * X)
