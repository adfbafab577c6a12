"""Behaviour of the amortised encoders that users rely on."""

import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_sparsegap import (
    MLPEncoder,
    SAEEncoder,
    dictionary_mcc,
    make_sparse_dictionary_data,
    mcc_scorer,
    mean_corr_coef,
)

ENCODERS = [SAEEncoder, MLPEncoder]


def _small(cls, **params):
    defaults = dict(n_components=16, max_iter=300, random_state=0, device="cpu")
    if cls is MLPEncoder:
        defaults["hidden_layer_sizes"] = (32,)
        defaults["learning_rate"] = 1e-2
    return cls(**{**defaults, **params})


@pytest.fixture(scope="module")
def data():
    X, dictionary, codes = make_sparse_dictionary_data(1024, random_state=0)
    return X, dictionary, codes


# ----------------------------------------------------------------- scenarios
def test_sae_recovers_the_dictionary_on_the_paper_task(data):
    X, dictionary, codes = data
    sae = SAEEncoder(n_components=16, random_state=0, device="cpu").fit(X[:512])
    assert dictionary_mcc(dictionary, sae.components_) > 0.9
    assert mean_corr_coef(codes[512:], sae.transform(X[512:])) > 0.7
    np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("cls", ENCODERS)
def test_known_dictionary_is_held_fixed(cls, data):
    X, dictionary, codes = data
    est = _small(cls, dictionary=dictionary, n_components=None).fit(X)
    np.testing.assert_array_equal(est.components_, dictionary)
    assert mean_corr_coef(codes, est.transform(X)) > 0.5


@pytest.mark.parametrize("cls", ENCODERS)
def test_known_codes_trains_the_encoder_on_the_codes(cls, data):
    X, _, codes = data
    est = _small(cls, target="codes", max_iter=500).fit(X, codes)
    assert est.transform(X).shape == codes.shape
    assert mean_corr_coef(codes, est.transform(X)) > 0.75
    with pytest.raises(ValueError, match="y"):
        clone(est).fit(X)
    with pytest.raises(ValueError, match="y"):
        clone(est).fit(X, codes[:, :5])
    with pytest.raises(ValueError, match="y"):
        clone(est).fit(X, codes[:100])


@pytest.mark.parametrize("cls", ENCODERS)
def test_y_is_ignored_outside_known_codes(cls, data):
    X, _, codes = data
    with_y = _small(cls, max_iter=30).fit(X, codes)
    without_y = _small(cls, max_iter=30).fit(X)
    np.testing.assert_array_equal(with_y.components_, without_y.components_)


def test_grid_search_with_mcc_scorer_in_parallel_matches_sequential(data):
    X, _, codes = data
    grid = {"alpha": [0.05, 0.3]}
    base = SAEEncoder(n_components=16, max_iter=100, random_state=0, device="cpu")
    parallel = GridSearchCV(base, grid, scoring=mcc_scorer, cv=2, n_jobs=2).fit(X, codes)
    sequential = GridSearchCV(base, grid, scoring=mcc_scorer, cv=2, n_jobs=1).fit(X, codes)
    np.testing.assert_allclose(
        parallel.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"]
    )
    assert 0 < parallel.best_score_ <= 1


def _threads_while_fitting():
    X, _, _ = make_sparse_dictionary_data(64, random_state=0)
    SAEEncoder(max_iter=2, device="cpu").fit(X)
    return torch.get_num_threads()


