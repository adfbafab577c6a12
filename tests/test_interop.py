"""sklearn_sparsegap.interop: peer checkpoints load as exact SAEEncoders and export back.

Two layers of tests:

- Without the peer libraries: a fixture writes checkpoints that follow each format as
  documented in docs/interop.rst (from the libraries' source), and a reference encoder /
  decoder written here from the same formulas (independently of the reader) checks
  that ``transform`` / ``inverse_transform`` of the loaded estimator agree with it.
- With the peer libraries installed (``pip install -e ".[benchmark]"``): small random
  SAEs built and saved by each library, loaded by us and compared with the library's
  own ``encode`` / ``decode``; our exports loaded back by the library.
"""

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator

from sklearn_sparsegap import MLPEncoder, SAEEncoder, SAEPlusITO, make_sparse_dictionary_data
from sklearn_sparsegap.interop import load_sae, save_sae

pytest.importorskip("safetensors", reason="safetensors is not installed (interop extra)")
from safetensors.torch import save_file  # noqa: E402

D_IN, D_SAE, K = 6, 10, 3
ATOL = 1e-10  # float64 weights and inputs: the loaded model is the same arithmetic


def _t(array, dtype=torch.float32):
    return torch.as_tensor(np.array(array)).to(dtype).contiguous()  # keeps 0-d arrays 0-d


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def X(rng):
    return rng.normal(size=(64, D_IN)) * 2.0 + 0.3


def _random_tensors(rng):
    return {
        "W_enc": rng.normal(size=(D_IN, D_SAE)),
        "b_enc": rng.normal(size=D_SAE) * 0.3,
        "W_dec": rng.normal(size=(D_SAE, D_IN)) * rng.uniform(0.5, 2.0, size=(D_SAE, 1)),
        "b_dec": rng.normal(size=D_IN),
    }


def _topk_relu(pre, k):
    out = np.zeros_like(pre)
    index = np.argsort(-pre, axis=1)[:, :k]
    rows = np.arange(len(pre))[:, None]
    out[rows, index] = np.maximum(pre[rows, index], 0)
    return out


# ----------------------------------------------------------------------------- SAELens
def _write_saelens(folder, tensors, config, dtype=torch.float64):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: _t(v, dtype) for name, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(config))


def _saelens_reference(config, t, x, scale=1.0):
    """SAELens's encode/decode, from sae_lens/saes/*.py (documented in docs/interop.rst)."""
    apply = config.get("apply_b_dec_to_input", True)
    sae_in = x * scale - t["b_dec"] * apply
    arch = config["architecture"]
    if arch == "gated":
        gate = (sae_in @ t["W_enc"] + t["b_gate"]) > 0
        mag = np.maximum(sae_in @ (t["W_enc"] * np.exp(t["r_mag"])) + t["b_mag"], 0)
        codes = gate * mag
    else:
        pre = sae_in @ t["W_enc"] + t["b_enc"]
        norms = np.linalg.norm(t["W_dec"], axis=1)
        if arch == "topk":
            if config.get("rescale_acts_by_decoder_norm"):
                pre = pre * norms
            codes = _topk_relu(pre, config["k"])
        elif arch == "jumprelu":
            codes = np.maximum(pre, 0) * (pre > t["threshold"])
        else:
            codes = np.maximum(pre, 0)

    def decode(f):
        if arch == "topk" and config.get("rescale_acts_by_decoder_norm"):
            f = f / np.linalg.norm(t["W_dec"], axis=1)
        return (f @ t["W_dec"] + t["b_dec"]) / scale

    return codes, decode


_V6 = {"metadata": {"sae_lens_version": "6.5.0"}, "dtype": "float32", "device": "cpu"}
SAELENS_CASES = {
    "standard": {"architecture": "standard"},
    "standard_no_b_dec_input": {"architecture": "standard", "apply_b_dec_to_input": False},
    "topk": {"architecture": "topk", "k": K},
    "topk_rescaled": {"architecture": "topk", "k": K, "rescale_acts_by_decoder_norm": True},
    "jumprelu": {"architecture": "jumprelu", "apply_b_dec_to_input": False},
    "gated": {"architecture": "gated"},
    "gated_no_b_dec_input": {"architecture": "gated", "apply_b_dec_to_input": False},
}


