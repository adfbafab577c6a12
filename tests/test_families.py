"""SAE families beyond ReLU/TopK/JumpReLU (``_families``, ``SAETranscoder``): BatchTopK,
Matryoshka prefixes, transcoders and skip transcoders, trained by the one training
function; their bad inputs; and ITO (``SAEPlusITO(prefit=True)``) on each."""

import types

import numpy as np
import pytest
import torch

from sklearn_sparsegap import (
    SAEEncoder,
    SAEPlusITO,
    SAETranscoder,
    make_sparse_dictionary_data,
)
from sklearn_sparsegap._autoencoder import make_gradient_function, make_module
from sklearn_sparsegap._families import (
    FamilyAutoencoderModule,
    batch_topk,
    check_matryoshka_prefixes,
    nested_reconstruction_loss,
    sample_matryoshka_prefixes,
    update_global_threshold,
)
from sklearn_sparsegap._modules import sae_gradients


@pytest.fixture(scope="module")
def problem():
    X, dictionary, codes = make_sparse_dictionary_data(
        256, n_components=16, n_features=8, n_nonzero_coefs=3, random_state=0
    )
    Y = codes @ np.random.default_rng(0).normal(size=(16, 5))
    return X, codes, Y


def _batchtopk(**params):
    defaults = dict(n_components=16, activation="batchtopk", n_nonzero_coefs=3, alpha=0.0,
                    max_iter=60, random_state=0, device="cpu")
    return SAEEncoder(**{**defaults, **params})


@pytest.fixture(scope="module")
def batchtopk(problem):
    return _batchtopk().fit(problem[0])


# ------------------------------------------------------------------ BatchTopK
def test_batch_topk_keeps_k_per_row_on_average_over_the_batch():
    pre = torch.tensor([[5.0, 4.0, 3.0, -1.0], [0.5, 0.2, -2.0, 0.1], [6.0, -1.0, 2.5, 0.3]])
    codes = batch_topk(pre, 2)
    # the 6 largest ReLU-ed values of the whole batch, wherever they are
    expected = torch.tensor([[5.0, 4.0, 3.0, 0.0], [0.5, 0.0, 0.0, 0.0], [6.0, 0.0, 2.5, 0.0]])
    torch.testing.assert_close(codes, expected)
    assert (codes != 0).sum(dim=1).tolist() == [3, 1, 2]


def test_global_threshold_starts_at_the_first_minimum_then_moves_by_the_rate():
    module = make_module(4, 3, activation="batchtopk", k=1)
    module.log_threshold.data.fill_(float("nan"))
    update_global_threshold(module, torch.tensor([[0.0, 2.0, 0.5], [0.0, 0.0, 0.0]]), rate=0.1)
    torch.testing.assert_close(module.threshold, torch.full((3,), 0.5))
    update_global_threshold(module, torch.tensor([[1.5, 0.0, 0.0]]), rate=0.1)
    torch.testing.assert_close(module.threshold, torch.full((3,), 0.9 * 0.5 + 0.1 * 1.5))
    update_global_threshold(module, torch.zeros(2, 3), rate=0.1)  # no active latent: kept
    torch.testing.assert_close(module.threshold, torch.full((3,), 0.6))


def test_batchtopk_transform_is_a_jumprelu_at_the_learned_global_threshold(problem, batchtopk):
    X = problem[0]
    threshold = batchtopk.threshold_
    assert np.all(np.isfinite(threshold)) and np.all(threshold == threshold[0])
    assert threshold[0] > 0
    pre = (X - batchtopk.intercept_) @ batchtopk.coefs_[0].T + batchtopk.intercepts_[0]
    expected = np.maximum(pre, 0) * (pre > threshold)
    np.testing.assert_allclose(batchtopk.transform(X), expected, atol=1e-10)
    # each row alone gets the codes it gets in the batch
    np.testing.assert_allclose(batchtopk.transform(X[3:4]), batchtopk.transform(X)[3:4],
                               atol=1e-12)
    # the threshold was estimated so that the mean L0 is near k
    assert 1.5 < (batchtopk.transform(X) != 0).sum(axis=1).mean() < 6