def test_parallel_workers_do_not_oversubscribe_torch_threads():
    n_jobs = 2
    threads = joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(_threads_while_fitting)() for _ in range(n_jobs)
    )
    assert max(threads) <= max(1, joblib.cpu_count() // n_jobs)


# ------------------------------------------------------- scikit-learn usage
@pytest.mark.parametrize("cls", ENCODERS)
def test_pipeline_clone_pickle_and_pandas_output(cls, data):
    pd = pytest.importorskip("pandas")
    X, _, _ = data
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    pipe = make_pipeline(StandardScaler(), _small(cls, max_iter=20)).set_output(
        transform="pandas"
    )
    out = pipe.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    prefix = cls.__name__.lower()
    assert list(out.columns) == [f"{prefix}{i}" for i in range(16)]
    restored = pickle.loads(pickle.dumps(pipe))
    pd.testing.assert_frame_equal(restored.transform(frame), pipe.transform(frame))
    assert clone(pipe).get_params()[f"{prefix}__n_components"] == 16


@pytest.mark.parametrize("cls", ENCODERS)
def test_same_seed_same_model_and_dtypes_preserved(cls, data):
    X, _, _ = data
    first = _small(cls, max_iter=50).fit(X)
    second = _small(cls, max_iter=50).fit(X)
    np.testing.assert_array_equal(first.components_, second.components_)
    assert first.transform(X).dtype == np.float64
    X32 = X.astype(np.float32)
    est32 = _small(cls, max_iter=50).fit(X32)
    assert est32.components_.dtype == np.float32
    assert est32.transform(X32).dtype == np.float32
    assert est32.inverse_transform(est32.transform(X32)).dtype == np.float32


@pytest.mark.parametrize("cls", ENCODERS)
def test_inputs_are_never_modified(cls, data):
    X, dictionary, codes = data
    X_copy, d_copy, c_copy = X.copy(), dictionary.copy(), codes.copy()
    est = _small(cls, max_iter=20, dictionary=dictionary).fit(X)
    est.transform(X)
    _small(cls, max_iter=20, target="codes").fit(X, codes)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(dictionary, d_copy)
    np.testing.assert_array_equal(codes, c_copy)
    read_only = X.copy()
    read_only.setflags(write=False)
    _small(cls, max_iter=5).fit(read_only).transform(read_only)


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("cls", ENCODERS)
def test_history_and_flops_are_consistent(cls, data):
    X, _, _ = data
    est = _small(cls, max_iter=100, tol=0.0).fit(X)
    lengths = {key: len(values) for key, values in est.history_.items()}
    assert len(set(lengths.values())) == 1 and lengths["step"] == 10
    assert set(est.history_) >= {"step", "loss", "mse", "l1", "l0", "flops", "dead_fraction"}
    assert est.history_["step"][-1] == 100 == est.n_iter_
    assert np.all(np.diff(est.history_["flops"]) > 0)
    assert est.history_["flops"][-1] == est.training_flops_ > 0
    assert est.history_["loss"][-1] < est.history_["loss"][0]
    assert est.inference_flops(10) == 10 * est.inference_flops(1)


def test_sae_flops_follow_appendix_i(data):
    X, dictionary, _ = data
    sae = SAEEncoder(dictionary=dictionary, max_iter=7, tol=0, device="cpu").fit(X)
    # Appendix I.2 with a fixed dictionary: 1360 FLOPs per sample-step at N=16, M=8.
    assert sae.training_flops_ == 1360 * X.shape[0] * 7
    assert sae.inference_flops(1024) == (4 * 8 * 16 + 16) * 1024


def test_tol_stops_training_early(data):
    X, _, _ = data
    est = SAEEncoder(max_iter=5000, tol=1e-2, random_state=0, device="cpu").fit(X)
    assert est.n_iter_ < 5000


def test_minibatches_count_epochs_and_steps(data):
    X, _, _ = data
    est = SAEEncoder(max_iter=3, batch_size=100, tol=0, random_state=0, device="cpu").fit(X)
    assert est.n_iter_ == 3
    assert len(est.history_["step"]) == 3
    assert est.history_["step"][-1] == 3 * int(np.ceil(X.shape[0] / 100))


def test_partial_fit_on_memmapped_chunks_matches_fit(tmp_path):
    X, dictionary, _ = make_sparse_dictionary_data(2048, random_state=1)
    path = tmp_path / "activations.dat"
    stored = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    stored[:] = X
    stored.flush()
    chunks = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)

    streamed = SAEEncoder(n_components=16, batch_size=256, random_state=0, device="cpu")
    for _ in range(40):
        for start in range(0, X.shape[0], 512):
            streamed.partial_fit(chunks[start : start + 512])
    full = SAEEncoder(
        n_components=16, batch_size=256, max_iter=40, tol=0, random_state=0, device="cpu"
    ).fit(X.astype(np.float32))

    assert streamed.n_iter_ == 40 * 4
    assert streamed.training_flops_ == full.training_flops_
    assert dictionary_mcc(dictionary, streamed.components_) > 0.8
    assert dictionary_mcc(dictionary, streamed.components_) >= (
        dictionary_mcc(dictionary, full.components_) - 0.03
    )


def test_partial_fit_continues_from_the_current_state(data):
    X, _, _ = data
    est = SAEEncoder(max_iter=50, tol=0, random_state=0, device="cpu").fit(X)
    before = est.components_.copy()
    flops = est.training_flops_
    est.partial_fit(X)
    assert est.n_iter_ == 51
    assert est.training_flops_ > flops
    # One more small step: close to, but not equal to, the previous state.
    assert 0 < np.abs(est.components_ - before).max() < 0.1