@pytest.mark.parametrize("case", sorted(SAELENS_CASES))
def test_saelens_checkpoint_matches_reference(tmp_path, rng, X, case):
    config = {"d_in": D_IN, "d_sae": D_SAE, "normalize_activations": "none", **_V6,
              **SAELENS_CASES[case]}
    tensors = _random_tensors(rng)
    if config["architecture"] == "jumprelu":
        tensors["threshold"] = rng.uniform(0.0, 1.0, size=D_SAE)
    if config["architecture"] == "gated":
        tensors.pop("b_enc")
        tensors.update(b_gate=rng.normal(size=D_SAE) * 0.3, b_mag=rng.normal(size=D_SAE) * 0.3,
                       r_mag=rng.normal(size=D_SAE) * 0.3)
    _write_saelens(tmp_path, tensors, config)
    sae = load_sae(tmp_path, dtype="float64")
    codes, decode = _saelens_reference(config, tensors, X)
    assert (codes > 0).any() and (codes == 0).any()
    np.testing.assert_allclose(sae.transform(X), codes, atol=ATOL, rtol=0)
    np.testing.assert_allclose(sae.inverse_transform(codes), decode(codes), atol=ATOL, rtol=1e-10)
    assert sae.get_params()["activation"] == {"standard": "relu", "topk": "topk",
                                              "gated": "gated"}.get(
        config["architecture"], "jumprelu"
    )


def test_saelens_activation_scaler_is_folded_so_raw_inputs_are_right(tmp_path, rng, X):
    """An intermediate SAELens checkpoint trained on scaled activations: the factor in
    activation_scaler.json becomes part of the weights (issue trap: normalisation)."""
    config = {"d_in": D_IN, "d_sae": D_SAE, "architecture": "standard",
              "normalize_activations": "expected_average_only_in", **_V6}
    tensors = _random_tensors(rng)
    _write_saelens(tmp_path, tensors, config)
    with pytest.raises(ValueError, match="activation_scaler.json is missing"):
        load_sae(tmp_path)
    (tmp_path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.37}))
    sae = load_sae(tmp_path, dtype="float64")
    codes, decode = _saelens_reference(config, tensors, X, scale=0.37)
    np.testing.assert_allclose(sae.transform(X), codes, atol=1e-9, rtol=0)
    np.testing.assert_allclose(sae.inverse_transform(codes), decode(codes), atol=1e-9, rtol=1e-9)
    # An explicit factor overrides the file.
    override = load_sae(tmp_path, dtype="float64", scaling_factor=2.0)
    np.testing.assert_allclose(override.transform(X), _saelens_reference(config, tensors, X, 2.0)[0],
                               atol=1e-9, rtol=0)


def test_saelens_pre_6_config_field_names(tmp_path, rng, X):
    config = {"d_in": D_IN, "d_sae": D_SAE, "hook_point": "blocks.3.hook_resid_pre",
              "activation_fn_str": "topk", "activation_fn_kwargs": {"k": K},
              "normalize_activations": False, "apply_b_dec_to_input": True}
    tensors = _random_tensors(rng)
    _write_saelens(tmp_path, tensors, config)
    sae = load_sae(tmp_path, dtype="float64")
    assert sae.activation == "topk" and sae.n_nonzero_coefs == K
    expected, _ = _saelens_reference({"architecture": "topk", "k": K}, tensors, X)
    np.testing.assert_allclose(sae.transform(X), expected, atol=ATOL, rtol=0)


def test_saelens_training_checkpoints_log_threshold_and_batchtopk(tmp_path, rng, X):
    tensors = _random_tensors(rng)
    threshold = rng.uniform(0.05, 1.0, size=D_SAE)
    base = {"d_in": D_IN, "d_sae": D_SAE, "normalize_activations": "none", **_V6}
    _write_saelens(tmp_path / "j", {**tensors, "log_threshold": np.log(threshold)},
                   {**base, "architecture": "jumprelu"})
    expected, _ = _saelens_reference({"architecture": "jumprelu"}, {**tensors, "threshold": threshold}, X)
    np.testing.assert_allclose(load_sae(tmp_path / "j", dtype="float64").transform(X), expected,
                               atol=ATOL, rtol=0)
    _write_saelens(tmp_path / "b", {**tensors, "topk_threshold": np.array(0.4)},
                   {**base, "architecture": "batchtopk", "k": K})
    expected, _ = _saelens_reference({"architecture": "jumprelu"},
                                     {**tensors, "threshold": np.full(D_SAE, 0.4)}, X)
    np.testing.assert_allclose(load_sae(tmp_path / "b", dtype="float64").transform(X), expected,
                               atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- sparsify
def _write_sparsify(folder, tensors, config, dtype):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: _t(v, dtype) for name, v in tensors.items()}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(config))


def _sparsify_tensors(rng):
    return {
        "encoder.weight": rng.normal(size=(D_SAE, D_IN)),
        "encoder.bias": rng.normal(size=D_SAE) * 0.3,
        "W_dec": rng.normal(size=(D_SAE, D_IN)),
        "b_dec": rng.normal(size=D_IN),
    }


