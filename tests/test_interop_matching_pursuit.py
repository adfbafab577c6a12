"""Matching-pursuit SAEs between this library and SAELens (``matching_pursuit``).

The solver's stopping rules (residual-norm tolerance, repeated support, the atoms used as
they are) are checked on answers worked out by hand; the SAELens checks use SAELens's own
classes: its SAEs built (random decoders, and one trained by its own ``SAETrainer``),
saved by its own ``save_model`` / ``save_inference_model``, its ``encode``/``decode`` the
reference, and our export read back by its ``SAE.load_from_disk``. The SAELens tests
skip when it is not installed; the solver tests always run.
"""

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_sparsegap import (
    GradientSparseCoder,
    SAEPlusITO,
    make_sparse_dictionary_data,
)
from sklearn_sparsegap._solvers import matching_pursuit
from sklearn_sparsegap._solvers._sparse_encode import encode_tensor
from sklearn_sparsegap.flops import _sparse_encode_flop_terms
from sklearn_sparsegap.interop import load_sae, save_sae

from _peer_checks import close as _close, report_peer_differences  # noqa: F401 (its module fixture)

D_IN, D_SAE = 12, 32


def _t(array):
    return torch.as_tensor(np.asarray(array, dtype=np.float64))


def _orthonormal(n, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q.T  # rows are the atoms


# ------------------------------------------------------------------ the solver
def test_tolerance_stops_when_the_residual_norm_falls_below_it():
    # On orthonormal atoms MP takes the coefficients in decreasing order and the residual
    # norm after k steps is the norm of the ones left: it stops at the first k where
    # that is below tol, with exactly those k coefficients.
    D = _orthonormal(8)
    coef = np.array([3.0, 0.2, 2.0, 0.05, 1.0, 0.5, 0.0, 0.1])
    x = coef @ D
    order = np.argsort(-coef)
    for tol in (2.5, 1.2, 0.6, 0.3, 0.16, 0.01):
        tails = [np.linalg.norm(coef[order[k:]]) for k in range(1, 9)]
        k = next(i + 1 for i, tail in enumerate(tails) if tail < tol)
        expected = np.zeros(8)
        expected[order[:k]] = coef[order[:k]]
        codes, n_iter = matching_pursuit(_t([x]), _t(D), 8, positive=True, tol=tol)
        assert n_iter == k, tol
        np.testing.assert_allclose(codes[0].numpy(), expected, atol=1e-12)


def test_tolerance_stop_comes_after_at_least_one_step_and_zero_never_stops():
    D = _orthonormal(4, seed=1)
    x = np.array([0.01, 0.02, 0.0, 0.0]) @ D
    codes, n_iter = matching_pursuit(_t([x]), _t(D), 4, tol=1.0)  # ||x|| < tol already
    assert n_iter == 1 and np.count_nonzero(codes.numpy()) == 1  # as SAELens: one step
    # tol=0 never stops on the residual; without the repeated-support stop all K run.
    X = _t(np.random.default_rng(2).normal(size=(5, 4)))
    codes, n_iter = matching_pursuit(X, _t(D), 6, tol=0.0)
    assert n_iter == 6
    np.testing.assert_allclose((codes @ _t(D)).numpy(), X.numpy(), atol=1e-12)


def test_samples_stop_one_by_one_and_keep_their_codes():
    D = _orthonormal(6, seed=3)
    coefs = np.array([[4.0, 0.1, 0, 0, 0, 0], [3.0, 2.0, 1.0, 0.5, 0.3, 0.01]])
    X = _t(coefs @ D)
    codes, n_iter = matching_pursuit(X, _t(D), 6, positive=True, tol=0.2)
    assert n_iter == 5  # the second sample needs 5 steps, the first stopped after 1
    np.testing.assert_allclose(codes[0].numpy(), [4.0, 0, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(codes[1].numpy(), [3.0, 2.0, 1.0, 0.5, 0.3, 0], atol=1e-12)


def test_repeated_support_stops_after_the_repeating_step():
    # Unit atoms in 2-D, by hand: x = (1, 1). Step 1 takes d2 (x . d2 = 1.4), the
    # residual is (0.16, -0.12); step 2 takes d3 (0.192), residual (0.0448, 0.0336);
    # step 3 takes d2 again (0.05376): the support {d2, d3} repeats, so MP stops with that
    # step's value added.
    D = _t([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    x = _t([[1.0, 1.0]])
    codes, n_iter = matching_pursuit(x, D, 10, positive=True, stop_on_repeat=True)
    assert n_iter == 3
    np.testing.assert_allclose(codes[0].numpy(), [0.0, 1.4 + 0.05376, 0.192], atol=1e-12)
    # Without the rule MP goes on: residual (0.012544, -0.009408), d3 again (0.0150528).
    more, n_iter = matching_pursuit(x, D, 4, positive=True)
    assert n_iter == 4
    np.testing.assert_allclose(more[0].numpy(), [0.0, 1.45376, 0.2070528], atol=1e-12)


def test_repeated_support_includes_a_step_that_adds_nothing():
    # d1 = (1, 0), d2 = (0.6, 0.8), x = (2, 0.5): d1 (2), then d2 (0.4), residual
    # (-0.24, 0.18); no correlation is positive any more, the step adds nothing and the
    # support is unchanged: stop. Signed, step 3 takes d1 again (-0.24) and stops.
    D = _t([[1.0, 0.0], [0.6, 0.8]])
    x = _t([[2.0, 0.5]])
    codes, n_iter = matching_pursuit(x, D, 10, positive=True, stop_on_repeat=True)
    assert n_iter == 3
    np.testing.assert_allclose(codes[0].numpy(), [2.0, 0.4], atol=1e-12)
    codes, n_iter = matching_pursuit(x, D, 10, stop_on_repeat=True)
    assert n_iter == 3
    np.testing.assert_allclose(codes[0].numpy(), [1.76, 0.4], atol=1e-12)


def test_atoms_as_they_are_differ_from_projections_off_the_unit_sphere():
    # One atom d = (2, 0), x = (1, 0): the projection's code is x . d / ||d||^2 = 0.5;
    # SAELens's step is x . d = 2 (and leaves the residual x - 2 d = (-3, 0)).
    D, x = _t([[2.0, 0.0]]), _t([[1.0, 0.0]])
    assert float(matching_pursuit(x, D, 1)[0][0, 0]) == 0.5
    assert float(matching_pursuit(x, D, 1, normalize=False)[0][0, 0]) == 2.0
    # On unit-norm atoms both are the same pursuit.
    X, D, _ = make_sparse_dictionary_data(64, n_components=16, n_features=8, random_state=0)
    plain, _ = matching_pursuit(_t(X), _t(D), 5, positive=True)
    raw, _ = matching_pursuit(_t(X), _t(D), 5, positive=True, tol=0.0, normalize=False)
    np.testing.assert_allclose(raw.numpy(), plain.numpy(), atol=1e-10)


def test_encode_tensor_residual_tol_is_saelens_rule_in_blocks(monkeypatch):
    rng = np.random.default_rng(4)
    X, D = _t(rng.normal(size=(50, 8))), _t(rng.normal(size=(16, 8)) * 0.3)
    codes, n_iter = encode_tensor(X, D, algorithm="mp", n_nonzero_coefs=8, positive=True,
                                  residual_tol=0.5)  # fmt: skip
    expected, expected_iter = matching_pursuit(X, D, 8, positive=True, tol=0.5,
                                               stop_on_repeat=True, normalize=False)  # fmt: skip
    np.testing.assert_array_equal(codes.numpy(), expected.numpy())
    assert n_iter == expected_iter
    from sklearn_sparsegap._solvers import _sparse_encode

    monkeypatch.setattr(_sparse_encode, "_block_rows", lambda *args, **kwargs: 7)
    blocked, _ = encode_tensor(X, D, algorithm="mp", n_nonzero_coefs=8, positive=True,
                               residual_tol=0.5)  # fmt: skip
    np.testing.assert_allclose(blocked.numpy(), codes.numpy(), atol=1e-12)
    # Without it "mp" is unchanged: K steps of plain MP.
    plain, _ = encode_tensor(X, D, algorithm="mp", n_nonzero_coefs=3, positive=True)
    np.testing.assert_allclose(plain.numpy(), matching_pursuit(X, D, 3, positive=True)[0],
                               atol=1e-12)  # fmt: skip


def test_tolerance_matmul_flops_match_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    rng = np.random.default_rng(5)
    X, D = _t(rng.normal(size=(12, 10))), _t(rng.normal(size=(20, 10)) * 0.3)
    with FlopCounterMode(display=False) as counter:
        _, n_iter = matching_pursuit(X, D, 10, positive=True, tol=0.1, stop_on_repeat=True,
                                     normalize=False)  # fmt: skip
    matmul, _ = _sparse_encode_flop_terms("mp", 10, 20, 12, n_iter=n_iter, n_nonzero_coefs=10,
                                          residual_tol=0.1)  # fmt: skip
    assert counter.get_total_flops() == matmul


# ------------------------------------------------------------------ the estimator
def test_coder_transform_alpha_is_the_residual_tolerance_for_mp():
    D = _orthonormal(8, seed=6)
    coef = np.array([[3.0, 0.2, 2.0, 0.05, 1.0, 0.5, 0.0, 0.1]])
    coder = GradientSparseCoder(dictionary=D, transform_algorithm="mp", transform_alpha=0.6,
                                device="cpu").fit(coef @ D)  # fmt: skip
    # Tails after 3 steps: ||(0.5, 0.2, 0.1, 0.05)|| = 0.55 < 0.6.
    np.testing.assert_allclose(coder.transform(coef @ D), [[3.0, 0, 2.0, 0, 1.0, 0, 0, 0]],
                               atol=1e-12)  # fmt: skip
    assert coder.transform_alpha_ == 0.6
    # The cap: transform_n_nonzero_coefs steps at most, and it may exceed n_components.
    capped = clone(coder).set_params(transform_n_nonzero_coefs=2).fit(coef @ D)
    np.testing.assert_allclose(capped.transform(coef @ D), [[3.0, 0, 2.0, 0, 0, 0, 0, 0]],
                               atol=1e-12)  # fmt: skip
    clone(coder).set_params(transform_n_nonzero_coefs=20).fit(coef @ D)
    with pytest.raises(ValueError, match="transform_n_nonzero_coefs"):
        clone(coder).set_params(transform_alpha=None, transform_n_nonzero_coefs=20).fit(coef @ D)
    with pytest.raises(InvalidParameterError, match="transform_alpha"):
        clone(coder).set_params(transform_alpha=-1.0).fit(coef @ D)


def test_coder_without_transform_alpha_keeps_k_steps_of_plain_mp():
    X, D, _ = make_sparse_dictionary_data(64, n_components=16, n_features=8, random_state=1)
    coder = GradientSparseCoder(dictionary=D * 2.0, transform_algorithm="mp",
                                transform_n_nonzero_coefs=3, device="cpu").fit(X)  # fmt: skip
    expected, _ = matching_pursuit(_t(X), _t(D * 2.0), 3, positive=True)
    np.testing.assert_allclose(coder.transform(X), expected.numpy(), atol=1e-12)


# ------------------------------------------------------------------ SAELens
def _saelens_mp(rng, *, d_in=D_IN, d_sae=D_SAE, norms=(0.8, 1.2), bias=0.3, **config):
    """A SAELens MatchingPursuitSAE with a random decoder (rows of norms in ``norms``)."""
    from sae_lens.saes.matching_pursuit_sae import MatchingPursuitSAE, MatchingPursuitSAEConfig

    sae = MatchingPursuitSAE(MatchingPursuitSAEConfig(d_in=d_in, d_sae=d_sae, **config))
    W = rng.normal(size=(d_sae, d_in))
    W *= rng.uniform(*norms, size=(d_sae, 1)) / np.linalg.norm(W, axis=1, keepdims=True)
    with torch.no_grad():
        sae.W_dec.copy_(torch.as_tensor(W, dtype=torch.float32))
        sae.b_dec.copy_(torch.as_tensor(rng.normal(size=d_in) * bias, dtype=torch.float32))
    return sae


def _reference(sae, x):
    with torch.no_grad():
        codes = sae.encode(x)
        return codes, sae.decode(codes)


def _inputs(rng, n=400, d_in=D_IN):
    return torch.as_tensor(rng.normal(size=(n, d_in)), dtype=torch.float32)


@pytest.mark.parametrize(
    "config",
    [
        {},  # SAELens's defaults: residual_threshold=1e-2, max_iterations=d_in
        {"residual_threshold": 0.8, "max_iterations": 6},
        {"residual_threshold": 0.0},  # the repeated-support stop only
        {"residual_threshold": 0.5, "apply_b_dec_to_input": False},
        {"residual_threshold": 0.3, "max_iterations": 40},  # a cap above d_sae
        # plain MP on unit-norm rows: no stop but max_iterations
        {"residual_threshold": 0.0, "stop_on_duplicate_support": False, "max_iterations": 5,
         "norms": (1.0, 1.0)},
    ],
    ids=["defaults", "threshold-cap", "repeat-only", "no-b_dec", "cap-above-d_sae", "plain"],
)
def test_saelens_mp_checkpoints_encode_as_saelens(tmp_path, config):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens import SAE

    rng = np.random.default_rng(7)
    config = dict(config)
    norms = config.pop("norms", (0.8, 1.2))
    sae = _saelens_mp(rng, norms=norms, **config)
    sae.save_model(tmp_path / "sae")
    reference = SAE.load_from_disk(tmp_path / "sae")
    x = _inputs(rng)
    codes, recon = _reference(reference, x)
    loaded = load_sae(tmp_path / "sae")
    label = "saelens matching_pursuit " + (
        ",".join(f"{k}={v}" for k, v in config.items()) or "defaults"
    )
    assert isinstance(loaded, GradientSparseCoder) and loaded.transform_algorithm_ == "mp"
    assert loaded.positive_code and loaded.n_components_ == D_SAE
    plain = config.get("stop_on_duplicate_support") is False
    assert loaded.transform_alpha == (None if plain else config.get("residual_threshold", 1e-2))
    ours = loaded.transform(x.numpy())
    _close(f"{label} encode", ours, codes)
    _close(f"{label} decode", loaded.inverse_transform(codes.numpy()), recon)
    assert np.count_nonzero(ours) > 0
    if config.get("apply_b_dec_to_input", True):
        assert np.array_equal(loaded.intercept_, sae.b_dec.detach().numpy())
    else:
        assert not hasattr(loaded, "intercept_")  # SAELens ignores b_dec then
    # Our export, read back by SAELens's own loader, encodes as SAELens did.
    save_sae(loaded, tmp_path / "ours", format="saelens")
    again = SAE.load_from_disk(tmp_path / "ours")
    assert type(again).__name__ == "MatchingPursuitSAE"
    codes_again, recon_again = _reference(again, x)
    _close(f"{label} export encode", codes_again.numpy(), codes)
    _close(f"{label} export decode", recon_again.numpy(), recon)
    _close(f"{label} export, ours", load_sae(tmp_path / "ours").transform(x.numpy()), codes)


@pytest.mark.filterwarnings("ignore:decoder_init_norm must be set")  # SAELens's own
def test_saelens_trained_mp_sae_encodes_as_saelens(tmp_path):
    """An MP SAE trained for a few steps by SAELens's own SAETrainer (its decoder rows
    leave the unit sphere, its b_dec is learned and its activation scale folded at the
    end), saved by its own save_inference_model."""
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens import SAE
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.matching_pursuit_sae import (
        MatchingPursuitTrainingSAE,
        MatchingPursuitTrainingSAEConfig,
    )
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    X, _, _ = make_sparse_dictionary_data(2048, n_components=24, n_features=D_IN,
                                          random_state=0)  # fmt: skip
    X = torch.as_tensor(X * 3.0, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)

    def batches():
        while True:
            yield X[torch.randint(0, len(X), (64,), generator=generator)]

    sae = MatchingPursuitTrainingSAE(MatchingPursuitTrainingSAEConfig(
        d_in=D_IN, d_sae=24, residual_threshold=0.05,
        normalize_activations="expected_average_only_in"))  # fmt: skip
    trainer = SAETrainer(
        SAETrainerConfig(total_training_samples=64 * 30, train_batch_size_samples=64,
                         lr=1e-2, lr_end=1e-2, n_batches_for_norm_estimate=5),
        sae, batches(),
    )  # fmt: skip
    trainer.fit()
    norms = sae.W_dec.detach().norm(dim=1)
    assert float((norms - 1).abs().max()) > 1e-2  # off the unit sphere: raw-atom steps
    sae.save_inference_model(tmp_path / "trained")
    reference = SAE.load_from_disk(tmp_path / "trained")
    codes, recon = _reference(reference, X[:500])
    loaded = load_sae(tmp_path / "trained")
    assert loaded.transform_alpha == pytest.approx(reference.cfg.residual_threshold)
    ours = loaded.transform(X[:500].numpy())
    _close("saelens trained matching_pursuit encode", ours, codes)
    _close("saelens trained matching_pursuit decode", loaded.inverse_transform(ours), recon)
    # SAEPlusITO refines it (OMP at each row's MP L0 on the same dictionary, b_dec
    # subtracted): never worse and never denser, row by row (the "l0" guard).
    ito = SAEPlusITO(loaded, prefit=True).fit(X[:500].numpy())
    refined = ito.transform(X[:500].numpy())
    mp_error = ((X[:500].numpy() - recon.numpy()) ** 2).sum(axis=1)
    ito_error = ((X[:500].numpy() - ito.inverse_transform(refined)) ** 2).sum(axis=1)
    assert np.all(ito_error <= mp_error * (1 + 1e-5) + 1e-6)
    assert np.all(np.count_nonzero(refined, axis=1) <= np.count_nonzero(ours, axis=1))
    assert ito.amortisation_gap(X[:500].numpy()) > 0


def test_saelens_activation_scale_is_folded_as_saelens_folds_it(tmp_path):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens import SAE

    rng = np.random.default_rng(8)
    sae = _saelens_mp(rng, residual_threshold=0.4, normalize_activations="expected_average_only_in")
    sae.save_model(tmp_path)
    (tmp_path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 2.5}))
    reference = SAE.load_from_disk(tmp_path)
    reference.fold_activation_norm_scaling_factor(2.5)  # SAELens's own fold
    x = _inputs(rng) * 2.0
    codes, recon = _reference(reference, x)
    loaded = load_sae(tmp_path)
    assert loaded.transform_alpha == pytest.approx(0.4 / 2.5)
    _close("saelens matching_pursuit scaled encode", loaded.transform(x.numpy()), codes)
    _close("saelens matching_pursuit scaled decode", loaded.inverse_transform(codes.numpy()),
           recon)  # fmt: skip
    # An explicit factor takes precedence over the file's.
    assert load_sae(tmp_path, scaling_factor=1.0).transform_alpha == pytest.approx(0.4)


@pytest.mark.parametrize("mode", ["tolerance", "plain"])
def test_our_mp_coder_exports_to_saelens(tmp_path, mode):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from sae_lens import SAE

    X, _, _ = make_sparse_dictionary_data(512, n_components=16, n_features=D_IN,
                                          random_state=2)  # fmt: skip
    X = X.astype(np.float32)
    params = {"transform_alpha": 0.05} if mode == "tolerance" else {"transform_n_nonzero_coefs": 3}
    coder = GradientSparseCoder(n_components=16, fit_algorithm="mp", transform_algorithm="mp",
                                max_iter=5, random_state=0, device="cpu", **params).fit(X)
    save_sae(coder, tmp_path, format="saelens")
    config = json.loads((tmp_path / "cfg.json").read_text())
    assert config["architecture"] == "matching_pursuit"
    assert config["stop_on_duplicate_support"] == (mode == "tolerance")
    assert config["residual_threshold"] == (0.05 if mode == "tolerance" else 0.0)
    assert config["max_iterations"] == (None if mode == "tolerance" else 3)
    reference = SAE.load_from_disk(tmp_path)
    codes, recon = _reference(reference, torch.as_tensor(X))
    ours = coder.transform(X)
    assert np.count_nonzero(ours) > 0
    _close(f"our {mode} mp coder in saelens, encode", ours, codes)
    _close(f"our {mode} mp coder in saelens, decode", coder.inverse_transform(ours), recon)
    back = load_sae(tmp_path)
    assert back.transform_alpha == params.get("transform_alpha")
    assert back.transform_n_nonzero_coefs == params.get("transform_n_nonzero_coefs")
    np.testing.assert_allclose(back.transform(X), ours, atol=1e-6)


def test_unrepresentable_settings_raise_naming_them(tmp_path):
    X, D, _ = make_sparse_dictionary_data(64, n_components=16, n_features=8, random_state=3)
    base = {"dictionary": D, "transform_algorithm": "mp", "transform_alpha": 0.1, "device": "cpu"}
    with pytest.raises(ValueError, match="positive_code"):
        save_sae(GradientSparseCoder(positive_code=False, **base).fit(X), tmp_path,
                 format="saelens")  # fmt: skip
    with pytest.raises(ValueError, match="transform_algorithm"):
        save_sae(GradientSparseCoder(dictionary=D, device="cpu").fit(X), tmp_path,
                 format="saelens")  # fmt: skip
    with pytest.raises(ValueError, match="transform_alpha=None"):
        save_sae(GradientSparseCoder(**{**base, "dictionary": 2 * D, "transform_alpha": None},
                                     transform_n_nonzero_coefs=3).fit(X),
                 tmp_path, format="saelens")  # fmt: skip
    coder = GradientSparseCoder(**base).fit(X)
    for format in ("sparsify", "dictionary_learning"):
        with pytest.raises(ValueError, match="no matching-pursuit SAE"):
            save_sae(coder, tmp_path / format, format=format)
    with pytest.raises(ValueError, match="not fitted"):
        save_sae(GradientSparseCoder(**base), tmp_path, format="saelens")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"stop_on_duplicate_support": False, "residual_threshold": 0.1},
         "stop_on_duplicate_support=false with residual_threshold"),
        ({"stop_on_duplicate_support": False, "residual_threshold": 0.0}, "unit norm"),
        ({"max_iterations": 0}, "max_iterations=0"),
        ({"max_iterations": 2.5}, "max_iterations"),
        ({"residual_threshold": "small"}, "residual_threshold must be a finite number"),
        ({"stop_on_duplicate_support": "yes"}, "stop_on_duplicate_support must be"),
        ({"normalize_activations": "layer_norm"}, "layer_norm"),
    ],
)
def test_saelens_mp_settings_we_cannot_represent_are_refused(tmp_path, change, match):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    _saelens_mp(np.random.default_rng(9)).save_model(tmp_path)
    config = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=match):
        load_sae(tmp_path)