def test_known_codes_mlp_starts_at_the_ridge_regression_with_no_dead_latent(data):
    # From a random start an MLP's latent could die for good on known codes.
    X, _, codes = data
    est = MLPEncoder(target="codes", max_iter=1, learning_rate=1e-12, random_state=0,
                     device="cpu").fit(X, codes)  # fmt: skip
    assert (est.transform(X) > 0).any(axis=0).all()
    assert mean_corr_coef(codes, est.transform(X)) > 0.8


def test_known_codes_linear_encoder_starts_at_the_regression_with_no_dead_latent(data):
    X, _, codes = data
    est = SAEEncoder(target="codes", max_iter=1, learning_rate=1e-12, device="cpu",
                     random_state=0).fit(X, codes)  # fmt: skip
    design = np.hstack([X, np.ones((len(X), 1))])
    solution = np.linalg.lstsq(design, codes, rcond=None)[0]
    np.testing.assert_allclose(est.coefs_[0], solution[:-1].T, atol=1e-6)
    assert (est.transform(X) > 0).any(axis=0).all()
    assert mean_corr_coef(codes, est.transform(X)) > 0.6


@pytest.mark.parametrize("cls", ENCODERS)
def test_float32_and_float64_fits_start_from_the_same_draw(cls, data):
    # The random start is drawn in float64 whatever the dtype, so a float32 fit follows
    # the float64 fit of the same random_state (a different draw would land in different
    # local optima: on the paper's task 0.784 against 0.803 latent MCC over 5 seeds).
    X, _, _ = data
    fits = [_small(cls, max_iter=50).fit(X.astype(dtype)) for dtype in (np.float32, np.float64)]
    assert fits[0].components_.dtype == np.float32
    np.testing.assert_allclose(fits[0].components_, fits[1].components_, atol=1e-3)


def test_mlp_start_uses_a_bounded_number_of_rows(data, monkeypatch):
    # On large data the output layer's starting regression uses evenly spaced rows.
    import sklearn_sparsegap._autoencoder as autoencoder

    X, D, _ = data
    monkeypatch.setattr(autoencoder, "MAX_INIT_ROWS", 100)
    est = MLPEncoder(dictionary=D, max_iter=1, learning_rate=1e-12, random_state=0,
                     device="cpu").fit(X)  # fmt: skip
    assert (est.transform(X) > 0).any(axis=0).all()


def test_codes_loss_averages_the_cosine_over_samples_or_latents():
    from sklearn_sparsegap._training import cosine_loss

    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    true = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    per_sample = (np.sqrt(0.5) + 1.0 + 1.0) / 3
    col0 = 2.0 / (np.sqrt(2.0) * np.sqrt(2.0))
    col1 = 3.0 / (np.sqrt(5.0) * np.sqrt(3.0))
    assert float(cosine_loss(pred, true)) == pytest.approx(1 - per_sample)
    assert float(cosine_loss(pred, true, over="latent")) == pytest.approx(1 - (col0 + col1) / 2)


@pytest.mark.parametrize("cls", ENCODERS)
def test_known_codes_are_rescaled_to_the_data(cls, data):
    # The per-sample cosine leaves each sample's scale free; transform sets it by least
    # squares through components_ (the least-squares dictionary of X on the codes).
    X, dictionary, codes = data
    train, test = slice(0, 768), slice(768, None)
    est = _small(cls, target="codes", max_iter=200).fit(X[train], codes[train])
    raw = clone(est).set_params(rescale_codes=False).fit(X[train], codes[train])
    np.testing.assert_allclose(est.coefs_[-1], raw.coefs_[-1])
    # The data are noise-free: the true codes reconstruct X through components_.
    np.testing.assert_allclose(est.inverse_transform(codes), X, atol=1e-8)
    assert dictionary_mcc(dictionary, est.components_) > 0.999
    scaled, unscaled = est.transform(X[test]), raw.transform(X[test])
    factors = (scaled * unscaled).sum(axis=1) / np.maximum((unscaled**2).sum(axis=1), 1e-300)
    np.testing.assert_allclose(scaled, factors[:, None] * unscaled, atol=1e-10)
    assert (factors >= 0).all()
    # Each factor is the least-squares one: no other factor reconstructs better.
    residual = X[test] - est.inverse_transform(scaled)
    for nudge in (0.99, 1.01):
        assert (residual**2).sum() < ((X[test] - est.inverse_transform(nudge * scaled)) ** 2).sum()
    assert mean_corr_coef(codes[test], scaled) > mean_corr_coef(codes[test], unscaled) + 0.01
    # The logged mse is that of the codes transform returns (at the last step).
    for model in (est, raw):
        error = np.mean((X[train] - model.inverse_transform(model.transform(X[train]))) ** 2)
        assert model.history_["mse"][-1] == pytest.approx(error, rel=0.05)
    assert est.inference_flops(1) == raw.inference_flops(1) + 4 * 8 + 16


