"""The training function of the amortised encoders and its steps (``_autoencoder``).

``SAEEncoder.fit`` validates, resolves its defaults into ``AutoencoderSettings`` and calls
``fit_autoencoder``; these tests hold the steps to what the estimators rely on.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from sklearn_sparsegap import MLPEncoder, SAEEncoder, make_sparse_dictionary_data
from sklearn_sparsegap._autoencoder import (
    AutoencoderData,
    AutoencoderSettings,
    AutoencoderState,
    _gradients_and_source,
    _known_codes_decoder,
    _sampled_input_scale,
    _start_module,
    _training_callbacks,
    fit_autoencoder,
    fit_input_scale,
    load_weights,
    make_module,
    training_generator,
    zero_code_fraction,
)
from sklearn_sparsegap._training import Checkpoint, DeadLatents, ResampleDeadLatents


@pytest.fixture(scope="module")
def problem():
    X, dictionary, codes = make_sparse_dictionary_data(
        300, n_components=12, n_features=6, n_nonzero_coefs=2, random_state=0
    )
    return X.astype(np.float32), dictionary.astype(np.float32), codes.astype(np.float32)


def _settings(**changes):
    settings = AutoencoderSettings(
        n_components=12, hidden_layer_sizes=(), activation="relu", k=None,
        fit_intercept=True, target="reconstruction", alpha=0.1, codes_loss="sample",
        rescale=False, fit_scale=False, small_encoder_start=False, auxk_alpha=0.0,
        batch_size=64, n_epochs=2, learning_rate=1e-2, dead_window=300, tol=0.0,
        resample_dead_every=None, random_state=0, device=torch.device("cpu"),
        dtype=torch.float32, description="test", advice="",
    )  # fmt: skip
    return dataclasses.replace(settings, **changes)


def _record_calls(monkeypatch):
    """Record every call of fit_autoencoder made by the estimators, with its result."""
    import sklearn_sparsegap._sae as sae_module

    calls = []

    def recording(data, settings, previous=None, **kwargs):
        state = fit_autoencoder(data, settings, previous, **kwargs)
        calls.append((data, settings, previous, state))
        return state

    monkeypatch.setattr(sae_module, "fit_autoencoder", recording)
    return calls


@pytest.mark.parametrize("Estimator, params", [
    (SAEEncoder, {}),
    (MLPEncoder, {"hidden_layer_sizes": (8,)}),
    (SAEEncoder, {"activation": "topk", "n_nonzero_coefs": 2, "scale_input": True}),
])  # fmt: skip
def test_estimator_is_a_thin_shell_over_fit_autoencoder(problem, monkeypatch, Estimator, params):
    # fit validates and resolves, then stores exactly what one fit_autoencoder call
    # returns; calling it again with the same settings gives the same model.
    X = problem[0]
    calls = _record_calls(monkeypatch)
    est = Estimator(n_components=12, max_iter=2, batch_size=64, random_state=0, device="cpu",
                    **params).fit(X)
    assert len(calls) == 1
    data, settings, previous, state = calls[0]
    assert previous is None and data.X.shape == X.shape
    assert settings.batch_size == est.batch_size_ == 64
    assert settings.learning_rate == est.learning_rate_
    assert settings.n_epochs == est.max_iter_ == est.n_iter_ == 2
    np.testing.assert_array_equal(est.components_, state.components)
    for stored, returned in zip(est.coefs_, state.coefs):
        np.testing.assert_array_equal(stored, returned)
    assert est.training_flops_ == state.training_flops > 0
    assert est.input_scale_ == state.input_scale
    again = fit_autoencoder(data, settings)
    np.testing.assert_array_equal(again.components, state.components)


def test_a_continued_fit_starts_from_the_previous_state(problem, monkeypatch):
    X = problem[0]
    calls = _record_calls(monkeypatch)
    sae = SAEEncoder(n_components=12, max_iter=1, batch_size=64, random_state=0,
                     device="cpu", warm_start=True).fit(X).fit(X)
    (_, _, _, first), (_, _, previous, second) = calls
    np.testing.assert_array_equal(previous.components, first.components)
    assert previous.n_steps == first.n_steps > 0
    assert second.n_steps == 2 * first.n_steps and second.n_epochs == 2
    assert len(second.history["step"]) > len(first.history["step"])
    np.testing.assert_array_equal(sae.components_, second.components)


def test_training_generator_is_seeded_and_shifted_after_steps():
    draw = lambda g: torch.rand(4, generator=g)  # noqa: E731
    assert torch.equal(draw(training_generator(3)), draw(training_generator(3)))
    assert not torch.equal(draw(training_generator(3)), draw(training_generator(3, 10)))
    assert torch.equal(draw(training_generator(3, 10)), draw(training_generator(3, 10)))


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
def test_load_weights_round_trips_a_fitted_model(problem, activation):
    X = problem[0]
    sae = SAEEncoder(n_components=12, activation=activation, max_iter=5, random_state=0,
                     device="cpu").fit(X)
    module = make_module(6, 12, activation=activation, dtype=torch.float32)
    load_weights(module, sae._fitted_state())
    np.testing.assert_array_equal(module.components.detach().numpy(), sae.components_)
    codes = module.encode(torch.as_tensor(X[:20])).detach().numpy()
    np.testing.assert_allclose(codes, sae.transform(X[:20]), rtol=1e-6, atol=1e-7)
    if activation == "jumprelu":
        np.testing.assert_allclose(module.threshold.detach().numpy(), sae.threshold_, rtol=1e-6)


def test_input_scale_is_one_unless_asked_and_uses_evenly_spaced_rows(problem, monkeypatch):
    X = torch.as_tensor(problem[0]) * 7.0
    assert _sampled_input_scale(X, _settings()) == 1.0
    expected = fit_input_scale(X, centre=True)
    assert _sampled_input_scale(X, _settings(fit_scale=True)) == pytest.approx(expected)
    import sklearn_sparsegap._autoencoder as autoencoder

    monkeypatch.setattr(autoencoder, "MAX_SCALE_ROWS", 30)
    rows = torch.linspace(0, X.shape[0] - 1, 30).long()
    assert _sampled_input_scale(X, _settings(fit_scale=True)) == pytest.approx(
        fit_input_scale(X[rows], centre=True)
    )


def test_known_codes_decoder_streamed_equals_in_memory(problem, tmp_path):
    X, _, codes = problem
    path = tmp_path / "x.bin"
    memmap = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    memmap[:] = X
    memmap.flush()
    memmap = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    in_memory = _known_codes_decoder(
        AutoencoderData(X, codes), torch.as_tensor(X), torch.as_tensor(codes), None, None,
        fit_intercept=True, device="cpu",
    )  # fmt: skip
    streamed = _known_codes_decoder(
        AutoencoderData(memmap, codes, streamed=True), None, None, None, None,
        fit_intercept=True, device="cpu",
    )  # fmt: skip
    for a, b in zip(in_memory[0], streamed[0]):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5)
    # The least-squares decoder reconstructs X from its codes.
    dictionary, intercept = in_memory[0]
    residual = torch.as_tensor(codes, dtype=dictionary.dtype) @ dictionary + intercept
    residual -= torch.as_tensor(X, dtype=dictionary.dtype)
    assert float(residual.square().mean()) < 1e-8
    # Moments come back on the CPU, ready to be pickled with the estimator.
    assert all(v.device.type == "cpu" for v in in_memory[1].values() if torch.is_tensor(v))


def test_start_module_first_fit_scales_the_encoder_for_minibatch_relu(problem):
    X = torch.as_tensor(problem[0])
    starts = {}
    for small in (False, True):
        module = make_module(6, 12)
        history = _start_module(module, _settings(small_encoder_start=small), None, X=X,
                                codes=None, dictionary=None, decoder=None, scale=1.0,
                                full_batch=False, group=None)  # fmt: skip
        assert all(values == [] for values in history.values())
        starts[small] = module.weights[0].detach().clone()
    torch.testing.assert_close(starts[True], 0.1 * starts[False])


def test_start_module_continues_from_the_previous_state(problem):
    X = problem[0]
    previous = fit_autoencoder(AutoencoderData(X), _settings(n_epochs=1))
    module = make_module(6, 12)
    history = _start_module(module, _settings(), previous, X=torch.as_tensor(X), codes=None,
                            dictionary=None, decoder=None, scale=1.0, full_batch=False,
                            group=None)  # fmt: skip
    np.testing.assert_array_equal(module.components.detach().numpy(), previous.components)
    assert history["loss"] == list(previous.history["loss"])
    history["loss"].append(0.0)  # a copy: the previous state is left as it was
    assert len(previous.history["loss"]) == len(history["loss"]) - 1


def _callbacks(settings, previous=None, X_val=None, requires_grad=True, history=None):
    module = make_module(6, 12)
    module.components.requires_grad_(requires_grad)
    optimizer = torch.optim.Adam(module.parameters())
    history = {"step": [1, 2], "loss": [1.0, 0.5]} if history is None else history
    return _training_callbacks(module, optimizer, settings, previous, history=history,
                               X=torch.zeros(5, 6), X_val=X_val, scale=1.0,
                               step_flops=lambda rows: rows, group=None), history


def test_training_callbacks_resample_only_a_learned_dictionary(tmp_path):
    (callbacks, dead, resume), _ = _callbacks(_settings(resample_dead_every=10))
    assert isinstance(dead, DeadLatents) and resume is None
    assert any(isinstance(c, ResampleDeadLatents) for c in callbacks)
    (callbacks, _, _), _ = _callbacks(_settings(resample_dead_every=10), requires_grad=False)
    assert not any(isinstance(c, ResampleDeadLatents) for c in callbacks)
    settings = _settings(checkpoint=(str(tmp_path / "ck"), 5, {"a": 1}))
    (callbacks, _, _), _ = _callbacks(settings)
    assert any(isinstance(c, Checkpoint) for c in callbacks)


def test_training_callbacks_pad_earlier_logs_without_held_out_rows():
    (_, _, _), history = _callbacks(_settings(), X_val=np.zeros((3, 6), np.float32))
    assert len(history["val_fvu"]) == 2 and all(math.isnan(v) for v in history["val_fvu"])


def test_auxk_gradient_only_for_topk_reconstruction_with_dead_latents(problem):
    X = torch.as_tensor(problem[0])

    def gradients(activation, auxk_alpha, dead_rows):
        settings = _settings(activation=activation, k=2 if activation == "topk" else None,
                             auxk_alpha=auxk_alpha)  # fmt: skip
        torch.manual_seed(0)
        module = make_module(6, 12, activation=activation, k=settings.k)
        with torch.no_grad():
            for param in module.parameters():
                param.normal_(0, 0.5)
        dead = DeadLatents(12, window=1)
        dead.since[:6] = dead_rows  # half the latents dead
        compute, source = _gradients_and_source(
            module, settings, AutoencoderData(problem[0]), X=X, codes=None, source=None,
            scale=1.0, dead=dead, group=None,
        )  # fmt: skip
        assert source is None
        compute(torch.arange(64), False)
        return module.weights[0].grad.clone()

    topk_plain = gradients("topk", 0.0, 10)
    assert not torch.equal(gradients("topk", 1.0, 10), topk_plain)
    assert torch.equal(gradients("topk", 1.0, 0), topk_plain)  # nothing dead, no AuxK
    assert torch.equal(gradients("relu", 1.0, 10), gradients("relu", 0.0, 10))


def test_zero_code_fraction_counts_rows_with_no_active_latent():
    module = make_module(6, 12)
    with torch.no_grad():
        module.weights[0].zero_()
        module.biases[0].fill_(-1.0)
    X = torch.randn(50, 6)
    assert zero_code_fraction(module, X, 1.0, max_rows=20) == 1.0
    with torch.no_grad():
        module.biases[0][:5] = 1.0
    assert zero_code_fraction(module, X, 1.0, max_rows=20) == 0.0


def test_fit_autoencoder_on_known_codes_keeps_the_decoder_and_returns_moments(problem):
    X, _, codes = problem
    state = fit_autoencoder(AutoencoderData(X, codes), _settings(target="codes", n_epochs=1))
    assert state.code_moments is not None
    recon = codes @ state.components + state.intercept
    assert float(np.mean((recon - X) ** 2)) < 1e-8
    assert isinstance(state, AutoencoderState)


def _singular_system(device):
    # Rank 2 in 3 unknowns: a latent never active gives such a Gram matrix.
    design = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0],
                           [1.0, 2.0, 1.0]], dtype=torch.float64, device=device)
    target = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64, device=device)
    return design, target


def test_least_squares_is_minimum_norm_on_a_singular_system():
    from sklearn_sparsegap._autoencoder import _least_squares

    design, target = _singular_system("cpu")
    expected = np.linalg.pinv(design.numpy()) @ target.numpy()
    np.testing.assert_allclose(_least_squares(design, target).numpy(), expected, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_least_squares_on_cuda_matches_the_cpu_minimum_norm_answer():
    from sklearn_sparsegap._autoencoder import _least_squares

    design, target = _singular_system("cuda")
    solution = _least_squares(design, target)
    assert solution.device.type == "cuda"
    expected = np.linalg.pinv(design.cpu().numpy()) @ target.cpu().numpy()
    np.testing.assert_allclose(solution.cpu().numpy(), expected, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_known_codes_with_a_never_active_latent_fit_on_cuda(problem):
    X, _, codes = problem
    codes = codes.copy()
    codes[:, 0] = 0.0  # latent 0 never active: a singular least-squares decoder
    cpu = SAEEncoder(target="codes", max_iter=5, random_state=0, device="cpu").fit(X, codes)
    gpu = SAEEncoder(target="codes", max_iter=5, random_state=0, device="cuda").fit(X, codes)
    assert np.isfinite(gpu.components_).all()
    np.testing.assert_allclose(gpu.components_, cpu.components_, atol=1e-4)


def test_a_rank_pins_its_device_before_the_first_collective(problem, monkeypatch):
    # With NCCL a collective issued before torch.cuda.set_device puts every rank on
    # cuda:0 ("duplicate GPU"): rank_device must run before check_versions.
    import sklearn_sparsegap._sae as sae_module

    calls = []

    class Group:
        world_size, rank = 2, 0

    class Stop(Exception):
        pass

    def check_versions(group):
        calls.append("check_versions")
        raise Stop

    monkeypatch.setattr(sae_module, "current_group", lambda: Group())
    monkeypatch.setattr(sae_module, "rank_device",
                        lambda device: calls.append("rank_device") or "cpu")
    monkeypatch.setattr(sae_module, "check_versions", check_versions)
    with pytest.raises(Stop):
        SAEEncoder(n_components=4, max_iter=1).fit(problem[0])
    assert calls == ["rank_device", "check_versions"]
