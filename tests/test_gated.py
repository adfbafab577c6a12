"""Gated SAEs (Rajamanoharan et al. 2024): ``SAEEncoder(activation="gated")`` trained on
the gated loss (checked against dictionary_learning's ``GatedSAETrainer`` loss and its
gradients), exact ``transform``, its JumpReLU form, continued training, export to and
load from SAELens and dictionary_learning (their own ``encode`` as the reference), and
ITO refinement."""

import copy
import json

import numpy as np
import pytest
import torch

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, make_sparse_dictionary_data
from sklearn_sparsegap._autoencoder import make_gradient_function, make_module
from sklearn_sparsegap.interop import load_sae, save_sae

from _peer_checks import close as _close, report_peer_differences  # noqa: F401 (its module fixture)

D_IN, D_SAE = 12, 32


@pytest.fixture(scope="module")
def data():
    X, _, _ = make_sparse_dictionary_data(512, n_components=24, n_features=D_IN,
                                          n_nonzero_coefs=3, random_state=0)
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def gated(data):
    return SAEEncoder(n_components=D_SAE, activation="gated", alpha=0.05, max_iter=150,
                      random_state=0, device="cpu").fit(data)


def _gated_codes(est, X):
    """The gated encode written out from the fitted attributes (float64)."""
    X = np.asarray(X, dtype=np.float64)
    W, b_gate = est.coefs_[0].astype(np.float64), est.intercepts_[0].astype(np.float64)
    u = (X - est.intercept_) @ W.T
    magnitude = np.exp(est.magnitude_log_scale_.astype(np.float64)) * u + est.magnitude_bias_
    return (u + b_gate > 0) * np.maximum(magnitude, 0)


def test_gated_transform_is_the_gated_encode_and_its_jumprelu(gated, data):
    codes = gated.transform(data)
    assert 0 < (codes != 0).sum(axis=1).mean() < D_SAE
    _close("ours: transform vs the gated formula", codes, _gated_codes(gated, data))
    # the JumpReLU form: ReLU(pi_mag) * 1[pi_mag > threshold_]
    scale = np.exp(gated.magnitude_log_scale_)
    pre = (data - gated.intercept_) @ (gated.coefs_[0] * scale[:, None]).T + gated.magnitude_bias_
    _close("ours: transform vs its JumpReLU form", codes,
           np.maximum(pre, 0) * (pre > gated.threshold_))
    np.testing.assert_allclose(
        gated.threshold_, gated.magnitude_bias_ - scale * gated.intercepts_[0], rtol=1e-6)
    # the input scale is folded: a model fitted on 10 X encodes 10 X as 10 times the codes
    assert gated.input_scale_ != 1.0
    history = gated.history_
    assert np.all(np.isfinite(history["loss"]))


def test_gated_alpha_sets_the_sparsity(data):
    l0 = []
    for alpha in (0.01, 0.3):
        est = SAEEncoder(n_components=D_SAE, activation="gated", alpha=alpha, max_iter=100,
                         random_state=0, device="cpu").fit(data)
        l0.append((est.transform(data) != 0).sum(axis=1).mean())
    assert l0[1] < l0[0]


def test_gated_continues_training(gated, data):
    est = copy.deepcopy(gated)
    est.set_params(warm_start=True, max_iter=5).fit(data)
    assert est.n_iter_ == gated.n_iter_ + 5
    est.partial_fit(data[:64])
    _close("ours: after continued training", est.transform(data), _gated_codes(est, data))


def test_gated_loss_is_half_dictionary_learning_gated_loss():
    """Our gated loss at alpha = l1_penalty / 2 is half of dictionary_learning's
    GatedSAETrainer.loss (after its sparsity warm-up), with gradients in the same ratio."""
    rng = np.random.default_rng(0)
    pytest.importorskip("dictionary_learning", reason="dictionary_learning is not installed")
    from dictionary_learning.dictionary import GatedAutoEncoder
    from dictionary_learning.trainers.gdm import GatedSAETrainer

    torch.manual_seed(0)
    theirs = GatedAutoEncoder(D_IN, D_SAE).double()
    with torch.no_grad():
        for param in theirs.parameters():
            param.copy_(torch.as_tensor(rng.normal(size=param.shape) * 0.5))
    x = torch.as_tensor(rng.normal(size=(40, D_IN)))
    trainer = GatedSAETrainer.__new__(GatedSAETrainer)
    trainer.ae, trainer.l1_penalty = theirs, 0.3
    trainer.sparsity_warmup_fn = lambda step: 1.0
    their_loss = trainer.loss(x, step=10**6)
    their_loss.backward()

    module = make_module(D_IN, D_SAE, activation="gated", dtype=torch.float64)
    with torch.no_grad():
        module.weights[0].copy_(theirs.encoder.weight)
        module.biases[0].copy_(theirs.gate_bias)
        module.magnitude_log_scale.copy_(theirs.r_mag)
        module.magnitude_bias.copy_(theirs.mag_bias)
        module.components.copy_(theirs.decoder.weight.T)
        module.intercept.copy_(theirs.decoder_bias)
    compute = make_gradient_function(module, x, alpha=trainer.l1_penalty / 2)
    _, stats = compute(None, True)
    np.testing.assert_allclose(2 * float(stats[0]), float(their_loss.detach()), rtol=1e-10)
    pairs = [(module.weights[0], theirs.encoder.weight), (module.biases[0], theirs.gate_bias),
             (module.magnitude_log_scale, theirs.r_mag), (module.magnitude_bias, theirs.mag_bias),
             (module.intercept, theirs.decoder_bias)]
    for ours, their in pairs:
        np.testing.assert_allclose(2 * ours.grad.numpy(), their.grad.numpy(), rtol=1e-9,
                                   atol=1e-12)
    np.testing.assert_allclose(2 * module.components.grad.numpy(),
                               theirs.decoder.weight.grad.T.numpy(), rtol=1e-9, atol=1e-12)