_SPARSIFY_CFG = {"activation": "topk", "expansion_factor": 2, "normalize_decoder": True,
                 "num_latents": D_SAE, "k": K, "multi_topk": False, "skip_connection": False,
                 "transcode": False, "d_in": D_IN}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("transposed", [False, True])
def test_sparsify_checkpoint_matches_reference(tmp_path, rng, X, dtype, transposed):
    """bfloat16 storage and both W_dec orientations (issue trap: SAELens's converter
    transposes W_dec); the reference computes in float64 on the stored values."""
    tensors = _sparsify_tensors(rng)
    stored = {**tensors, "W_dec": tensors["W_dec"].T if transposed else tensors["W_dec"]}
    _write_sparsify(tmp_path, stored, _SPARSIFY_CFG, dtype)
    exact = {name: _t(v, dtype).double().numpy() for name, v in tensors.items()}
    sae = load_sae(tmp_path, dtype="float64")
    pre = np.maximum((X - exact["b_dec"]) @ exact["encoder.weight"].T + exact["encoder.bias"], 0)
    codes = _topk_relu(pre, K)
    np.testing.assert_allclose(sae.transform(X), codes, atol=ATOL, rtol=0)
    np.testing.assert_allclose(sae.inverse_transform(codes), codes @ exact["W_dec"] + exact["b_dec"],
                               atol=ATOL, rtol=0)
    assert sae.n_nonzero_coefs == K and sae.components_.shape == (D_SAE, D_IN)


def test_scaling_factor_folds_into_any_format(tmp_path, rng, X):
    """An SAE trained on activations multiplied by s takes raw activations once s is
    given: codes of s x, reconstructions divided by s."""
    tensors = _sparsify_tensors(rng)
    _write_sparsify(tmp_path, tensors, _SPARSIFY_CFG, torch.float64)
    sae = load_sae(tmp_path, dtype="float64", scaling_factor=2.5)
    pre = np.maximum((2.5 * X - tensors["b_dec"]) @ tensors["encoder.weight"].T
                     + tensors["encoder.bias"], 0)
    codes = _topk_relu(pre, K)
    np.testing.assert_allclose(sae.transform(X), codes, atol=1e-9, rtol=0)
    np.testing.assert_allclose(sae.inverse_transform(codes),
                               (codes @ tensors["W_dec"] + tensors["b_dec"]) / 2.5, atol=1e-9)
    with pytest.raises(ValueError, match="scaling_factor must be a positive number"):
        load_sae(tmp_path, scaling_factor=-1.0)


@pytest.mark.parametrize(
    "change, message",
    # transcode / skip_connection load as transcoders: tests/test_interop_transcoders.py
    [({"activation": "groupmax"}, "groupmax"), ({"signed": True}, "signed")],
)
def test_sparsify_unsupported_settings_are_named(tmp_path, rng, change, message):
    _write_sparsify(tmp_path, _sparsify_tensors(rng), {**_SPARSIFY_CFG, **change}, torch.float32)
    with pytest.raises(ValueError, match=message):
        load_sae(tmp_path)


# ------------------------------------------------------------------ dictionary_learning
def _write_dl(folder, state, dict_class, **trainer):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({name: _t(v, torch.float64) if np.asarray(v).dtype.kind == "f" else torch.as_tensor(v)
                for name, v in state.items()}, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps(
        {"trainer": {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE, **trainer},
         "buffer": {}}))


def _dl_case(rng, dict_class):
    """A random state dict of ``dict_class`` and its encode/decode (dictionary.py,
    trainers/*.py) as written in the library."""
    W = rng.normal(size=(D_SAE, D_IN))  # encoder.weight, (dict, d_in)
    b = rng.normal(size=D_SAE) * 0.3
    Wd = rng.normal(size=(D_IN, D_SAE))  # decoder.weight, (d_in, dict)
    bd = rng.normal(size=D_IN)
    if dict_class == "AutoEncoder":
        state = {"bias": bd, "encoder.weight": W, "encoder.bias": b, "decoder.weight": Wd}
        return state, lambda x: np.maximum((x - bd) @ W.T + b, 0), lambda f: f @ Wd.T + bd
    if dict_class == "AutoEncoderNew":
        state = {"encoder.weight": W, "encoder.bias": b, "decoder.weight": Wd, "decoder.bias": bd}
        return state, lambda x: np.maximum(x @ W.T + b, 0), lambda f: f @ Wd.T + bd
    if dict_class == "GatedAutoEncoder":
        r, gb, mb = (rng.normal(size=D_SAE) * 0.3 for _ in range(3))
        state = {"decoder_bias": bd, "encoder.weight": W, "r_mag": r, "gate_bias": gb,
                 "mag_bias": mb, "decoder.weight": Wd}

        def encode(x):
            u = (x - bd) @ W.T
            return (u + gb > 0) * np.maximum(np.exp(r) * u + mb, 0)

        return state, encode, lambda f: f @ Wd.T + bd
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        threshold = 0.5 if dict_class == "BatchTopKSAE" else -1.0
        state = {"encoder.weight": W, "encoder.bias": b, "decoder.weight": Wd, "b_dec": bd,
                 "k": np.array(K, dtype=np.int32), "threshold": np.array(threshold)}
        if dict_class == "AutoEncoderTopK":
            encode = lambda x: _topk_relu(np.maximum((x - bd) @ W.T + b, 0), K)  # noqa: E731
        else:
            def encode(x):
                post = np.maximum((x - bd) @ W.T + b, 0)
                return post * (post > threshold)
        return state, encode, lambda f: f @ Wd.T + bd
    # JumpReluAutoEncoder: no input shift (apply_b_dec_to_input=False)
    theta = rng.uniform(0.0, 1.0, size=D_SAE)
    state = {"W_enc": W.T, "b_enc": b, "W_dec": Wd.T, "b_dec": bd, "threshold": theta}

    def encode(x):
        pre = x @ W.T + b
        return np.maximum(pre * (pre > theta), 0)

    return state, encode, lambda f: f @ Wd.T + bd


