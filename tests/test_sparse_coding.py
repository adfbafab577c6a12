"""GradientSparseCoder: dictionary learning by alternating minimisation."""

import numpy as np
import pytest
from sklearn.decomposition import SparseCoder

from sklearn_sparsegap import (
    GradientSparseCoder,
    dictionary_mcc,
    make_sparse_dictionary_data,
    mean_corr_coef,
    sparse_encode,
)
from sklearn_sparsegap._dict_learning import (
    _PRUNE_END,
    _PRUNE_START,
    _alternating_dictionary_learning,
    _initial_dictionary,
    _n_atoms_after,
    _update_dictionary,
)
from sklearn_sparsegap._training import HISTORY_KEYS, objective


@pytest.fixture(scope="module")
def data():
    return make_sparse_dictionary_data(1024, random_state=0)


@pytest.fixture(scope="module")
def fitted(data):
    X, _, _ = data
    return GradientSparseCoder(n_components=16, random_state=0, device="cpu").fit(X)


def test_recovers_dictionary_and_codes(data, fitted):
    X, dictionary, codes = data
    assert dictionary_mcc(dictionary, fitted.components_) > 0.99
    assert mean_corr_coef(codes, fitted.transform(X)) > 0.95
    np.testing.assert_allclose(np.linalg.norm(fitted.components_, axis=1), 1.0, rtol=1e-6)
    assert np.all(fitted.transform(X) >= 0)


def test_history_objective_decreases_and_flops_accumulate(fitted):
    loss = fitted.history_["loss"]
    assert len(loss) == fitted.n_iter_ and _PRUNE_END < fitted.n_iter_ < 300
    # The dictionary extrapolation makes the loss non-monotone, but its restarts keep
    # the end of the fit at the lowest objective reached with the final atoms.
    final_atoms = loss[_PRUNE_END - 1:]
    assert loss[-1] < loss[0]
    assert loss[-1] <= final_atoms.min() * (1 + 1e-6)
    assert fitted.history_["flops"][-1] == fitted.training_flops_ > 0
    assert np.all(np.diff(fitted.history_["flops"]) > 0)
    assert fitted.inference_flops(10) > 0