def test_gated_exports_to_saelens_and_dictionary_learning(tmp_path, gated, data):
    ours = gated.transform(data)
    recon = gated.inverse_transform(ours)
    for format in ("saelens", "dictionary_learning"):
        save_sae(gated, tmp_path / format, format=format)
        back = load_sae(tmp_path / format)
        _close(f"round trip gated {format}", back.transform(data), ours)
    x = torch.as_tensor(data)
    if pytest.importorskip("sae_lens", reason="SAELens is not installed"):
        from sae_lens import SAE

        model = SAE.load_from_disk(tmp_path / "saelens")
        assert type(model).__name__ == "GatedSAE"
        with torch.no_grad():
            codes = model.encode(x)
            _close("SAELens GatedSAE encode of our gated SAE", codes.numpy(), ours)
            _close("SAELens GatedSAE decode of our codes", model.decode(torch.as_tensor(ours)).numpy(),
                   recon)
    if pytest.importorskip("dictionary_learning", reason="dictionary_learning is not installed"):
        from dictionary_learning.utils import load_dictionary

        model, _ = load_dictionary(str(tmp_path / "dictionary_learning"), device="cpu")
        assert type(model).__name__ == "GatedAutoEncoder"
        with torch.no_grad():
            _close("dictionary_learning GatedAutoEncoder encode of our gated SAE",
                   model.encode(x).numpy(), ours)
            _close("dictionary_learning GatedAutoEncoder decode of our codes",
                   model.decode(torch.as_tensor(ours)).numpy(), recon)


def test_gated_sae_trained_by_saelens_loads_and_encodes_as_saelens(tmp_path, data):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens import SAE
    from sae_lens.saes.gated_sae import GatedTrainingSAE, GatedTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    torch.manual_seed(0)
    model = GatedTrainingSAE(GatedTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, dtype="float32",
                                                    device="cpu", l1_coefficient=0.1))
    x = torch.as_tensor(data)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):  # SAELens's own training step
        optimizer.zero_grad()
        output = model.training_forward_pass(TrainStepInput(
            sae_in=x, coefficients={"l1": 0.1}, dead_neuron_mask=None, n_training_steps=0,
            is_logging_step=False))
        output.loss.backward()
        optimizer.step()
    assert float(model.r_mag.detach().abs().max()) > 0 and float(model.b_gate.detach().abs().max()) > 0
    model.save_model(tmp_path / "trained")
    reference = SAE.load_from_disk(tmp_path / "trained")
    with torch.no_grad():
        codes = reference.encode(x)
        recon = reference.decode(codes)
    assert (codes > 0).any() and (codes == 0).any()
    ours = load_sae(tmp_path / "trained")
    assert ours.activation == "gated"
    _close("SAELens-trained gated: load_sae encode", ours.transform(data), codes)
    _close("SAELens-trained gated: load_sae decode", ours.inverse_transform(codes.numpy()), recon)
    # saved back, SAELens reads the same gated SAE; training continues from it
    save_sae(ours, tmp_path / "back", format="saelens")
    with torch.no_grad():
        _close("SAELens-trained gated: our re-export, SAELens encode",
               SAE.load_from_disk(tmp_path / "back").encode(x).numpy(), codes)
    ours.partial_fit(data)
    _close("SAELens-trained gated: after partial_fit", ours.transform(data),
           _gated_codes(ours, data))