def test_known_codes_decoder_has_a_bias_and_sees_every_chunk():
    # Data with an offset and noise: the least-squares decoder fits the offset as
    # intercept_, and partial_fit fits it on every chunk seen, not on the first or last.
    X, _, codes = make_sparse_dictionary_data(1024, noise_std=0.1, random_state=1)
    X = X + 2.0
    design = np.hstack([codes, np.ones((len(X), 1))])
    solution = np.linalg.lstsq(design, X, rcond=None)[0]
    whole = SAEEncoder(target="codes", max_iter=100, random_state=0, device="cpu").fit(X, codes)
    chunked = SAEEncoder(target="codes", random_state=0, device="cpu")
    for rows in np.array_split(np.arange(len(X)), 4):
        chunked.partial_fit(X[rows], codes[rows])
    for est in (whole, chunked):
        np.testing.assert_allclose(est.components_, solution[:-1], atol=1e-8)
        np.testing.assert_allclose(est.intercept_, solution[-1], atol=1e-8)
    # Rescaling still helps when the data are not centred.
    raw = clone(whole).set_params(rescale_codes=False).fit(X, codes)
    assert mean_corr_coef(codes, whole.transform(X)) > mean_corr_coef(codes, raw.transform(X))


def test_known_codes_keep_a_given_dictionary(data):
    X, dictionary, codes = data
    # The codes in the units of the given dictionary: only the bias (here 0) is fitted.
    est = SAEEncoder(target="codes", dictionary=3 * dictionary, max_iter=20, device="cpu")
    est.fit(X, codes / 3)
    np.testing.assert_array_equal(est.components_, 3 * dictionary)
    np.testing.assert_allclose(est.intercept_, 0, atol=1e-10)
    np.testing.assert_allclose(est.inverse_transform(codes / 3), X, atol=1e-8)
    with pytest.raises(ValueError, match="y has 5 columns but dictionary has 16 rows"):
        est.fit(X, codes[:, :5])


def test_warm_start_cannot_change_the_target(data):
    X, _, codes = data
    est = _small(SAEEncoder, max_iter=5, warm_start=True).fit(X)
    with pytest.raises(ValueError, match="warm_start=False to change target"):
        est.set_params(target="codes").fit(X, codes)
    with pytest.raises(ValueError, match="warm_start=False to change target"):
        est.partial_fit(X, codes)


def test_per_latent_codes_loss_is_not_rescaled(data):
    # The per-latent cosine leaves one factor per latent free, shared by all samples: a
    # per-sample factor cannot undo it, so its codes are the encoder's own output.
    X, _, codes = data
    est = _small(SAEEncoder, target="codes", codes_loss="latent", max_iter=50).fit(X, codes)
    raw = clone(est).set_params(rescale_codes=False).fit(X, codes)
    np.testing.assert_array_equal(est.transform(X), raw.transform(X))


@pytest.mark.parametrize(
    "cls, target, expected",
    [(SAEEncoder, "codes", 500), (SAEEncoder, "reconstruction", 2000),
     (MLPEncoder, "codes", 500), (MLPEncoder, "reconstruction", 1500)],
)
def test_default_iterations_depend_on_the_target(cls, target, expected, data):
    X, _, codes = data
    params = {"hidden_layer_sizes": (8,)} if cls is MLPEncoder else {}
    est = cls(target=target, random_state=0, device="cpu", **params).fit(X[:64], codes[:64])
    assert est.max_iter is None and est.n_iter_ == est.max_iter_ == expected


