"""Transcoders and skip transcoders between this library and SAELens / sparsify, checked
against the peers' own code: their models built (random weights) and saved by their own
save functions, their ``encode`` / ``decode`` / forward pass as the reference for our
``transform`` / ``inverse_transform`` / ``predict``; our exports loaded back by their
loaders; what a format cannot hold refused with a ``ValueError`` naming it; ITO on a
loaded transcoder refining its codes against ``Y``."""

import json

import numpy as np
import pytest
import torch

from sklearn_sparsegap import SAEPlusITO, SAETranscoder, make_sparse_dictionary_data
from sklearn_sparsegap.interop import load_sae, save_sae

from _peer_checks import close as _close, report_peer_differences  # noqa: F401 (its module fixture)

pytest.importorskip("safetensors", reason="safetensors is not installed (interop extra)")
from safetensors.torch import save_file  # noqa: E402

D_IN, D_SAE, D_OUT, K = 6, 16, 4, 3


def _close_outputs(label, ours, x, codes, decoded, predicted):
    """Our transform, inverse_transform and predict against the peer's encode, decode
    and forward pass on the rows ``x``."""
    _close(f"{label} encode", ours.transform(x.numpy()), codes)
    _close(f"{label} decode", ours.inverse_transform(codes.numpy()), decoded)
    _close(f"{label} forward", ours.predict(x.numpy()), predicted)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def x(rng):
    return torch.as_tensor(rng.normal(size=(64, D_IN)), dtype=torch.float32)