@pytest.mark.parametrize("dict_class", ["AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder",
                                        "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder"])
def test_dictionary_learning_checkpoint_matches_reference(tmp_path, rng, X, dict_class):
    state, encode, decode = _dl_case(rng, dict_class)
    _write_dl(tmp_path, state, dict_class, **({"k": K} if "TopK" in dict_class else {}))
    sae = load_sae(tmp_path, dtype="float64")
    codes = encode(X)
    assert (codes > 0).any() and (codes == 0).any()
    if dict_class == "AutoEncoder":
        # load_dictionary renormalises the decoder (normalize_decoder=True): the codes
        # scale by the atom norms and the reconstructions are unchanged.
        norms = np.linalg.norm(state["decoder.weight"], axis=0)
        np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(sae.transform(X), codes * norms, atol=1e-9, rtol=0)
        np.testing.assert_allclose(sae.inverse_transform(codes * norms), decode(codes), atol=1e-9)
    else:
        np.testing.assert_allclose(sae.transform(X), codes, atol=ATOL, rtol=0)
        np.testing.assert_allclose(sae.inverse_transform(codes), decode(codes), atol=ATOL)


# ------------------------------------------------------------------------ round trips
@pytest.fixture(scope="module")
def fitted():
    X, _, _ = make_sparse_dictionary_data(512, n_components=12, n_features=8, random_state=0)
    models = {
        "relu": SAEEncoder(n_components=12, max_iter=100, random_state=0).fit(X),
        "topk": SAEEncoder(n_components=12, activation="topk", n_nonzero_coefs=3, alpha=0.0,
                           max_iter=100, random_state=0).fit(X),
        "jumprelu": SAEEncoder(n_components=12, activation="jumprelu", alpha=0.01, max_iter=100,
                               random_state=0).fit(X),
    }
    return X, models


@pytest.mark.parametrize("format, activation", [
    ("saelens", "relu"), ("saelens", "topk"), ("saelens", "jumprelu"), ("sparsify", "topk"),
    ("dictionary_learning", "topk"), ("dictionary_learning", "jumprelu"),
])
def test_round_trip_gives_the_same_codes(tmp_path, fitted, format, activation):
    X, models = fitted
    sae = models[activation]
    save_sae(sae, tmp_path, format=format)
    loaded = load_sae(tmp_path)
    assert loaded.get_params()["activation"] == activation
    np.testing.assert_allclose(loaded.transform(X), sae.transform(X), atol=2e-5, rtol=1e-5)
    codes = sae.transform(X)
    np.testing.assert_allclose(loaded.inverse_transform(codes), sae.inverse_transform(codes),
                               atol=1e-5)


def test_dictionary_learning_relu_round_trip_keeps_reconstructions(tmp_path, fitted):
    """A ReLU SAE exported as dictionary_learning's AutoEncoder loads with unit-norm
    atoms (as load_dictionary does); our atoms are already unit norm, so codes agree."""
    X, models = fitted
    save_sae(models["relu"], tmp_path, format="dictionary_learning")
    loaded = load_sae(tmp_path)
    np.testing.assert_allclose(loaded.transform(X), models["relu"].transform(X), atol=2e-5)