def test_batchtopk_transform_before_the_threshold_is_estimated_raises(problem, batchtopk):
    import copy

    unestimated = copy.deepcopy(batchtopk)
    unestimated.threshold_ = np.full_like(batchtopk.threshold_, np.nan)
    with pytest.raises(ValueError, match="batchtopk.*threshold.*not estimated"):
        unestimated.transform(problem[0])
    with pytest.raises(ValueError, match="not estimated"):
        SAEPlusITO(unestimated, prefit=True, device="cpu").fit(problem[0])


def test_batchtopk_needs_k_and_the_reconstruction_target(problem):
    X, codes, _ = problem
    with pytest.raises(ValueError, match="activation='batchtopk' needs n_nonzero_coefs"):
        SAEEncoder(activation="batchtopk", max_iter=2).fit(X)
    with pytest.raises(ValueError, match="activation='batchtopk'.*target='codes'"):
        _batchtopk(target="codes", max_iter=2).fit(X, codes)


def test_batchtopk_fit_on_a_scaled_x_gives_scaled_codes_and_threshold(problem, batchtopk):
    X = problem[0]
    scaled = _batchtopk().fit(100 * X)
    np.testing.assert_allclose(scaled.threshold_, 100 * batchtopk.threshold_, rtol=1e-6)
    np.testing.assert_allclose(scaled.transform(100 * X), 100 * batchtopk.transform(X),
                               rtol=1e-5, atol=1e-8)


def test_batchtopk_warm_start_continues_exactly(problem):
    X = problem[0]
    whole = _batchtopk(max_iter=20).fit(X)
    parts = _batchtopk(max_iter=10, warm_start=True).fit(X)
    parts.fit(X)
    np.testing.assert_allclose(parts.threshold_, whole.threshold_, rtol=1e-10)
    np.testing.assert_allclose(parts.components_, whole.components_, atol=1e-12)


def test_batchtopk_minibatches_auxk_and_checkpoint(problem, tmp_path):
    X = problem[0]
    path = tmp_path / "btk.pt"
    est = _batchtopk(n_components=32, batch_size=64, max_iter=4, dead_window=64,
                     checkpoint_path=str(path)).fit(X)
    assert path.exists() and np.isfinite(est.threshold_[0])
    # a second fit resumes from the finished checkpoint: the same model
    again = _batchtopk(n_components=32, batch_size=64, max_iter=4, dead_window=64,
                       checkpoint_path=str(path)).fit(X)
    np.testing.assert_array_equal(again.threshold_, est.threshold_)


def test_family_loss_is_the_library_objective_with_the_auxk_term(problem):
    """Without prefixes and with a per-row TopK, the families' autograd loss is the
    library objective: its gradients equal the analytic ones (AuxK included)."""
    X = torch.tensor(problem[0][:64])
    torch.manual_seed(0)
    plain = make_module(8, 16, activation="topk", k=3, dtype=torch.float64)
    family = FamilyAutoencoderModule((8, 16), activation="topk", k=3).double()
    for module in (plain, family):
        for param in module.parameters():
            param.requires_grad_(False)
    for param in plain.parameters():
        param.normal_()
    family.load_state_dict(plain.state_dict())
    for module in (plain, family):
        for name, param in module.named_parameters():
            param.requires_grad_(name != "log_threshold")
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[1, 5, 9]] = True
    tracker = types.SimpleNamespace(mask=dead)
    sae_gradients(plain, X, 0.2, auxk=(dead, 2, 0.5), sparse=False)
    compute = make_gradient_function(family, X, alpha=0.2, auxk=(tracker, 2, 0.5))
    compute(None, False)
    for (name, a), b in zip(plain.named_parameters(), family.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, msg=name)


