"""BatchTopK and Matryoshka BatchTopK SAEs between this library and SAELens /
dictionary_learning, checked against the peers' own code: their models built, their
thresholds set by their own training step, saved by their own save functions, and
their ``encode``/``decode`` as the reference; our export loaded back by their loaders."""

import json

import numpy as np
import pytest
import torch

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, SAETranscoder, make_sparse_dictionary_data
from sklearn_sparsegap.interop import load_sae, save_sae

from _peer_checks import close as _close, report_peer_differences  # noqa: F401 (its module fixture)

D_IN, D_SAE, K = 12, 32, 4


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _randomise(model, rng):
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.as_tensor(rng.normal(size=param.shape) * 0.5, dtype=param.dtype))
        # decoder rows of unequal norms: exercises rescale_acts_by_decoder_norm
        W_dec = model.W_dec if hasattr(model, "W_dec") else model.decoder.weight.T
        W_dec.mul_(torch.as_tensor(rng.uniform(0.5, 1.5, size=(W_dec.shape[0], 1)),
                                   dtype=W_dec.dtype))


# ------------------------------------------------------------------- SAELens
def _saelens_training_sae(kind, rescale):
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )

    common = dict(d_in=D_IN, d_sae=D_SAE, k=K, dtype="float32", device="cpu",
                  rescale_acts_by_decoder_norm=rescale)
    if kind == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common))
    return MatryoshkaBatchTopKTrainingSAE(
        MatryoshkaBatchTopKTrainingSAEConfig(matryoshka_widths=[8, 16, D_SAE], **common)
    )


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("kind", ["batchtopk", "matryoshka_batchtopk"])
def test_saelens_batchtopk_checkpoints_encode_as_saelens(tmp_path, rng, kind, rescale):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainStepInput

    model = _saelens_training_sae(kind, rescale)
    _randomise(model, rng)
    x = torch.as_tensor(rng.normal(size=(64, D_IN)), dtype=torch.float32)
    # SAELens's own training steps estimate the global threshold.
    for _ in range(20):
        model.training_forward_pass(TrainStepInput(sae_in=x, coefficients={},
                                                   dead_neuron_mask=None, n_training_steps=0,
                                                   is_logging_step=False))
    assert float(model.topk_threshold) > 0
    model.save_model(tmp_path / "training")  # the training checkpoint (topk_threshold, k)
    model.save_inference_model(tmp_path / "inference")  # what SAELens publishes (JumpReLU)
    reference = SAE.load_from_disk(tmp_path / "inference")
    with torch.no_grad():
        codes = reference.encode(x)
        recon = reference.decode(codes)
    assert (codes > 0).any()
    label = f"saelens {kind} rescale={rescale}"
    training = load_sae(tmp_path / "training", dtype="float64")
    assert training.activation == "batchtopk" and training.n_nonzero_coefs == K
    if kind == "matryoshka_batchtopk":
        assert tuple(training.matryoshka_prefixes) == (8, 16, D_SAE)
    _close(f"{label} (training checkpoint) encode", training.transform(x.numpy()), codes)
    _close(f"{label} (training checkpoint) decode",
           training.inverse_transform(codes.numpy()), recon)
    inference = load_sae(tmp_path / "inference")
    _close(f"{label} (inference checkpoint) encode", inference.transform(x.numpy()), codes)
    # our export: SAELens's own loader gets the same codes; ours reads it back
    save_sae(training, tmp_path / "ours", format="saelens")
    back = SAE.load_from_disk(tmp_path / "ours")
    with torch.no_grad():
        _close(f"{label} export, SAELens encode", back.encode(x).numpy(), codes)
    _close(f"{label} export, load_sae encode",
           load_sae(tmp_path / "ours").transform(x.numpy()), codes)


def test_saelens_batchtopk_config_with_a_fractional_k_loads_as_its_jumprelu(tmp_path, rng):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    model = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=2.5, dtype="float32", device="cpu",
        rescale_acts_by_decoder_norm=False))  # fmt: skip
    _randomise(model, rng)
    model.topk_threshold.fill_(0.3)
    model.save_model(tmp_path / "m")
    loaded = load_sae(tmp_path / "m")
    # k=2.5 is an average no integer n_nonzero_coefs holds: the exact inference form
    assert loaded.activation == "jumprelu"
    np.testing.assert_allclose(loaded.threshold_, 0.3, rtol=1e-6)


# --------------------------------------------------------- dictionary_learning
def _dl_model(kind):
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE

    if kind == "BatchTopKSAE":
        return BatchTopKSAE(D_IN, D_SAE, K)
    return MatryoshkaBatchTopKSAE(D_IN, D_SAE, K, group_sizes=[8, 8, 16])


def _dl_threshold_by_its_trainer(model, x):
    """dictionary_learning's own threshold update (BatchTopKTrainer.update_threshold)
    on the model's batch-top-k codes, as its trainer does after its start step."""
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer

    trainer = BatchTopKTrainer.__new__(BatchTopKTrainer)
    trainer.ae, trainer.threshold_beta = model, 0.9
    for _ in range(5):
        with torch.no_grad():
            codes = model.encode(x, use_threshold=False)
        trainer.update_threshold(codes)