@pytest.mark.parametrize("cls", ENCODERS)
def test_resolved_defaults_are_fitted_attributes(cls, data):
    X, dictionary, codes = data
    est = _small(cls, max_iter=2).fit(X)
    # batch_size=None is full batch: one step per epoch.
    assert (est.n_components_, est.max_iter_, est.batch_size_) == (16, 2, len(X))
    assert est.history_["step"][-1] == est.n_iter_ == 2
    # n_components=None takes the dictionary's rows, or the codes' columns, or n_features.
    est = _small(cls, n_components=None, dictionary=dictionary[:12], max_iter=1).fit(X)
    assert est.n_components_ == 12
    est = _small(cls, n_components=None, target="codes", max_iter=1).fit(X, codes[:, :10])
    assert est.n_components_ == 10
    est = _small(cls, n_components=None, max_iter=1, batch_size=10**6).fit(X)
    assert (est.n_components_, est.batch_size_) == (X.shape[1], len(X))
    # With minibatches max_iter still counts epochs: ceil(n_samples / batch_size) steps each.
    est = _small(cls, max_iter=2, batch_size=100).fit(X)
    assert est.batch_size_ == 100 and est.n_iter_ == 2
    assert est.history_["step"][-1] == 2 * int(np.ceil(len(X) / 100))


def test_tol_means_the_same_window_of_steps_with_minibatches(data):
    # tol looks back 100 optimiser steps: with 4 steps an epoch, 25 epochs.
    X, _, _ = data
    est = SAEEncoder(max_iter=10_000, batch_size=len(X) // 4, tol=1e-2, random_state=0,
                     device="cpu").fit(X)  # fmt: skip
    assert 25 < est.n_iter_ < 10_000