# ----------------------------------------------------------------- Matryoshka
@pytest.mark.parametrize("prefixes, message", [
    ((8, 4), "strictly increasing"),
    ((4, 4), "strictly increasing"),
    ((0, 4), "positive"),
    ((4, 32), "at most n_components"),
    ((), "non-empty"),
    ((2.5, 4), "integers"),
])  # fmt: skip
def test_matryoshka_prefixes_are_validated(problem, prefixes, message):
    with pytest.raises(ValueError, match=f"matryoshka_prefixes.*{message}"):
        _batchtopk(matryoshka_prefixes=prefixes, max_iter=2).fit(problem[0])


@pytest.mark.parametrize("prefixes, error", [
    (17, "at most n_components=16"),
    (0, "matryoshka_prefixes"),
    (True, "matryoshka_prefixes"),
])  # fmt: skip
def test_sampled_prefix_counts_are_validated(problem, prefixes, error):
    with pytest.raises(ValueError, match=error):
        _batchtopk(matryoshka_prefixes=prefixes, max_iter=2).fit(problem[0])


def test_matryoshka_levels_end_at_the_full_width():
    assert check_matryoshka_prefixes([4, 8], 16) == (4, 8, 16)
    assert check_matryoshka_prefixes((4, 16), 16) == (4, 16)
    assert check_matryoshka_prefixes(None, 16) is None
    assert check_matryoshka_prefixes(3, 16) == 3  # sampled per step


def test_sampled_prefixes_follow_the_truncated_power_law():
    """Distinct, increasing widths ending at the full width; one drawn width m falls at
    or below N/4 with probability sqrt(1/4) = 1/2 and at or below N/16 with 1/4."""
    generator = torch.Generator().manual_seed(0)
    draws = [sample_matryoshka_prefixes(64, 4, generator) for _ in range(500)]
    assert all(len(w) == 4 and w[-1] == 64 and list(w) == sorted(set(w)) for w in draws)
    single = np.array([sample_matryoshka_prefixes(64, 2, generator)[0] for _ in range(4000)])
    assert single.min() >= 1 and single.max() <= 63
    assert abs(np.mean(single <= 16) - 0.5) < 0.03
    assert abs(np.mean(single <= 4) - 0.25) < 0.03
    assert sample_matryoshka_prefixes(64, 1, generator) == (64,)


def test_sampled_prefixes_change_every_step_and_resume_from_the_module_state():
    def module():
        return FamilyAutoencoderModule((6, 64), activation="relu", matryoshka_prefixes=3,
                                       prefix_seed=5)  # fmt: skip

    first, again = module(), module()
    drawn = [first.loss_levels() for _ in range(6)]
    assert len(set(drawn)) > 1  # a fresh sample each step
    assert [again.loss_levels() for _ in range(6)] == drawn  # seeded
    resumed = module()
    resumed.load_state_dict(first.state_dict())  # what a checkpoint saves: 6 draws made
    assert [resumed.loss_levels() for _ in range(4)] == [first.loss_levels() for _ in range(4)]


def test_sampled_prefixes_make_the_first_latents_reconstruct_alone(problem):
    X = problem[0]
    plain = _batchtopk(max_iter=150).fit(X)
    sampled = _batchtopk(max_iter=150, matryoshka_prefixes=3).fit(X)
    assert _prefix_error(sampled, X, 4) < _prefix_error(plain, X, 4)
    # exported without fixed widths: its inference does not depend on them
    assert sampled.matryoshka_prefixes == 3


def test_nested_loss_sums_every_prefix_reconstruction():
    torch.manual_seed(0)
    module = FamilyAutoencoderModule((6, 10), activation="relu", matryoshka_prefixes=(3, 7, 10))
    for param in module.parameters():
        torch.nn.init.normal_(param.data)
    codes, y = torch.rand(5, 10), torch.randn(5, 6)
    loss, residual = nested_reconstruction_loss(module, codes, y)
    expected = sum(
        0.5 * (y - codes[:, :m] @ module.components[:m] - module.intercept).square().sum(1).mean()
        for m in (3, 7, 10)
    )
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(residual, y - module.decode(codes))