def test_loaded_estimator_is_a_usable_fitted_estimator(tmp_path, fitted):
    X, models = fitted
    save_sae(models["topk"], tmp_path, format="sparsify")
    loaded = load_sae(tmp_path)
    params = loaded.get_params()
    assert params["n_components"] == 12 and params["n_nonzero_coefs"] == 3 and params["alpha"] == 0.0
    assert loaded.n_iter_ == 0 and loaded.training_flops_ == 0 and len(loaded.history_["loss"]) == 0
    assert loaded.device_ == "cpu"
    # clone gives an unfitted estimator with the same parameters (scikit-learn contract)
    assert clone(loaded).get_params() == params and not hasattr(clone(loaded), "components_")
    # ITO on the loaded SAE's own decoder never does worse than the SAE.
    ito = SAEPlusITO(FrozenEstimator(loaded), transform_alpha=0.01).fit(X)
    np.testing.assert_array_equal(ito.components_, loaded.components_)
    gaps = ito.amortisation_gap(X, per_sample=True)
    assert (gaps >= -1e-7).all() and gaps.mean() > 0
    # partial_fit continues training from the loaded weights.
    before = loaded.score(X)
    loaded.partial_fit(X)
    assert loaded.n_iter_ == 1 and loaded.score(X) > before - 1e-3


def test_float32_default_and_device(tmp_path, fitted):
    X, models = fitted
    save_sae(models["relu"], tmp_path, format="saelens")
    loaded = load_sae(tmp_path, device="cpu")
    assert loaded.components_.dtype == np.float32 and loaded.device == "cpu"
    assert load_sae(tmp_path, dtype="float64").coefs_[0].dtype == np.float64
    with pytest.raises(ValueError, match="dtype"):
        load_sae(tmp_path, dtype="float16")


# ------------------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_file_and_tensor(tmp_path, rng):
    config = {"d_in": D_IN, "d_sae": D_SAE, "architecture": "standard",
              "normalize_activations": "none", **_V6}
    tensors = _random_tensors(rng)
    cases = {
        "missing": ({k: v for k, v in tensors.items() if k != "b_enc"}, config, r"missing tensor.*b_enc"),
        "extra": ({**tensors, "W_skip": np.eye(D_IN)}, config, r"unexpected tensor.*W_skip"),
        "shape": ({**tensors, "b_dec": np.zeros(D_IN + 1)}, config, r"'b_dec' has shape"),
        "nan": ({**tensors, "W_enc": np.full((D_IN, D_SAE), np.nan)}, config, r"'W_enc' has NaN"),
        "arch": (tensors, {**config, "architecture": "temporal"}, "not supported"),
        "norm": (tensors, {**config, "normalize_activations": "constant_norm_rescale"},
                 "constant_norm_rescale"),
    }
    for name, (weights, cfg, message) in cases.items():
        _write_saelens(tmp_path / name, weights, cfg)
        with pytest.raises(ValueError, match=message) as info:
            load_sae(tmp_path / name)
        assert name in str(info.value) or "cfg.json" in str(info.value)