def test_gated_sae_trained_by_dictionary_learning_loads_and_encodes_as_it(tmp_path, data):
    pytest.importorskip("dictionary_learning", reason="dictionary_learning is not installed")
    from dictionary_learning.trainers.gdm import GatedSAETrainer
    from dictionary_learning.utils import load_dictionary

    trainer = GatedSAETrainer(steps=40, activation_dim=D_IN, dict_size=D_SAE, layer=0,
                              lm_name="none", lr=1e-2, warmup_steps=1,
                              sparsity_warmup_steps=1, seed=0, device="cpu")
    x = torch.as_tensor(data)
    for step in range(40):  # its own training steps
        trainer.update(step, x)
    folder = tmp_path / "dl"
    folder.mkdir()
    torch.save(trainer.ae.state_dict(), folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": trainer.config, "buffer": {}}))
    model, _ = load_dictionary(str(folder), device="cpu")
    with torch.no_grad():
        codes = model.encode(x)
        recon = model.decode(codes)
    assert (codes > 0).any() and (codes == 0).any()
    ours = load_sae(folder)
    assert ours.activation == "gated"
    _close("dictionary_learning-trained gated: load_sae encode", ours.transform(data), codes)
    _close("dictionary_learning-trained gated: load_sae decode",
           ours.inverse_transform(codes.numpy()), recon)


def test_ito_refines_gated_never_worse(gated, data):
    ito = SAEPlusITO(gated, prefit=True, device="cpu").fit(data)
    start, refined = gated.transform(data), ito.transform(data)
    assert np.all((refined != 0).sum(axis=1) <= (start != 0).sum(axis=1))
    before = np.square(data - gated.inverse_transform(start)).sum(axis=1)
    after = np.square(data - ito.inverse_transform(refined)).sum(axis=1)
    assert np.all(after <= before + 1e-6)
    print(f"gated ITO: mean squared error {before.mean():.4g} -> {after.mean():.4g} at mean L0 "
          f"{(start != 0).sum(axis=1).mean():.2f} -> {(refined != 0).sum(axis=1).mean():.2f}")
    assert after.mean() < before.mean()
    assert ito.amortisation_gap(data) > 0


def test_gated_bad_settings_are_named(data):
    with pytest.raises(ValueError, match="activation='gated'.*target='codes'"):
        SAEEncoder(n_components=4, activation="gated", target="codes", max_iter=2,
                   device="cpu").fit(data, np.abs(data[:, :4]))
    est = SAEEncoder(n_components=4, activation="gated", max_iter=2, device="cpu").fit(data)
    with pytest.raises(ValueError, match="sparsify stores TopK SAEs only.*gated"):
        save_sae(est, "unused", format="sparsify")


def test_gated_warm_start_continues_exactly(data):
    X = data.astype(np.float64)  # scale_input: the trained biases (b_mag too) carry over
    common = {"n_components": D_SAE, "activation": "gated", "alpha": 0.05, "random_state": 0,
              "device": "cpu"}
    whole = SAEEncoder(max_iter=20, **common).fit(X)
    parts = SAEEncoder(max_iter=10, warm_start=True, **common).fit(X)
    parts.fit(X)
    assert whole.input_scale_ != 1.0
    for name in ("components_", "magnitude_log_scale_", "magnitude_bias_", "threshold_"):
        np.testing.assert_allclose(getattr(parts, name), getattr(whole, name), atol=1e-12,
                                   err_msg=name)
    np.testing.assert_allclose(parts.intercepts_[0], whole.intercepts_[0], atol=1e-12)


def test_gated_minibatches_checkpoint_and_streaming(data, tmp_path):
    common = {"n_components": D_SAE, "activation": "gated", "alpha": 0.05, "batch_size": 64,
              "max_iter": 3, "random_state": 0, "device": "cpu"}
    path = tmp_path / "gated.pt"
    est = SAEEncoder(checkpoint_path=str(path), **common).fit(data, X_val=data[:64])
    assert path.exists() and np.isfinite(est.history_["val_fvu"][-1])
    # a second fit resumes from the finished checkpoint: the same model
    again = SAEEncoder(checkpoint_path=str(path), **common).fit(data, X_val=data[:64])
    np.testing.assert_array_equal(again.transform(data), est.transform(data))
    np.testing.assert_array_equal(again.magnitude_bias_, est.magnitude_bias_)
    # streamed from disk in minibatches
    from unittest import mock

    import sklearn_sparsegap._batches as batches

    np.save(tmp_path / "X.npy", data)
    on_disk = np.load(tmp_path / "X.npy", mmap_mode="r")
    with mock.patch.object(batches, "IN_MEMORY_BYTES", 1):
        streamed = SAEEncoder(**common).fit(on_disk)
    _close("ours: streamed fit", streamed.transform(data), _gated_codes(streamed, data))


def test_gated_resampling_restarts_the_magnitude_path_of_dead_latents(data):
    from sklearn_sparsegap._autoencoder import DeadLatentResampler
    from sklearn_sparsegap._training import make_adam

    module = make_module(D_IN, D_SAE, activation="gated")
    with torch.no_grad():
        for param in module.parameters():
            param.normal_()
    optimizer = make_adam([p for p in module.parameters() if p.requires_grad], 1e-3)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[:3] = True
    DeadLatentResampler(module, optimizer, torch.as_tensor(data),
                        torch.Generator().manual_seed(0))(dead)
    assert torch.all(module.magnitude_log_scale[:3] == 0)
    assert torch.all(module.magnitude_bias[:3] == 0)
    assert torch.all(module.magnitude_bias[3:] != 0)