def _prefix_error(est, X, width):
    """The squared error of X reconstructed from the first ``width`` latents' codes."""
    codes = est.transform(X)
    codes[:, width:] = 0
    return np.square(X - est.inverse_transform(codes)).sum(axis=1).mean()


def test_matryoshka_first_prefix_reconstructs_alone(problem):
    """The nested loss makes the first latents a dictionary of their own: their codes
    alone reconstruct better than the same number of a plain BatchTopK SAE's."""
    X = problem[0]
    plain = _batchtopk(max_iter=150).fit(X)
    nested = _batchtopk(max_iter=150, matryoshka_prefixes=(4, 8)).fit(X)
    assert _prefix_error(nested, X, 4) < _prefix_error(plain, X, 4)
    assert nested.transform(X).shape == (256, 16)


# ---------------------------------------------------------------- transcoders
def _transcoder(**params):
    defaults = dict(n_components=16, activation="topk", n_nonzero_coefs=3, alpha=0.0,
                    max_iter=150, random_state=0, device="cpu")
    return SAETranscoder(**{**defaults, **params})


@pytest.fixture(scope="module")
def transcoder(problem):
    X, _, Y = problem
    return _transcoder().fit(X, Y)


def test_transcoder_predicts_y_and_scores_one_minus_fvu(problem, transcoder):
    X, _, Y = problem
    prediction = transcoder.predict(X)
    assert prediction.shape == Y.shape and transcoder.n_outputs_ == 5
    assert transcoder.components_.shape == (16, 5) and transcoder.coefs_[0].shape == (16, 8)
    np.testing.assert_allclose(prediction, transcoder.inverse_transform(transcoder.transform(X)))
    fvu = np.square(Y - prediction).sum() / np.square(Y - Y.mean(axis=0)).sum()
    assert transcoder.score(X, Y) == pytest.approx(1 - fvu)
    # it learned something a mean predictor does not, at about k latents per row
    assert transcoder.score(X, Y) > 0.5
    assert (transcoder.transform(X) != 0).sum(axis=1).max() <= 3


def test_transcoder_bad_inputs_name_y(problem):
    X, _, Y = problem
    with pytest.raises(ValueError, match="pass Y"):
        _transcoder(max_iter=2).fit(X)
    with pytest.raises(ValueError, match="X and Y must have the same number of rows"):
        _transcoder(max_iter=2).fit(X, Y[:10])
    with pytest.raises(ValueError, match="Y has 4 columns"):
        _transcoder(max_iter=2, warm_start=True).fit(X, Y).fit(X, Y[:, :4])


def test_transcoder_folds_the_scale_exactly(problem, transcoder):
    X, _, Y = problem
    scaled = _transcoder().fit(10 * X, 10 * Y)
    np.testing.assert_allclose(scaled.predict(10 * X), 10 * transcoder.predict(X),
                               rtol=1e-5, atol=1e-6)


def test_skip_transcoder_adds_a_linear_map_of_x(problem):
    X, _, Y = problem
    skip = _transcoder(activation="batchtopk", skip_connection=True).fit(X, Y)
    assert skip.skip_.shape == (5, 8) and np.any(skip.skip_ != 0)
    np.testing.assert_allclose(
        skip.predict(X), skip.inverse_transform(skip.transform(X)) + X @ skip.skip_.T,
        atol=1e-10,
    )
    assert np.isfinite(skip.threshold_[0])
    assert skip.inference_flops(2) == 2 * (2 * 8 * 16 + 16 + 2 * 16 * 5 + 2 * 8 * 5)