@pytest.mark.parametrize("kind", ["BatchTopKSAE", "MatryoshkaBatchTopKSAE"])
def test_dictionary_learning_batchtopk_encodes_as_dictionary_learning(tmp_path, rng, kind):
    pytest.importorskip("dictionary_learning", reason="dictionary_learning is not installed")
    from dictionary_learning.utils import load_dictionary

    model = _dl_model(kind)
    _randomise(model, rng)
    x = torch.as_tensor(rng.normal(size=(64, D_IN)), dtype=torch.float32)
    _dl_threshold_by_its_trainer(model, x)
    assert float(model.threshold) > 0
    folder = tmp_path / kind
    folder.mkdir()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": {
        "dict_class": kind, "activation_dim": D_IN, "dict_size": D_SAE, "k": K}, "buffer": {}}))
    library, _ = load_dictionary(str(folder), device="cpu")
    with torch.no_grad():
        codes = library.encode(x)
        recon = library.decode(codes)
    assert (codes > 0).any()
    ours = load_sae(folder, dtype="float64")
    assert ours.activation == "batchtopk" and ours.n_nonzero_coefs == K
    if kind == "MatryoshkaBatchTopKSAE":
        assert tuple(ours.matryoshka_prefixes) == (8, 16, D_SAE)
    _close(f"dictionary_learning {kind} encode", ours.transform(x.numpy()), codes)
    _close(f"dictionary_learning {kind} decode", ours.inverse_transform(codes.numpy()), recon)
    # round trip: their loader reads our export as the same class and encodes the same
    save_sae(ours, tmp_path / "ours", format="dictionary_learning")
    back, config = load_dictionary(str(tmp_path / "ours"), device="cpu")
    assert type(back).__name__ == kind and config["trainer"]["k"] == K
    with torch.no_grad():
        _close(f"dictionary_learning {kind} export, their encode", back.encode(x).numpy(), codes)
    again = load_sae(tmp_path / "ours", dtype="float64")
    assert again.matryoshka_prefixes == ours.matryoshka_prefixes
    _close(f"dictionary_learning {kind} export, load_sae encode", again.transform(x.numpy()),
           codes)


# ------------------------------------------------ trained by us, read by them
@pytest.fixture(scope="module")
def trained():
    X, _, _ = make_sparse_dictionary_data(256, n_components=24, n_features=D_IN,
                                          n_nonzero_coefs=3, random_state=0)
    common = dict(n_components=D_SAE, activation="batchtopk", n_nonzero_coefs=K, alpha=0.0,
                  max_iter=40, random_state=0, device="cpu")
    return X.astype(np.float32), {
        "batchtopk": SAEEncoder(**common).fit(X.astype(np.float32)),
        "matryoshka": SAEEncoder(matryoshka_prefixes=(8, 16), **common).fit(X.astype(np.float32)),
        # sampled widths: exported as the BatchTopK SAE it is at inference
        "sampled matryoshka": SAEEncoder(matryoshka_prefixes=3, **common).fit(
            X.astype(np.float32)
        ),
    }


@pytest.mark.parametrize("family", ["batchtopk", "matryoshka", "sampled matryoshka"])
def test_our_batchtopk_saves_to_both_peers_and_round_trips(tmp_path, trained, family):
    X, models = trained
    est = models[family]
    ours = est.transform(X)
    for format in ("saelens", "dictionary_learning"):
        save_sae(est, tmp_path / format, format=format)
        back = load_sae(tmp_path / format)
        _close(f"round trip {family} {format}", back.transform(X), ours)
    # dictionary_learning keeps the family (and the prefixes); SAELens its JumpReLU form
    back = load_sae(tmp_path / "dictionary_learning")
    assert back.activation == "batchtopk" and back.n_nonzero_coefs == K
    expected = (8, 16, D_SAE) if family == "matryoshka" else None
    assert back.matryoshka_prefixes == expected
    assert load_sae(tmp_path / "saelens").activation == "jumprelu"
    if pytest.importorskip("sae_lens", reason="SAELens is not installed"):
        from sae_lens import SAE

        with torch.no_grad():
            theirs = SAE.load_from_disk(tmp_path / "saelens").encode(torch.as_tensor(X))
        _close(f"SAELens encode of our {family}", theirs.numpy(), ours)


def test_loaded_batchtopk_continues_training_and_is_refined_by_ito(tmp_path, trained):
    X, models = trained
    save_sae(models["batchtopk"], tmp_path / "dl", format="dictionary_learning")
    loaded = load_sae(tmp_path / "dl")
    ito = SAEPlusITO(loaded, prefit=True, device="cpu").fit(X)
    assert ito.amortisation_gap(X) >= 0
    loaded.partial_fit(X)  # BatchTopK training continues from the checkpoint
    assert np.isfinite(loaded.threshold_[0])


def test_what_the_peers_cannot_represent_is_named(tmp_path, trained):
    X, models = trained
    with pytest.raises(ValueError, match="sparsify stores TopK SAEs only.*batchtopk"):
        save_sae(models["batchtopk"], tmp_path / "s", format="sparsify")
    import copy

    unestimated = copy.deepcopy(models["batchtopk"])
    unestimated.threshold_ = np.full(D_SAE, np.nan)
    for format in ("saelens", "dictionary_learning"):
        with pytest.raises(ValueError, match="batchtopk.*threshold is not estimated"):
            save_sae(unestimated, tmp_path / format, format=format)
    Y = X[:, :3]
    transcoder = SAETranscoder(n_components=8, max_iter=5, random_state=0, device="cpu").fit(X, Y)
    # SAELens and sparsify store transcoders (tests/test_interop_transcoders.py)
    with pytest.raises(ValueError, match="dictionary_learning has no transcoders"):
        save_sae(transcoder, tmp_path / "t", format="dictionary_learning")