def test_saelens_mp_plain_with_more_steps_than_atoms_is_refused(tmp_path):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    _saelens_mp(np.random.default_rng(10), d_sae=16, norms=(1.0, 1.0), residual_threshold=0.0,
                stop_on_duplicate_support=False, max_iterations=20).save_model(tmp_path)
    with pytest.raises(ValueError, match="max_iterations=20 exceeds n_components=16"):
        load_sae(tmp_path)


def test_saelens_mp_extra_tensor_is_refused(tmp_path):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    from safetensors.torch import load_file, save_file

    _saelens_mp(np.random.default_rng(11)).save_model(tmp_path)
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    tensors["W_enc"] = tensors["W_dec"].T.contiguous()
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="unexpected tensor"):
        load_sae(tmp_path)


def test_refitting_a_loaded_coder_drops_its_decoder_bias(tmp_path):
    pytest.importorskip("sae_lens", reason="SAELens is not installed")
    rng = np.random.default_rng(12)
    _saelens_mp(rng).save_model(tmp_path)
    loaded = load_sae(tmp_path)
    assert hasattr(loaded, "intercept_")
    X = _inputs(rng, n=128).numpy()
    loaded.set_params(max_iter=2).fit(X)
    assert not hasattr(loaded, "intercept_")
    assert loaded.transform(X).shape == (128, D_SAE)