def test_transcoder_streams_x_and_y_from_disk(problem, tmp_path):
    X, _, Y = problem
    X_disk = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                       shape=X.shape)
    Y_disk = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=np.float32,
                                       shape=Y.shape)
    X_disk[:], Y_disk[:] = X, Y
    X_disk.flush(), Y_disk.flush()
    X_disk = np.load(tmp_path / "x.npy", mmap_mode="r")
    Y_disk = np.load(tmp_path / "y.npy", mmap_mode="r")
    streamed = _transcoder(batch_size=64, max_iter=3).fit(X_disk, Y_disk)
    assert streamed.predict(X_disk).shape == Y.shape
    assert streamed.predict(X_disk).dtype == np.float32


# ------------------------------------------------------------- ITO per family
def _rows_error(target, reconstruction):
    return np.square(target - reconstruction).sum(axis=1)


@pytest.mark.parametrize("family", ["batchtopk", "matryoshka"])
def test_ito_refines_batchtopk_and_matryoshka_never_worse(problem, family):
    X = problem[0]
    extra = {"matryoshka_prefixes": (4, 8)} if family == "matryoshka" else {}
    encoder = _batchtopk(max_iter=150, **extra).fit(X)
    ito = SAEPlusITO(encoder, prefit=True, device="cpu").fit(X)
    start, refined = encoder.transform(X), ito.transform(X)
    assert refined.shape[1] == 16  # the full width
    assert np.all((refined != 0).sum(axis=1) <= (start != 0).sum(axis=1))
    before = _rows_error(X, encoder.inverse_transform(start))
    after = _rows_error(X, ito.inverse_transform(refined))
    assert np.all(after <= before + 1e-10)
    assert after.mean() < 0.95 * before.mean()
    assert ito.amortisation_gap(X) > 0


@pytest.mark.parametrize("skip", [False, True])
def test_ito_refines_transcoder_codes_against_y(problem, skip):
    X, _, Y = problem
    encoder = _transcoder(skip_connection=skip).fit(X, Y)
    ito = SAEPlusITO(encoder, prefit=True, device="cpu").fit(X, Y)
    start, refined = encoder.transform(X), ito.transform(X, Y)
    assert np.all((refined != 0).sum(axis=1) <= (start != 0).sum(axis=1))
    skip_part = X @ encoder.skip_.T if skip else 0.0
    before = _rows_error(Y, encoder.predict(X))
    after = _rows_error(Y, ito.inverse_transform(refined) + skip_part)
    assert np.all(after <= before + 1e-10)
    assert after.mean() < 0.5 * before.mean()
    np.testing.assert_allclose(ito.amortisation_gap(X, per_sample=True, y=Y),
                               0.5 * (before - after), atol=1e-8)
    with pytest.raises(ValueError, match="transcoder.*pass them"):
        ito.transform(X)
    np.testing.assert_array_equal(
        SAEPlusITO(encoder, prefit=True, device="cpu").fit_transform(X, Y), refined
    )


def test_folded_state_divides_biases_and_threshold_by_the_scale_and_keeps_the_skip():
    from types import SimpleNamespace

    from sklearn_sparsegap._autoencoder import _folded_state
    from sklearn_sparsegap._training import DeadLatents

    module = make_module(4, 6, activation="batchtopk", k=2, n_outputs=3, skip_connection=True,
                         dtype=torch.float64)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_()
        module.log_threshold.fill_(np.log(0.8))
    skip = module.skip.detach().clone()
    settings = SimpleNamespace(activation="batchtopk")
    optimizer = torch.optim.Adam([module.components])
    loop = SimpleNamespace(step=3, epoch=1, flops=10)
    bias = module.biases[0].detach().clone()
    state = _folded_state(module, settings, 2.0, optimizer=optimizer, dead=DeadLatents(6, 10),
                          loop=loop, history={"step": [1]}, code_moments=None, zero=0.0)
    np.testing.assert_allclose(state.threshold, 0.4)
    np.testing.assert_allclose(state.intercepts[0], bias.numpy() / 2)
    np.testing.assert_allclose(state.trained_biases[2], bias.numpy())  # as trained
    np.testing.assert_array_equal(state.skip, skip.numpy())  # linear: not rescaled
    assert state.components.shape == (6, 3) and state.n_steps == 3