def test_detection_errors(tmp_path, rng, fitted):
    with pytest.raises(ValueError, match="does not exist"):
        load_sae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a known SAE checkpoint"):
        load_sae(tmp_path / "empty")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "cfg.json").write_text("{}")
    torch.save({"W_enc": torch.zeros(2, 2)}, pickled / "sae_weights.pt")
    with pytest.raises(ValueError, match="pickle"):
        load_sae(pickled)
    # a pickle file under the safetensors name is refused, not unpickled
    torch.save({"W_enc": torch.zeros(2, 2)}, pickled / "sae_weights.safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_sae(pickled)
    # a sparsify run folder with one checkpoint per hookpoint
    _write_sparsify(tmp_path / "run" / "layers.3", _sparsify_tensors(rng), _SPARSIFY_CFG, torch.float32)
    with pytest.raises(ValueError, match="layers.3"):
        load_sae(tmp_path / "run")
    with pytest.raises(ValueError, match="format must be one of"):
        load_sae(tmp_path / "run" / "layers.3", format="sae_lens")
    # a file of the checkpoint works as well as its folder
    assert load_sae(tmp_path / "run" / "layers.3" / "cfg.json").n_components == D_SAE


def test_dictionary_learning_errors(tmp_path, rng):
    state, _, _ = _dl_case(rng, "AutoEncoder")
    _write_dl(tmp_path / "a", state, "CrossCoder")
    with pytest.raises(ValueError, match="dict_class='CrossCoder' is not supported"):
        load_sae(tmp_path / "a")
    _write_dl(tmp_path / "b", state, "AutoEncoder")
    torch.save({"step": 10, "ae": {k: torch.zeros(1) for k in state}, "optimizer": {}},
               tmp_path / "b" / "ae.pt")
    with pytest.raises(ValueError, match="training backup"):
        load_sae(tmp_path / "b")
    _write_dl(tmp_path / "c", state, "AutoEncoder", activation_dim=D_IN + 1)
    with pytest.raises(ValueError, match="activation_dim"):
        load_sae(tmp_path / "c")


def test_save_errors(tmp_path, fitted):
    X, models = fitted
    with pytest.raises(ValueError, match="TopK SAEs only"):
        save_sae(models["relu"], tmp_path, format="sparsify")
    with pytest.raises(ValueError, match="MLP"):
        save_sae(MLPEncoder(hidden_layer_sizes=(4,), max_iter=2).fit(X), tmp_path, format="saelens")
    with pytest.raises(ValueError, match="not fitted"):
        save_sae(SAEEncoder(), tmp_path, format="saelens")
    with pytest.raises(ValueError, match="format must be one of"):
        save_sae(models["relu"], tmp_path, format="auto")
    # a frozen estimator is accepted
    save_sae(FrozenEstimator(models["relu"]), tmp_path / "frozen", format="saelens")
    assert load_sae(tmp_path / "frozen").n_components == 12


# ----------------------------------------------------------------- the peer libraries
def test_saelens_library_agrees(tmp_path, rng):
    sae_lens = pytest.importorskip("sae_lens", reason="SAELens is not installed (benchmark extra)")
    from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig
    from sae_lens import GatedSAE, GatedSAEConfig, JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.training.activation_scaler import ActivationScaler

    x = torch.as_tensor(rng.normal(size=(40, D_IN)), dtype=torch.float32)
    common = dict(d_in=D_IN, d_sae=D_SAE, dtype="float32", device="cpu")
    models = {
        "standard": StandardSAE(StandardSAEConfig(**common)),
        "standard_no_b_dec": StandardSAE(StandardSAEConfig(apply_b_dec_to_input=False, **common)),
        "topk": TopKSAE(TopKSAEConfig(k=K, **common)),
        "topk_rescaled": TopKSAE(TopKSAEConfig(k=K, rescale_acts_by_decoder_norm=True, **common)),
        "jumprelu": JumpReLUSAE(JumpReLUSAEConfig(**common)),
        "jumprelu_no_b_dec": JumpReLUSAE(JumpReLUSAEConfig(apply_b_dec_to_input=False, **common)),
        "gated": GatedSAE(GatedSAEConfig(**common)),
        "gated_no_b_dec": GatedSAE(GatedSAEConfig(apply_b_dec_to_input=False, **common)),
        # a training checkpoint and one trained on scaled activations
        "jumprelu_training": JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(**common)),
        "scaled": StandardSAE(StandardSAEConfig(normalize_activations="expected_average_only_in",
                                                **common)),
    }
    scaler = ActivationScaler(scaling_factor=0.37)
    for name, model in models.items():
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(torch.as_tensor(rng.normal(size=param.shape) * 0.5, dtype=torch.float32))
            if name.startswith("jumprelu"):
                model.threshold.copy_(torch.rand(D_SAE) * 0.5)
            model.W_dec.mul_(torch.rand(D_SAE, 1) + 0.5)
        folder = tmp_path / name
        model.save_model(folder)
        scale = 1.0
        if name == "scaled":
            scaler.save(str(folder / "activation_scaler.json"))
            scale = scaler.scaling_factor
        ours = load_sae(folder)
        with torch.no_grad():
            codes = model.encode(x * scale)
            recon = model.decode(codes) / scale
        assert (codes > 0).any(), name
        np.testing.assert_allclose(ours.transform(x.numpy()), codes.numpy(), atol=1e-5, rtol=1e-5,
                                   err_msg=name)
        np.testing.assert_allclose(ours.inverse_transform(codes.numpy()), recon.numpy(), atol=1e-5,
                                   rtol=1e-5, err_msg=name)
        # our export loads back in SAELens and encodes the same
        save_sae(ours, tmp_path / f"{name}_ours", format="saelens")
        back = SAE.load_from_disk(tmp_path / f"{name}_ours")
        with torch.no_grad():
            np.testing.assert_allclose(back.encode(x).numpy(), codes.numpy(), atol=1e-5, rtol=1e-5,
                                       err_msg=name)
            np.testing.assert_allclose(back.decode(codes).numpy(), recon.numpy(), atol=1e-5,
                                       rtol=1e-5, err_msg=name)
    assert sae_lens.__version__