@pytest.mark.parametrize("max_iter", [1, 2, 5, 30])
def test_short_fits_still_end_with_n_components_atoms(data, max_iter):
    X, _, _ = data
    coder = GradientSparseCoder(
        n_components=16, max_iter=max_iter, random_state=0, device="cpu"
    ).fit(X)
    assert coder.components_.shape == (16, 8)
    assert coder.transform(X).shape == (1024, 16)
    np.testing.assert_allclose(np.linalg.norm(coder.components_, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_no_true_atom_missed_across_seeds(seed):
    # A plain alternation from n_components data atoms missed one true atom on seed 4
    # of this data (dictionary MCC 0.966); the over-complete start and the pruning are
    # there so that this does not happen.
    X, dictionary, _ = make_sparse_dictionary_data(1024, random_state=seed)
    coder = GradientSparseCoder(n_components=16, random_state=seed, device="cpu").fit(X)
    assert dictionary_mcc(dictionary, coder.components_) > 0.99


def test_transform_alpha_defaults_to_a_tenth_of_alpha_for_learned_dictionaries(data, fitted):
    X, _, codes = data
    assert fitted.transform_alpha_ == pytest.approx(0.003)
    expected = sparse_encode(X, fitted.components_, alpha=0.003, positive=True, max_iter=1000)
    np.testing.assert_allclose(fitted.transform(X), expected)
    # Less shrinkage at inference recovers the true codes better than the fit's alpha.
    at_alpha = sparse_encode(X, fitted.components_, alpha=0.03, positive=True, max_iter=1000)
    assert mean_corr_coef(codes, fitted.transform(X)) > mean_corr_coef(codes, at_alpha)


def test_explicit_transform_alpha_is_used(data):
    X, dictionary, _ = data
    coder = GradientSparseCoder(
        dictionary=dictionary, alpha=0.05, transform_alpha=0.02, device="cpu"
    ).fit(X)
    assert coder.transform_alpha_ == 0.02
    expected = sparse_encode(X, dictionary, alpha=0.02, positive=True, max_iter=1000)
    np.testing.assert_allclose(coder.transform(X), expected)


def test_dictionary_sweep_lowers_the_objective(data):
    import torch

    X, _, codes = data
    rng = np.random.default_rng(0)
    components = rng.standard_normal((16, 8))
    components /= np.linalg.norm(components, axis=1, keepdims=True)
    X_t, codes_t = torch.tensor(X), torch.tensor(codes)
    atoms = torch.tensor(components)
    before = float(objective(X_t, codes_t, atoms, None, 0.1))
    _update_dictionary(X_t, codes_t, atoms, torch.Generator().manual_seed(0))
    after = float(objective(X_t, codes_t, atoms, None, 0.1))
    assert after < before
    torch.testing.assert_close(atoms.norm(dim=1), torch.ones(16, dtype=torch.float64))


def test_dictionary_sweep_runs_on_one_thread(data, monkeypatch):
    # Its per-atom operations are too small for a thread team (on a busy machine the
    # team's wake-ups made a 576-atom sweep 24x slower); the thread count is restored.
    import torch

    from sklearn_sparsegap import _dict_learning

    X, dictionary, codes = data
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    original = _dict_learning._sweep_atoms_serial
    monkeypatch.setattr(
        _dict_learning,
        "_sweep_atoms_serial",
        lambda *args: seen.append(torch.get_num_threads()) or original(*args),
    )
    try:
        atoms = torch.tensor(dictionary.copy())
        _update_dictionary(torch.tensor(X), torch.tensor(codes), atoms, torch.Generator())
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_unused_atoms_are_resampled(data):
    import torch

    X, dictionary, codes = data
    codes = codes.copy()
    codes[:, 5] = 0.0
    atoms = torch.tensor(dictionary.copy())
    atoms[5] = torch.tensor(np.eye(8)[0])
    _update_dictionary(torch.tensor(X), torch.tensor(codes), atoms, torch.Generator().manual_seed(0))
    assert not torch.allclose(atoms[5], torch.tensor(np.eye(8)[0]))


def test_fixed_dictionary_only_stores_it_and_transform_is_inference(data):
    X, dictionary, codes = data
    coder = GradientSparseCoder(dictionary=dictionary, alpha=0.01, device="cpu").fit(X)
    np.testing.assert_array_equal(coder.components_, dictionary)
    assert coder.n_iter_ == 0 and coder.training_flops_ == 0 and coder.n_components_ == 16
    # With a given dictionary alpha is only an inference penalty: transform uses it.
    assert coder.transform_alpha_ == 0.01
    expected = sparse_encode(X, dictionary, alpha=0.01, positive=True, max_iter=1000)
    np.testing.assert_allclose(coder.transform(X), expected)
    reference = SparseCoder(
        dictionary, transform_algorithm="lasso_cd", transform_alpha=0.01, positive_code=True
    ).transform(X[:200])
    assert abs(mean_corr_coef(codes[:200], coder.transform(X[:200]))
               - mean_corr_coef(codes[:200], reference)) < 0.01


def test_paper_adam_solver_runs_and_reports_history(data):
    X, dictionary, _ = data
    coder = GradientSparseCoder(
        n_components=16, fit_algorithm="adam", max_iter=200, transform_max_iter=200,
        learning_rate=1e-2, random_state=0, device="cpu",
    ).fit(X)
    assert coder.n_iter_ == 200
    assert coder.history_["loss"][-1] < coder.history_["loss"][0]
    codes = coder.transform(X)
    assert np.all(codes > 0)  # exp-parametrised: never exactly zero


@pytest.mark.parametrize("solver", ["omp", "topk"])
def test_greedy_solvers_keep_k_atoms(data, solver):
    X, _, _ = data
    coder = GradientSparseCoder(
        n_components=16, fit_algorithm=solver, transform_n_nonzero_coefs=3, max_iter=10, random_state=0,
        device="cpu",
    ).fit(X)
    assert (coder.transform(X) != 0).sum(axis=1).max() <= 3


def test_same_seed_same_dictionary_and_dtype(data):
    X, _, _ = data
    first = GradientSparseCoder(n_components=16, max_iter=5, random_state=3, device="cpu").fit(X)
    second = GradientSparseCoder(n_components=16, max_iter=5, random_state=3, device="cpu").fit(X)
    np.testing.assert_array_equal(first.components_, second.components_)
    X32 = X.astype(np.float32)
    est = GradientSparseCoder(n_components=16, max_iter=5, random_state=3, device="cpu").fit(X32)
    assert est.components_.dtype == np.float32 and est.transform(X32).dtype == np.float32


@pytest.mark.parametrize(
    "params, match",
    [
        ({"dictionary": np.ones((16, 3))}, "dictionary"),
        ({"dictionary": np.vstack([np.ones((15, 8)), np.zeros((1, 8))])}, "dictionary"),
        ({"dictionary": np.full((16, 8), np.inf)}, "dictionary"),
        ({"dictionary": np.ones((16, 8)), "n_components": 3}, "dictionary"),
        ({"fit_algorithm": "lars"}, "fit_algorithm"),
        ({"transform_algorithm": "lars"}, "transform_algorithm"),
        ({"fit_algorithm": "omp", "transform_n_nonzero_coefs": 20}, "n_nonzero_coefs"),
        ({"alpha": -1.0}, "alpha"),
        ({"transform_alpha": -0.1}, "transform_alpha"),
    ],
)
def test_bad_parameters_raise(params, match, data):
    X, _, _ = data
    with pytest.raises(ValueError, match=match):
        GradientSparseCoder(**{"n_components": 16, "max_iter": 2, "device": "cpu", **params}).fit(X)


def test_inputs_not_modified_and_nan_rejected(data):
    X, dictionary, _ = data
    X_copy, d_copy = X.copy(), dictionary.copy()
    GradientSparseCoder(dictionary=dictionary, device="cpu").fit(X).transform(X)
    GradientSparseCoder(n_components=16, max_iter=3, device="cpu").fit(X)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(dictionary, d_copy)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GradientSparseCoder(device="cpu").fit(bad)


def _residual_form_sweep(X, codes, components):
    """Reference block-coordinate sweep on the explicit residual (numpy)."""
    components = components.copy()
    residual = X - codes @ components
    for atom in range(components.shape[0]):
        residual += np.outer(codes[:, atom], components[atom])
        direction = codes[:, atom] @ residual
        components[atom] = direction / np.linalg.norm(direction)
        residual -= np.outer(codes[:, atom], components[atom])
    return components


def test_gram_form_sweep_equals_the_residual_form(data):
    import torch

    X, _, codes = data
    rng = np.random.default_rng(1)
    start = rng.standard_normal((16, 8))
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    atoms = torch.tensor(start)
    _update_dictionary(torch.tensor(X), torch.tensor(codes), atoms, torch.Generator())
    np.testing.assert_allclose(atoms.numpy(), _residual_form_sweep(X, codes, start), atol=1e-10)


def _learn(X, n_start, n_components, seed=0, **kwargs):
    import torch

    X_t = torch.tensor(X)
    generator = torch.Generator().manual_seed(seed)
    init = _initial_dictionary(X_t, n_start, generator)
    init_copy = init.clone()
    result = _alternating_dictionary_learning(
        X_t, init, 0.03, n_components=n_components, generator=generator, **kwargs
    )
    torch.testing.assert_close(init, init_copy)  # the initial dictionary is not modified
    return result


def test_alternating_dictionary_learning_recovers_a_known_dictionary(data):
    X, dictionary, codes = data
    atoms, learned_codes, n_iter, history, flops = _learn(X, 32, 16, max_iter=300, tol=1e-6)
    assert atoms.shape == (16, 8) and learned_codes.shape == (1024, 16)
    assert dictionary_mcc(dictionary, atoms.numpy()) > 0.99
    assert mean_corr_coef(codes, learned_codes.numpy()) > 0.95
    # It terminates by tol, well before the budget, and logs every outer iteration.
    assert _PRUNE_END < n_iter < 300
    assert set(history) == set(HISTORY_KEYS)
    assert all(len(values) == n_iter for values in history.values())
    assert history["step"] == list(range(1, n_iter + 1))
    assert history["flops"][-1] == flops and np.all(np.diff(history["flops"]) > 0)
    # With the final atoms, the fit ends at the lowest objective it reached.
    final = np.array(history["loss"][_PRUNE_END - 1:])
    assert final[-1] <= final.min() * (1 + 1e-6)


def test_alternating_dictionary_learning_stays_at_the_true_dictionary(data):
    import torch

    X, dictionary, _ = data
    atoms, codes, n_iter, history, _ = _alternating_dictionary_learning(
        torch.tensor(X), torch.tensor(dictionary), 0.03, n_components=16, max_iter=300,
        tol=1e-6, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    # Started at the truth (no atoms to prune), it stays there and stops quickly.
    assert dictionary_mcc(dictionary, atoms.numpy()) > 0.999
    assert n_iter < 100
    loss = np.array(history["loss"])
    assert loss[-1] <= loss[0]


def test_alternating_dictionary_learning_raises_on_divergence(data):
    import torch

    X, _, _ = data
    X_bad = torch.tensor(X)
    X_bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="diverged"):
        _alternating_dictionary_learning(
            X_bad, torch.eye(8, dtype=torch.float64), 0.03, n_components=8, max_iter=5,
            generator=torch.Generator(),
        )  # fmt: skip


def test_minibatch_dictionary_learning_raises_on_divergence(data):
    import torch

    from sklearn_sparsegap._batches import TensorBatches
    from sklearn_sparsegap._dict_learning import _online_dictionary_learning

    X, _, _ = data
    X_bad = torch.tensor(X)
    X_bad[3, 0] = float("inf")
    with pytest.raises(ValueError, match=r"diverged at step 4: .* Check that X is finite"):
        _online_dictionary_learning(
            TensorBatches(X_bad), torch.eye(8, dtype=torch.float64), 0.03,
            algorithm="omp", n_nonzero_coefs=3, n_epochs=2, batch_size=len(X) // 4,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip


@pytest.mark.parametrize("max_iter", [1, 2, 10, 30, 300])
def test_pruning_schedule(max_iter):
    kept = [_n_atoms_after(step, 32, 16, max_iter) for step in range(1, max_iter + 1)]
    # Never more atoms later, all n_components by the end (at the latest at _PRUNE_END).
    assert all(later <= earlier for earlier, later in zip(kept, kept[1:]))
    assert kept[-1] == 16 and 16 <= min(kept) and max(kept) <= 32
    if max_iter >= _PRUNE_END:
        assert kept[:_PRUNE_START] == [32] * _PRUNE_START
        assert kept[_PRUNE_END - 1:] == [16] * (max_iter - _PRUNE_END + 1)
        # Equal steps: no single iteration drops more than two atoms here.
        assert max(a - b for a, b in zip(kept, kept[1:])) <= 2


def test_transform_algorithm_differs_from_fit_algorithm(data):
    X, _, _ = data
    coder = GradientSparseCoder(
        n_components=16, transform_algorithm="omp", transform_n_nonzero_coefs=3,
        max_iter=60, random_state=0, device="cpu",
    ).fit(X)  # fmt: skip
    assert coder.transform_algorithm_ == "omp" and coder.n_components_ == 16
    expected = sparse_encode(X, coder.components_, algorithm="omp", n_nonzero_coefs=3,
                             positive=True, device="cpu")  # fmt: skip
    np.testing.assert_allclose(coder.transform(X), expected, atol=1e-12)
    # Same dictionary as fitting and transforming with fista: only inference changed.
    fista = GradientSparseCoder(n_components=16, max_iter=60, random_state=0, device="cpu")
    fista.fit(X)
    assert fista.transform_algorithm_ == "fista"
    np.testing.assert_array_equal(fista.components_, coder.components_)
    assert coder.inference_flops(10) != fista.inference_flops(10)


def test_transform_algorithm_with_a_given_dictionary(data):
    X, dictionary, _ = data
    coder = GradientSparseCoder(dictionary=dictionary, transform_algorithm="gradient_pursuit",
                                transform_n_nonzero_coefs=3, device="cpu").fit(X)  # fmt: skip
    expected = sparse_encode(X, dictionary, algorithm="gradient_pursuit", n_nonzero_coefs=3,
                             positive=True, device="cpu")  # fmt: skip
    np.testing.assert_allclose(coder.transform(X), expected, atol=1e-12)


@pytest.mark.parametrize(
    "params",
    [
        {"transform_algorithm": "omp", "transform_n_nonzero_coefs": 9},
        {"transform_algorithm": "topk", "transform_n_nonzero_coefs": 17},
        {"dictionary": np.eye(8), "transform_algorithm": "omp", "transform_n_nonzero_coefs": 9},
    ],
)
def test_transform_n_nonzero_coefs_is_checked_against_the_transform_algorithm(data, params):
    X, _, _ = data
    with pytest.raises(ValueError, match="transform_n_nonzero_coefs"):
        GradientSparseCoder(**{"n_components": None if "dictionary" in params else 16,
                               "max_iter": 2, "device": "cpu", **params}).fit(X)


def test_sweep_resamples_every_unused_atom_from_the_samples():
    """All atoms unused (a fresh minibatch statistic): each is redrawn as a unit-norm
    sample's residual (here the sample itself, the codes being zero); the samples'
    errors are computed once per sweep, so 64 redraws cost one product."""
    import torch

    from sklearn_sparsegap._dict_learning import _sweep_atoms

    generator = torch.Generator().manual_seed(0)
    X = torch.randn(32, 8, dtype=torch.float64, generator=generator)
    components = torch.randn(64, 8, dtype=torch.float64, generator=generator)
    gram = torch.zeros(64, 64, dtype=torch.float64)
    correlations = torch.zeros(64, 8, dtype=torch.float64)
    codes = torch.zeros(32, 64, dtype=torch.float64)
    assert _sweep_atoms(gram, correlations, components, X, codes, generator) == 64
    rows = X / X.norm(dim=1, keepdim=True)
    # Every atom is one of the normalised samples.
    distances = torch.cdist(components, rows).min(dim=1).values
    assert float(distances.max()) < 1e-6  # (cdist computes through a matmul)