def _randomise(model, rng):
    """Random weights in place (a JumpReLU threshold uniform in [0, 0.5], so it gates)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            value = rng.normal(size=param.shape) * 0.5
            if name == "threshold":
                value = rng.uniform(0.0, 0.5, size=param.shape)
            param.copy_(torch.as_tensor(value).to(param.dtype))


def _no_triton(monkeypatch):
    if not torch.cuda.is_available():
        # sparsify decodes with a Triton kernel whenever Triton is importable, which
        # fails without a GPU; the variable, read at import, selects its eager decoder.
        monkeypatch.setenv("SPARSIFY_DISABLE_TRITON", "1")


# ------------------------------------------------------------------- SAELens
SAELENS_ARCHITECTURES = {
    # architecture: (class name, our activation, skip)
    "transcoder": ("Transcoder", "relu", False),
    "skip_transcoder": ("SkipTranscoder", "relu", True),
    "jumprelu_transcoder": ("JumpReLUTranscoder", "jumprelu", False),
    "jumprelu_skip_transcoder": ("JumpReLUSkipTranscoder", "jumprelu", True),
}


def _saelens_transcoder(architecture, rng, **config):
    import sae_lens

    name = SAELENS_ARCHITECTURES[architecture][0]
    model_class, config_class = getattr(sae_lens, name), getattr(sae_lens, name + "Config")
    model = model_class(config_class(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, dtype="float32",
                                     device="cpu", apply_b_dec_to_input=False, **config))
    _randomise(model, rng)
    return model


@pytest.mark.parametrize("architecture", sorted(SAELENS_ARCHITECTURES))
def test_saelens_transcoders_predict_as_saelens(tmp_path, rng, x, architecture):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens import SAE

    model = _saelens_transcoder(architecture, rng)
    model.save_model(tmp_path / "theirs")
    reference = SAE.load_from_disk(tmp_path / "theirs")  # what SAELens itself loads
    assert type(reference) is type(model)
    with torch.no_grad():
        codes = reference.encode(x)
        decoded = reference.decode(codes)
        predicted = reference(x)
    assert (codes > 0).any() and (codes == 0).any()
    _, activation, skip = SAELENS_ARCHITECTURES[architecture]
    ours = load_sae(tmp_path / "theirs")
    assert isinstance(ours, SAETranscoder)
    assert (ours.activation, ours.skip_connection, ours.n_outputs_) == (activation, skip, D_OUT)
    assert ours.components_.shape == (D_SAE, D_OUT) and ours.coefs_[0].shape == (D_SAE, D_IN)
    label = f"saelens {architecture}"
    _close_outputs(label, ours, x, codes, decoded, predicted)
    # our export: SAELens's own loader gets the same class and outputs; ours reads it back
    save_sae(ours, tmp_path / "ours", format="saelens")
    back = SAE.load_from_disk(tmp_path / "ours")
    assert type(back) is type(model) and back.cfg.d_out == D_OUT
    with torch.no_grad():
        _close(f"{label} export, SAELens encode", back.encode(x).numpy(), codes)
        _close(f"{label} export, SAELens forward", back(x).numpy(), predicted)
    again = load_sae(tmp_path / "ours")
    _close(f"{label} export, load_sae predict", again.predict(x.numpy()), predicted)


def test_saelens_transcoder_scaling_factor_scales_input_and_output(tmp_path, rng, x):
    """A transcoder with ``expected_average_only_in``: the factor of
    ``activation_scaler.json`` multiplies its input and divides its prediction (one
    scaler for both, as SAELens applies its ``ActivationScaler``), folded into the
    weights so that ``predict`` takes and gives raw activations."""
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens.training.activation_scaler import ActivationScaler

    model = _saelens_transcoder("skip_transcoder", rng,
                                normalize_activations="expected_average_only_in")
    model.save_model(tmp_path)
    scaler = ActivationScaler(scaling_factor=0.37)
    scaler.save(str(tmp_path / "activation_scaler.json"))
    ours = load_sae(tmp_path)
    with torch.no_grad():
        codes = model.encode(scaler.scale(x))
        predicted = scaler.unscale(model(scaler.scale(x)))
    _close("saelens scaled skip_transcoder encode", ours.transform(x.numpy()), codes)
    _close("saelens scaled skip_transcoder forward", ours.predict(x.numpy()), predicted)


# ------------------------------------------------------------------- sparsify
SPARSIFY_KINDS = {
    # kind: (transcode, skip_connection)
    "transcoder": (True, False),
    "skip_transcoder": (True, True),
    "skip_autoencoder": (False, True),  # an SAE with a skip: our skip transcoder of Y = X
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", sorted(SPARSIFY_KINDS))
def test_sparsify_transcoders_predict_as_sparsify(tmp_path, rng, x, monkeypatch, kind, dtype):
    _no_triton(monkeypatch)
    pytest.importorskip("sparsify", reason="sparsify is not installed")
    from sparsify import SparseCoder, SparseCoderConfig

    transcode, skip = SPARSIFY_KINDS[kind]
    config = SparseCoderConfig(num_latents=D_SAE, k=K, transcode=transcode, skip_connection=skip)
    model = SparseCoder(D_IN, config, dtype=dtype)
    _randomise(model, rng)
    model.save_to_disk(tmp_path / "theirs")
    # The library computing on the same (exactly widened) weights.
    reference = SparseCoder.load_from_disk(tmp_path / "theirs").to(torch.float32)
    with torch.no_grad():
        top_acts, top_indices, _ = reference.encode(x)
        codes = torch.zeros(len(x), D_SAE).scatter_(1, top_indices, top_acts)
        decoded = reference.decode(top_acts, top_indices)
        predicted = reference(x).sae_out
    ours = load_sae(tmp_path / "theirs")
    assert isinstance(ours, SAETranscoder)
    assert (ours.activation, ours.n_nonzero_coefs, ours.skip_connection) == ("topk", K, skip)
    label = f"sparsify {kind} {dtype}"
    _close_outputs(label, ours, x, codes, decoded, predicted)
    # our export (always transcode=True: our encoder reads x as it is) in their loader
    save_sae(ours, tmp_path / "ours", format="sparsify")
    back = SparseCoder.load_from_disk(tmp_path / "ours")
    assert back.cfg.transcode and back.cfg.skip_connection == skip
    with torch.no_grad():
        acts, indices, _ = back.encode(x)
        _close(f"{label} export, sparsify encode",
               torch.zeros(len(x), D_SAE).scatter_(1, indices, acts).numpy(), codes)
        _close(f"{label} export, sparsify forward", back(x).sae_out.numpy(), predicted)
    again = load_sae(tmp_path / "ours")
    _close(f"{label} export, load_sae predict", again.predict(x.numpy()), predicted)


# ------------------------------------------------ trained by us, read by them
@pytest.fixture(scope="module")
def data():
    X, _, codes = make_sparse_dictionary_data(256, n_components=12, n_features=D_IN,
                                              n_nonzero_coefs=3, random_state=0)
    mixing = np.random.default_rng(1).normal(size=(12, D_OUT))
    X = X.astype(np.float32)
    Y = (codes @ mixing + 0.1 * X[:, :D_OUT]).astype(np.float32)
    return X, Y


def _ours(data, activation, skip, *, n_outputs=D_OUT, **params):
    X, Y = data
    Y = Y if n_outputs == D_OUT else np.concatenate([Y, X[:, : n_outputs - D_OUT]], axis=1)
    k = K if activation in ("topk", "batchtopk") else None
    alpha = 0.0 if k else 0.05
    return SAETranscoder(n_components=D_SAE, activation=activation, n_nonzero_coefs=k,
                         alpha=alpha, skip_connection=skip, max_iter=30, random_state=0,
                         device="cpu", **params).fit(X, Y)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "batchtopk"])
def test_our_transcoders_save_to_saelens_and_round_trip(tmp_path, data, activation, skip):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens import SAE

    X = data[0]
    ours = _ours(data, activation, skip)
    save_sae(ours, tmp_path, format="saelens")
    theirs = SAE.load_from_disk(tmp_path)
    expected = ("jumprelu_" if activation != "relu" else "") + ("skip_" if skip else "")
    assert theirs.cfg.architecture() == expected + "transcoder"
    label = f"our {activation} skip={skip} in SAELens"
    with torch.no_grad():
        _close(f"{label} encode", theirs.encode(torch.as_tensor(X)).numpy(), ours.transform(X))
        _close(f"{label} forward", theirs(torch.as_tensor(X)).numpy(), ours.predict(X))
    back = load_sae(tmp_path)
    # BatchTopK comes back as the JumpReLU it is at inference (SAELens has no BatchTopK
    # transcoder), encoding the same
    assert back.activation == ("relu" if activation == "relu" else "jumprelu")
    _close(f"{label}, load_sae predict", back.predict(X), ours.predict(X))


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("skip", [False, True])
def test_our_topk_transcoders_save_to_sparsify_and_round_trip(tmp_path, data, monkeypatch,
                                                              skip, fit_intercept):
    _no_triton(monkeypatch)
    pytest.importorskip("sparsify", reason="sparsify is not installed")
    from sparsify import SparseCoder

    X = data[0]
    # sparsify's outputs have the input's width
    ours = _ours(data, "topk", skip, n_outputs=D_IN, fit_intercept=fit_intercept)
    save_sae(ours, tmp_path, format="sparsify")
    theirs = SparseCoder.load_from_disk(tmp_path)
    assert theirs.cfg.transcode and theirs.cfg.skip_connection == skip
    label = f"our topk skip={skip} fit_intercept={fit_intercept} in sparsify"
    with torch.no_grad():
        acts, indices, _ = theirs.encode(torch.as_tensor(X))
        codes = torch.zeros(len(X), D_SAE).scatter_(1, indices, acts)
        _close(f"{label} encode", codes.numpy(), ours.transform(X))
        _close(f"{label} forward", theirs(torch.as_tensor(X)).sae_out.numpy(), ours.predict(X))
    back = load_sae(tmp_path)
    assert back.skip_connection == skip and back.n_nonzero_coefs == K
    _close(f"{label}, load_sae predict", back.predict(X), ours.predict(X))


# ------------------------------------------------------- what cannot be represented
def test_what_the_peer_formats_cannot_store_is_named(tmp_path, data):
    with pytest.raises(ValueError, match="SAELens has no TopK transcoder"):
        save_sae(_ours(data, "topk", False), tmp_path / "a", format="saelens")
    with pytest.raises(ValueError, match="sparsify stores TopK transcoders only.*'relu'"):
        save_sae(_ours(data, "relu", True), tmp_path / "b", format="sparsify")
    with pytest.raises(ValueError, match="n_outputs=4 for n_features=6"):
        save_sae(_ours(data, "topk", True), tmp_path / "c", format="sparsify")
    with pytest.raises(ValueError, match="dictionary_learning has no transcoders"):
        save_sae(_ours(data, "relu", False), tmp_path / "d", format="dictionary_learning")
    unestimated = _ours(data, "batchtopk", False)
    unestimated.threshold_ = np.full(D_SAE, np.nan)
    with pytest.raises(ValueError, match="batchtopk.*threshold is not estimated"):
        save_sae(unestimated, tmp_path / "e", format="saelens")
    assert not any((tmp_path / name).exists() for name in "abcde")  # nothing half-written


def _write(folder, tensors, config, weights_file):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: torch.as_tensor(np.asarray(value), dtype=torch.float32).contiguous()
               for name, value in tensors.items()}, str(folder / weights_file))
    (folder / "cfg.json").write_text(json.dumps(config))


def test_transcoder_checkpoints_we_cannot_represent_are_named(tmp_path, rng):
    """Checkpoints written here in each format (the peers are not needed)."""
    saelens = {"W_enc": rng.normal(size=(D_IN, D_SAE)), "b_enc": rng.normal(size=D_SAE),
               "W_dec": rng.normal(size=(D_SAE, D_OUT)), "b_dec": rng.normal(size=D_OUT),
               "W_skip": rng.normal(size=(D_OUT, D_IN))}
    config = {"architecture": "skip_transcoder", "d_in": D_IN, "d_sae": D_SAE, "d_out": D_OUT,
              "apply_b_dec_to_input": False, "normalize_activations": "none",
              "metadata": {"sae_lens_version": "6.54.12"}}
    cases = {
        "b_dec_input": (saelens, {**config, "apply_b_dec_to_input": True},
                        "apply_b_dec_to_input=True is not supported for a transcoder"),
        "layer_norm": (saelens, {**config, "normalize_activations": "layer_norm"},
                       "normalize_activations='layer_norm'"),
        "no_skip": ({k: v for k, v in saelens.items() if k != "W_skip"}, config,
                    r"missing tensor.*W_skip"),
        "d_out": (saelens, {**config, "d_out": D_OUT + 1}, r"'W_dec' has shape"),
        "no_scaler": (saelens, {**config, "normalize_activations": "expected_average_only_in"},
                      "activation_scaler.json is missing"),
    }
    for name, (tensors, cfg, message) in cases.items():
        _write(tmp_path / name, tensors, cfg, "sae_weights.safetensors")
        with pytest.raises(ValueError, match=message):
            load_sae(tmp_path / name)
    assert load_sae(tmp_path / "no_scaler", scaling_factor=2.0).skip_connection
    sparsify = {"encoder.weight": rng.normal(size=(D_SAE, D_IN)),
                "encoder.bias": rng.normal(size=D_SAE), "W_dec": rng.normal(size=(D_SAE, D_IN)),
                "b_dec": rng.normal(size=D_IN), "W_skip": rng.normal(size=(D_IN, D_IN))}
    config = {"activation": "topk", "num_latents": D_SAE, "k": K, "transcode": True,
              "skip_connection": True, "d_in": D_IN}
    cases = {
        "groupmax": (sparsify, {**config, "activation": "groupmax"}, "groupmax"),
        "skip_shape": ({**sparsify, "W_skip": np.eye(D_OUT)}, config, r"'W_skip' has shape"),
        "extra_skip": (sparsify, {**config, "skip_connection": False},
                       r"unexpected tensor.*W_skip"),
    }
    for name, (tensors, cfg, message) in cases.items():
        _write(tmp_path / name, tensors, cfg, "sae.safetensors")
        with pytest.raises(ValueError, match=message):
            load_sae(tmp_path / name)


# ------------------------------------------------------------ ITO on a loaded one
def _peer_skip_transcoder(peer, rng, folder, monkeypatch):
    """A skip transcoder built and saved by ``peer``, and its forward pass."""
    if peer == "saelens":
        pytest.importorskip("sae_lens", reason="SAELens is not installed")
        model = _saelens_transcoder("jumprelu_skip_transcoder", rng)
        model.save_model(folder)
        return lambda x: model(x)
    _no_triton(monkeypatch)
    pytest.importorskip("sparsify", reason="sparsify is not installed")
    from sparsify import SparseCoder, SparseCoderConfig

    model = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K, transcode=True,
                                                skip_connection=True))
    _randomise(model, rng)
    model.save_to_disk(folder)
    return lambda x: model(x).sae_out


@pytest.mark.parametrize("peer", ["saelens", "sparsify"])
def test_ito_refines_a_loaded_transcoder_against_Y(tmp_path, rng, x, monkeypatch, peer):
    forward = _peer_skip_transcoder(peer, rng, tmp_path, monkeypatch)
    X = x.numpy()
    with torch.no_grad():
        Y = (forward(x).numpy() + 0.2 * rng.normal(size=(len(X), D_OUT if peer == "saelens"
                                                           else D_IN))).astype(np.float32)
    loaded = load_sae(tmp_path)
    ito = SAEPlusITO(loaded, prefit=True, device="cpu").fit(X, Y)
    assert ito.encoder_ is loaded  # prefit: the loaded transcoder as it is
    start, refined = loaded.transform(X), ito.transform(X, Y)
    # the default "l0" guard: no more non-zeros than the encoder's, per row ...
    assert np.all((refined != 0).sum(axis=1) <= (start != 0).sum(axis=1))
    # ... and no larger error on Y (less the skip connection's part)
    signal = Y - X @ loaded.skip_.T
    before = ((signal - loaded.inverse_transform(start)) ** 2).sum(axis=1)
    after = ((signal - loaded.inverse_transform(refined)) ** 2).sum(axis=1)
    assert np.all(after <= before + 1e-4) and after.mean() < before.mean()
    gap = ito.amortisation_gap(X, per_sample=True, y=Y)
    assert np.all(gap >= -1e-5) and gap.mean() > 0
    with pytest.raises(ValueError, match="transcoder.*pass them"):
        ito.amortisation_gap(X)
    loaded.partial_fit(X, Y)  # training continues from the checkpoint
    assert loaded.n_iter_ == 1 and loaded.skip_.shape == (Y.shape[1], D_IN)