def test_sparsify_library_agrees(tmp_path, rng, monkeypatch):
    if not torch.cuda.is_available():
        # sparsify decodes with a Triton kernel whenever Triton is importable (a CUDA
        # build of torch brings it), which fails without a GPU; the variable, read at
        # import, selects its eager decoder.
        monkeypatch.setenv("SPARSIFY_DISABLE_TRITON", "1")
    sparsify = pytest.importorskip("sparsify", reason="sparsify is not installed (benchmark extra)")
    from sparsify import SparseCoder, SparseCoderConfig

    x = torch.as_tensor(rng.normal(size=(40, D_IN)), dtype=torch.float32)
    for dtype in (torch.float32, torch.bfloat16):
        model = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K), dtype=dtype)
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(torch.as_tensor(rng.normal(size=param.shape) * 0.5).to(dtype))
        folder = tmp_path / str(dtype)
        model.save_to_disk(folder)
        ours = load_sae(folder)
        # Compare with the library computing on the same (exactly widened) weights.
        reference = SparseCoder.load_from_disk(folder).to(torch.float32)
        with torch.no_grad():
            top_acts, top_indices, _ = reference.encode(x)
            dense = torch.zeros(len(x), D_SAE).scatter_(1, top_indices, top_acts)
            recon = reference.decode(top_acts, top_indices)
        np.testing.assert_allclose(ours.transform(x.numpy()), dense.numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(ours.inverse_transform(dense.numpy()), recon.numpy(), atol=1e-5,
                                   rtol=1e-5)
        save_sae(ours, tmp_path / f"{dtype}_ours", format="sparsify")
        back = SparseCoder.load_from_disk(tmp_path / f"{dtype}_ours")
        with torch.no_grad():
            acts, indices, _ = back.encode(x)
            np.testing.assert_allclose(
                torch.zeros(len(x), D_SAE).scatter_(1, indices, acts).numpy(), dense.numpy(),
                atol=1e-5, rtol=1e-5)
    assert sparsify


def test_dictionary_learning_library_agrees(tmp_path, rng):
    pytest.importorskip("dictionary_learning", reason="dictionary_learning is not installed")
    from dictionary_learning.dictionary import AutoEncoder, GatedAutoEncoder, JumpReluAutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK
    from dictionary_learning.utils import load_dictionary

    x = torch.as_tensor(rng.normal(size=(40, D_IN)), dtype=torch.float32)
    models = {
        "AutoEncoder": AutoEncoder(D_IN, D_SAE),
        "GatedAutoEncoder": GatedAutoEncoder(D_IN, D_SAE),
        "AutoEncoderTopK": AutoEncoderTopK(D_IN, D_SAE, K),
        "BatchTopKSAE": BatchTopKSAE(D_IN, D_SAE, K),
        "JumpReluAutoEncoder": JumpReluAutoEncoder(D_IN, D_SAE),
    }
    for dict_class, model in models.items():
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(torch.as_tensor(rng.normal(size=param.shape) * 0.5, dtype=torch.float32))
            if dict_class == "JumpReluAutoEncoder":
                model.threshold.copy_(torch.rand(D_SAE) * 0.5)
            if dict_class == "BatchTopKSAE":
                model.threshold.fill_(0.3)
        folder = tmp_path / dict_class
        folder.mkdir()
        # what dictionary_learning's training loop writes: the state dict and the trainer config
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, folder / "ae.pt")
        trainer = {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE}
        if "TopK" in dict_class:
            trainer["k"] = K
        (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {}}))
        library, _ = load_dictionary(str(folder), device="cpu")
        ours = load_sae(folder)
        with torch.no_grad():
            codes = library.encode(x)
            recon = library.decode(codes)
        assert (codes > 0).any(), dict_class
        np.testing.assert_allclose(ours.transform(x.numpy()), codes.numpy(), atol=1e-5, rtol=1e-5,
                                   err_msg=dict_class)
        np.testing.assert_allclose(ours.inverse_transform(codes.numpy()), recon.numpy(), atol=1e-5,
                                   rtol=1e-5, err_msg=dict_class)
        # our export loads back with load_dictionary and encodes the same
        save_sae(ours, tmp_path / f"{dict_class}_ours", format="dictionary_learning")
        back, _ = load_dictionary(str(tmp_path / f"{dict_class}_ours"), device="cpu")
        with torch.no_grad():
            np.testing.assert_allclose(back.encode(x).numpy(), codes.numpy(), atol=1e-5, rtol=1e-5,
                                       err_msg=dict_class)