@pytest.mark.parametrize("dictionary", [True, False])
def test_mlp_starts_as_the_sae_does_with_every_latent_alive(dictionary, data):
    # The output layer starts at the ridge regression of the random hidden features
    # onto the SAE's starting pre-activations (x - b) D^T: the MLP starts close to the
    # linear SAE and no latent starts dead (from PyTorch's default init a quarter did).
    X, D, _ = data
    params = dict(dictionary=D) if dictionary else dict(n_components=16)
    est = MLPEncoder(max_iter=1, learning_rate=1e-12, random_state=0, device="cpu", **params)
    est.fit(X)
    start = SAEEncoder(max_iter=1, learning_rate=1e-12, random_state=0, device="cpu", **params)
    start.fit(X)
    np.testing.assert_allclose(est.components_, start.components_)
    codes, sae_codes = est.transform(X), start.transform(X)
    assert (codes > 0).any(axis=0).all()
    assert np.corrcoef(codes.ravel(), sae_codes.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("cls", ENCODERS)
@pytest.mark.parametrize("target", ["reconstruction", "codes"])
def test_warm_start_fits_in_segments_exactly_like_one_fit(cls, target, data):
    X, _, codes = data
    X = X[:256]
    y = codes[:256] if target == "codes" else None
    whole = _small(cls, max_iter=60, target=target).fit(X, y)
    segmented = _small(cls, max_iter=20, target=target, warm_start=True)
    for _ in range(3):
        segmented.fit(X, y)
    assert segmented.n_iter_ == whole.n_iter_ == 60
    np.testing.assert_array_equal(segmented.history_["loss"], whole.history_["loss"])
    np.testing.assert_allclose(segmented.coefs_[0], whole.coefs_[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(segmented.transform(X), whole.transform(X), atol=1e-6)
    # Without warm_start, a second fit starts over.
    again = _small(cls, max_iter=20, target=target).fit(X, y).fit(X, y)
    assert again.n_iter_ == 20


@pytest.mark.parametrize("cls", ENCODERS)
def test_a_fit_with_every_code_zero_warns_about_alpha(cls, data):
    from sklearn.exceptions import ConvergenceWarning

    X, _, _ = data
    with pytest.warns(ConvergenceWarning, match="alpha=1000"):
        _small(cls, alpha=1000.0, max_iter=400).fit(X)


def test_divergence_raises_instead_of_returning_nan(data):
    X, _, _ = data
    est = MLPEncoder(
        hidden_layer_sizes=(8,), learning_rate=1e30, max_iter=50, random_state=0, device="cpu"
    )
    # Squared errors overflow float32: the fit must stop with advice, not return NaN.
    with pytest.raises(ValueError, match="learning_rate"):
        est.fit(X.astype(np.float32) * 1e25)


def test_verbose_shows_a_progress_bar(data, capsys):
    X, _, _ = data
    SAEEncoder(max_iter=20, verbose=1, device="cpu").fit(X)
    assert "SAEEncoder" in capsys.readouterr().err


# -------------------------------------------------------------- activations
def test_topk_keeps_exactly_k(data):
    X, _, _ = data
    est = SAEEncoder(n_components=16, activation="topk", n_nonzero_coefs=3, alpha=0.0, max_iter=200,
                     random_state=0, device="cpu").fit(X)
    counts = (est.transform(X) != 0).sum(axis=1)
    assert counts.max() <= 3 and counts.mean() > 2.5


def test_jumprelu_learns_thresholds(data):
    X, _, _ = data
    est = SAEEncoder(n_components=16, activation="jumprelu", alpha=0.05, max_iter=300,
                     random_state=0, device="cpu").fit(X)
    assert est.threshold_.shape == (16,) and np.all(est.threshold_ > 0)
    assert not np.allclose(est.threshold_, 1e-3)
    codes = est.transform(X)
    assert np.all((codes == 0) | (codes > est.threshold_))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", ENCODERS)
@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_components": 0}, "n_components"),
        ({"activation": "topk", "n_nonzero_coefs": 20}, "n_nonzero_coefs"),
        ({"activation": "topk"}, "n_nonzero_coefs"),
        ({"dictionary": np.ones((16, 3))}, "dictionary"),
        ({"dictionary": np.vstack([np.ones((15, 8)), np.zeros((1, 8))])}, "dictionary"),
        ({"dictionary": np.full((16, 8), np.nan)}, "dictionary"),
        ({"dictionary": np.ones((16, 8)), "n_components": 4}, "dictionary"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"activation": "tanh"}, "activation"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(cls, params, match, data):
    X, _, _ = data
    with pytest.raises(ValueError, match=match):
        _small(cls, **params).fit(X)


@pytest.mark.parametrize("cls", ENCODERS)
def test_bad_data_raises_value_error(cls, data):
    X, _, _ = data
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _small(cls).fit(bad)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        _small(cls).fit(bad)
    est = _small(cls, max_iter=5).fit(X)
    with pytest.raises(ValueError, match="features"):
        est.transform(X[:, :5])
    with pytest.raises(ValueError, match="X"):
        est.inverse_transform(np.ones((3, 5)))


def test_device_cuda_without_cuda_is_a_clear_error(data):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    X, _, _ = data
    with pytest.raises(ValueError, match="CUDA"):
        SAEEncoder(device="cuda", max_iter=2).fit(X)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_stores_cpu_state_and_unpickles_for_cpu(data):
    X, _, _ = data
    est = SAEEncoder(device="cuda", max_iter=50, random_state=0).fit(X)
    assert est.device_.startswith("cuda")
    assert isinstance(est.components_, np.ndarray)
    restored = pickle.loads(pickle.dumps(est)).set_params(device="cpu")
    np.testing.assert_allclose(restored.transform(X), est.transform(X), atol=1e-5)
    assert est.__sklearn_tags__().non_deterministic


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_known_codes_rescale_like_cpu(data):
    # The analytic cosine gradients and the per-sample rescaling on the GPU.
    X, _, codes = data
    est = MLPEncoder(target="codes", hidden_layer_sizes=(32,), max_iter=50, random_state=0,
                     device="cuda").fit(X, codes)  # fmt: skip
    assert est.device_.startswith("cuda")
    on_cpu = clone(est).set_params(device="cpu").fit(X, codes)
    np.testing.assert_allclose(est.transform(X), on_cpu.transform(X), atol=1e-5)
    restored = pickle.loads(pickle.dumps(est)).set_params(device="cpu")
    np.testing.assert_allclose(restored.transform(X), est.transform(X), atol=1e-5)


def test_integer_input_is_computed_as_float64(data):
    X, _, _ = data
    est = SAEEncoder(max_iter=5, device="cpu").fit(np.round(X * 10).astype(np.int64))
    assert est.components_.dtype == np.float64
    assert est.transform(np.round(X * 10).astype(np.int64)).dtype == np.float64


# ------------------------------------------- dead latents, held-out rows, AuxK
def _fvu(X, reconstruction):
    return ((X - reconstruction) ** 2).sum() / ((X - X.mean(axis=0)) ** 2).sum()


@pytest.mark.parametrize("cls", ENCODERS)
def test_held_out_figures_are_logged_at_every_log(cls, data):
    X, _, _ = data
    X_train, X_val = X[:768], X[768:]
    est = _small(cls, max_iter=40).fit(X_train, X_val=X_val)
    history = est.history_
    assert {"val_fvu", "val_l0", "val_dead_fraction"} <= set(history)
    assert len({len(values) for values in history.values()}) == 1  # rectangular
    assert len(history["val_fvu"]) == 4  # every 10 epochs in full batch
    # The last log is the fitted model's figures on X_val.
    codes = est.transform(X_val)
    assert history["val_fvu"][-1] == pytest.approx(_fvu(X_val, est.inverse_transform(codes)),
                                                   rel=1e-6)  # fmt: skip
    assert history["val_l0"][-1] == pytest.approx((codes != 0).sum(axis=1).mean())
    assert history["val_dead_fraction"][-1] == pytest.approx((codes == 0).all(axis=0).mean())
    assert history["val_fvu"][-1] < history["val_fvu"][0]
    # Without X_val there are no held-out keys; the model does not depend on X_val.
    plain = _small(cls, max_iter=40).fit(X_train)
    assert "val_fvu" not in plain.history_
    np.testing.assert_array_equal(plain.components_, est.components_)


def test_held_out_rows_pass_through_a_pipeline_and_warm_start_stays_rectangular(data):
    X, _, _ = data
    pipe = make_pipeline(StandardScaler(), _small(SAEEncoder, max_iter=20))
    # A pipeline routes the fit parameter to its step (the scaler does not see X_val,
    # so it is passed on the encoder's scale here).
    pipe.fit(X[:768], saeencoder__X_val=X[768:])
    assert np.isfinite(pipe[-1].history_["val_fvu"]).all()
    est = _small(SAEEncoder, max_iter=20, warm_start=True).fit(X[:768])
    est.fit(X[:768], X_val=X[768:])
    history = est.history_
    assert len({len(values) for values in history.values()}) == 1
    assert np.isnan(history["val_fvu"][:2]).all() and np.isfinite(history["val_fvu"][2:]).all()


def test_bad_held_out_rows_are_rejected_naming_X_val(data):
    X, _, _ = data
    est = _small(SAEEncoder, max_iter=2)
    with pytest.raises(ValueError, match="X_val has 5 features but X has 8"):
        est.fit(X, X_val=np.ones((10, 5)))
    bad = X[:10].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="X_val"):
        est.fit(X, X_val=bad)
    with pytest.raises(ValueError, match="X_val"):
        est.fit(X, X_val=X[0])


def _topk_with_losing_latents(X, seed, auxk_alpha, **params):
    """A TopK SAE whose latents 0-15 lose every TopK competition (their encoder rows
    shrunk 100-fold after two epochs), then trained 20 more epochs."""
    est = SAEEncoder(n_components=32, activation="topk", n_nonzero_coefs=3, alpha=0.0,
                     batch_size=256, max_iter=2, random_state=seed, warm_start=True,
                     auxk_alpha=auxk_alpha, device="cpu", **params).fit(X)  # fmt: skip
    est.coefs_[0][:16] *= 0.01
    est.intercepts_[0][:16] = 0.0
    return est.set_params(max_iter=20).fit(X)


def test_auxk_revives_dead_latents(data):
    X, _, _ = make_sparse_dictionary_data(2048, n_features=16, n_components=32,
                                          n_nonzero_coefs=3, random_state=0)  # fmt: skip
    without = _topk_with_losing_latents(X, 0, auxk_alpha=0.0)
    with_auxk = _topk_with_losing_latents(X, 0, auxk_alpha=1 / 32)
    # Measured: 0.50 dead without AuxK, 0.34 with it (seeds 1 and 2: 0.47 -> 0.28, 0.25).
    assert without.dead_fraction_ >= 0.4
    assert with_auxk.dead_fraction_ <= without.dead_fraction_ - 4 / 32
    assert with_auxk.history_["mse"][-1] < without.history_["mse"][-1]
    # dead_fraction_ is the tracker's: latents not fired on the last epoch (the window).
    assert without.dead_window_ == 2048
    assert without.history_["dead_fraction"][-1] == without.dead_fraction_
    codes = without.transform(X)
    assert (codes == 0).all(axis=0).mean() == pytest.approx(without.dead_fraction_, abs=2 / 32)
    with pytest.raises(ValueError, match="auxk_alpha"):
        SAEEncoder(auxk_alpha=-1.0).fit(X)


def test_dead_latents_are_counted_over_the_window_not_the_epoch():
    X, _, _ = make_sparse_dictionary_data(2048, n_features=16, n_components=32,
                                          n_nonzero_coefs=3, random_state=0)  # fmt: skip
    dead = _topk_with_losing_latents(X, 0, auxk_alpha=0.0)
    # A window longer than the whole fit: nothing can be dead yet, although the same
    # latents never fired.
    unseen = _topk_with_losing_latents(X, 0, auxk_alpha=0.0, dead_window=10**9)
    assert dead.dead_fraction_ >= 0.4 and unseen.dead_fraction_ == 0.0
    np.testing.assert_array_equal(unseen.components_, dead.components_)
    # Half an epoch: more latents are dead (fired in the epoch, not in its last half).
    half = _topk_with_losing_latents(X, 0, auxk_alpha=0.0, dead_window=1024)
    assert half.dead_fraction_ >= dead.dead_fraction_
    with pytest.raises(ValueError, match="dead_window"):
        SAEEncoder(dead_window=0).fit(X)


@pytest.mark.parametrize("cls, full_batch", [(SAEEncoder, 1e-2), (MLPEncoder, 6e-3)])
def test_learning_rate_none_is_resolved_by_mode_and_width(cls, full_batch, data):
    X, _, _ = data
    params = dict(max_iter=1, random_state=0, device="cpu")
    assert cls(**params).fit(X).learning_rate_ == full_batch
    # Minibatches: 2e-4 / sqrt(n_components / 2**14), capped at the full-batch rate.
    wide = cls(n_components=4096, batch_size=512, **params).fit(X)
    assert wide.learning_rate_ == pytest.approx(4e-4)
    assert cls(n_components=2, batch_size=512, **params).fit(X).learning_rate_ == full_batch
    assert cls(learning_rate=3e-3, batch_size=512, **params).fit(X).learning_rate_ == 3e-3


@pytest.mark.parametrize(
    "hidden, rate",
    [((64,), 6e-3), ((256,), 6e-3), ((1024,), 1.5e-3), ((2048, 8), 7.5e-4)],
)
def test_mlp_learning_rate_none_falls_as_one_over_the_widest_hidden_layer(hidden, rate, data):
    # 6e-3 * min(1, 256 / H), H the widest hidden layer; an explicit rate is kept.
    X, _, codes = data
    params = dict(hidden_layer_sizes=hidden, max_iter=1, random_state=0, device="cpu")
    X, codes = X[:256], codes[:256]
    assert MLPEncoder(n_components=16, **params).fit(X).learning_rate_ == pytest.approx(rate)
    known = MLPEncoder(target="codes", **params).fit(X, codes)
    assert known.learning_rate_ == pytest.approx(rate)
    given = MLPEncoder(n_components=16, learning_rate=6e-3, **params).fit(X)
    assert given.learning_rate_ == 6e-3
    # Minibatches: sparsify's rule, capped at the width's full-batch rate.
    small = MLPEncoder(n_components=2, batch_size=64, **params).fit(X)
    assert small.learning_rate_ == pytest.approx(rate)


def test_a_relu_sae_in_minibatches_starts_with_a_small_encoder(data):
    X, _, _ = data
    # A learning rate too small to move anything shows the start.
    params = dict(n_components=16, max_iter=1, learning_rate=1e-12, random_state=0,
                  device="cpu")  # fmt: skip
    minibatch = SAEEncoder(batch_size=256, **params).fit(X)
    np.testing.assert_allclose(minibatch.coefs_[0], 0.1 * minibatch.components_, atol=1e-9)
    # Full batch (the paper's task) and TopK start at the decoder's transpose.
    for est in (SAEEncoder(**params),
                SAEEncoder(batch_size=256, activation="topk", n_nonzero_coefs=3, **params)):
        est.fit(X)
        np.testing.assert_allclose(est.coefs_[0], est.components_, atol=1e-9)


def test_max_grad_norm_is_validated_and_changes_a_minibatch_fit():
    from sklearn_sparsegap import SAETranscoder

    X, _, _ = make_sparse_dictionary_data(512, n_components=16, n_features=8, random_state=0)
    params = dict(n_components=16, activation="topk", n_nonzero_coefs=3, alpha=0.0,
                  batch_size=64, max_iter=2, random_state=0)  # fmt: skip
    with pytest.raises(ValueError, match="max_grad_norm"):
        SAEEncoder(max_grad_norm=0.0, **params).fit(X)
    plain = SAEEncoder(**params).fit(X)
    clipped = SAEEncoder(max_grad_norm=1e-3, **params).fit(X)
    assert np.isfinite(clipped.components_).all()
    # tiny clipped gradients still take Adam steps of about the rate, but not the same ones
    assert not np.allclose(clipped.components_, plain.components_)
    assert SAETranscoder(max_grad_norm=1.0).get_params()["max_grad_norm"] == 1.0