# ---------------------------------------------------- the named steps of the readers
def test_saelens_architecture_gives_the_activation_and_checks_names(tmp_path, rng):
    from sklearn_sparsegap.interop import _saelens

    tensors = _random_tensors(rng)
    assert _saelens._architecture_activation({"architecture": "standard"}, tensors, D_SAE,
                                             "cfg", "w") == ("relu", None, None)
    assert _saelens._architecture_activation({"architecture": "topk", "k": K}, tensors, D_SAE,
                                             "cfg", "w") == ("topk", K, None)
    activation, k, threshold = _saelens._architecture_activation(
        {"architecture": "batchtopk"}, {**tensors, "topk_threshold": np.array(0.4)}, D_SAE,
        "cfg", "w")
    assert activation == "jumprelu" and k is None
    np.testing.assert_array_equal(threshold, np.full(D_SAE, 0.4))  # one global threshold
    _, _, threshold = _saelens._architecture_activation(
        {"architecture": "jumprelu"}, {**tensors, "log_threshold": np.log(np.full(D_SAE, 0.5))},
        D_SAE, "cfg", "w")
    np.testing.assert_allclose(threshold, 0.5)
    with pytest.raises(ValueError, match="missing tensor"):
        _saelens._architecture_activation({"architecture": "gated"}, tensors, D_SAE, "cfg", "w")
    # transcoders: the activation of their architecture (tensors checked by name)
    assert _saelens._architecture_activation(
        {"architecture": "jumprelu_skip_transcoder"},
        {**tensors, "threshold": np.full(D_SAE, 0.2), "W_skip": np.eye(D_IN)}, D_SAE, "cfg", "w",
    )[0] == "jumprelu"
    with pytest.raises(ValueError, match=r"missing tensor.*W_skip"):
        _saelens._architecture_activation({"architecture": "skip_transcoder"}, tensors, D_SAE,
                                          "cfg", "w")
    with pytest.raises(ValueError, match="architecture='temporal' is not supported"):
        _saelens._architecture_activation({"architecture": "temporal"}, tensors, D_SAE,
                                          "cfg", "w")


def test_saelens_check_tensors_names_the_bad_tensor(rng):
    from sklearn_sparsegap.interop import _saelens

    tensors = _random_tensors(rng)
    _saelens._check_tensors(tensors, D_IN, D_SAE, "w")
    with pytest.raises(ValueError, match="'b_enc' has shape"):
        _saelens._check_tensors({**tensors, "b_enc": np.ones(3)}, D_IN, D_SAE, "w")
    with pytest.raises(ValueError, match="'b_dec' has NaN"):
        _saelens._check_tensors({**tensors, "b_dec": np.full(D_IN, np.nan)}, D_IN, D_SAE, "w")


def test_saelens_encoder_decoder_fold_the_decoder_norms_and_the_input_shift(rng, X):
    from sklearn_sparsegap.interop import _saelens

    tensors = _random_tensors(rng)
    config = {"architecture": "topk", "rescale_acts_by_decoder_norm": True,
              "apply_b_dec_to_input": False}
    encoder, bias, decoder, magnitude = _saelens._encoder_decoder(config, tensors, "w")
    assert magnitude == (None, None)  # a gated SAE's (r_mag, b_mag) only
    np.testing.assert_allclose(np.linalg.norm(decoder, axis=1), 1.0, rtol=1e-12)
    norms = np.linalg.norm(tensors["W_dec"], axis=1)
    # Our pre-activation (x - b_dec) W^T + c is SAELens's x @ W_enc + b_enc scaled by the norms.
    np.testing.assert_allclose((X - tensors["b_dec"]) @ encoder.T + bias,
                               (X @ tensors["W_enc"] + tensors["b_enc"]) * norms, rtol=1e-10)
    assert tensors["W_dec"] is not decoder  # the checkpoint's arrays are not modified


def test_dictionary_learning_steps_check_the_config_and_the_state(tmp_path, rng):
    from sklearn_sparsegap.interop import _dictionary_learning as dl

    state, encode, decode = _dl_case(rng, "JumpReluAutoEncoder")
    _write_dl(tmp_path, state, "JumpReluAutoEncoder")
    trainer = dl._read_trainer(tmp_path / "config.json")
    assert trainer["dict_class"] == "JumpReluAutoEncoder" and trainer["dict_size"] == D_SAE
    tensors = dl._read_tensors(tmp_path / "ae.pt", "JumpReluAutoEncoder")
    assert sorted(tensors) == sorted(state)
    encoder, bias, decoder = dl._linear_parts(tensors, "JumpReluAutoEncoder")
    weights = dl._dict_class_weights("JumpReluAutoEncoder", tensors, encoder, bias, decoder, "w")
    assert weights.activation == "jumprelu"
    x = rng.normal(size=(5, D_IN))
    pre = (x - weights.decoder_bias) @ weights.encoder_weight.T + weights.encoder_bias
    np.testing.assert_allclose(np.maximum(pre * (pre > weights.threshold), 0), encode(x),
                               atol=1e-10)
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "Nope"}}))
    with pytest.raises(ValueError, match="dict_class='Nope' is not supported"):
        dl._read_trainer(tmp_path / "config.json")
    torch.save({"step": 1, "ae": {}, "optimizer": {}}, tmp_path / "ae.pt")
    with pytest.raises(ValueError, match="training backup"):
        dl._read_tensors(tmp_path / "ae.pt", "JumpReluAutoEncoder")
