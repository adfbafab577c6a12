"""The steps of the dictionary-learning numerics (``_dict_learning``)."""

import numpy as np
import pytest
import torch

from sklearn_sparsegap import make_sparse_dictionary_data
from sklearn_sparsegap._dict_learning import (
    _adam_dictionary_learning,
    _alternation_step,
    _DictionaryExtrapolation,
    _drop_least_used_atoms,
    _exp_codes_gradients,
    _infer_codes,
    _initial_dictionary,
    _MinibatchCoding,
    _online_callbacks,
    _OnlineDictionaryUpdate,
    _resampling_generator,
)
from sklearn_sparsegap._training import (
    HISTORY_KEYS,
    Checkpoint,
    CountFlops,
    DeadLatents,
    LogHistory,
    ProgressBar,
    objective,
)
from sklearn_sparsegap.flops import sparse_encode_flops


@pytest.fixture(scope="module")
def data():
    X, dictionary, codes = make_sparse_dictionary_data(256, random_state=0)
    return torch.tensor(X), torch.tensor(dictionary), torch.tensor(codes)


def _unit_atoms(n_atoms, n_features, seed=0):
    atoms = torch.randn(n_atoms, n_features, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)  # fmt: skip
    return atoms / atoms.norm(dim=1, keepdim=True)


def test_alternation_step_lowers_the_objective_of_its_codes_and_counts_flops(data):
    X, _, _ = data
    components = _unit_atoms(16, X.shape[1])
    before = components.clone()
    codes, flops = _alternation_step(
        X, components, 0.03, None, algorithm="fista", n_nonzero_coefs=2, positive=True,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    # The sweep keeps the codes and moves the atoms, in place, to a lower objective.
    assert objective(X, codes, components, alpha=0.03) < objective(X, codes, before, alpha=0.03)
    torch.testing.assert_close(components.norm(dim=1), torch.ones(16, dtype=torch.float64))
    _, n_iter = _infer_codes(X, before, 0.03, algorithm="fista", n_nonzero_coefs=2,
                             positive=True, init=None)  # fmt: skip
    assert flops > sparse_encode_flops("fista", X.shape[1], 16, X.shape[0], n_iter=n_iter)


def test_alternation_step_greedy_codes_keep_k_atoms(data):
    X, _, _ = data
    codes, _ = _alternation_step(
        X, _unit_atoms(16, X.shape[1]), 0.0, None, algorithm="omp", n_nonzero_coefs=3,
        positive=True, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert int((codes != 0).sum(dim=1).max()) <= 3


def test_drop_least_used_atoms_keeps_the_most_used_in_their_order():
    components = torch.arange(12.0).reshape(4, 3)
    codes = torch.tensor([[0.0, 3.0, 0.1, 2.0], [0.0, 1.0, 0.0, 2.0]])
    kept, kept_codes = _drop_least_used_atoms(components, codes, 2)
    torch.testing.assert_close(kept, components[[1, 3]])
    torch.testing.assert_close(kept_codes, codes[:, [1, 3]])
    assert kept.is_contiguous()


def test_extrapolation_moves_along_the_last_change_and_restarts_when_the_objective_rises():
    atoms = _unit_atoms(5, 4)
    extrapolation = _DictionaryExtrapolation(atoms)
    extrapolation.step(atoms, 10.0)  # first step: beta = 0, nothing moves
    torch.testing.assert_close(atoms, _unit_atoms(5, 4))
    moved = _unit_atoms(5, 4, seed=1)
    atoms.copy_(moved)
    extrapolation.step(atoms, 9.0)  # went down: D + beta (D - D_prev), renormalised
    t1 = (1.0 + np.sqrt(5.0)) / 2.0  # Nesterov's sequence: t0 = 1, t1, t2
    t2 = (1.0 + np.sqrt(1.0 + 4.0 * t1**2)) / 2.0
    expected = moved + (t1 - 1.0) / t2 * (moved - _unit_atoms(5, 4))
    torch.testing.assert_close(atoms, expected / expected.norm(dim=1, keepdim=True))
    before_rise = atoms.clone()
    extrapolation.step(atoms, 9.5)  # went up: restart, no move
    torch.testing.assert_close(atoms, before_rise)
    assert extrapolation.momentum_t == 1.0


def test_extrapolation_converges_on_a_small_relative_decrease_and_reset_forgets():
    extrapolation = _DictionaryExtrapolation(_unit_atoms(3, 2))
    assert not extrapolation.converged(1.0, 1e-3)  # no previous objective
    extrapolation.step(_unit_atoms(3, 2), 1.0)
    assert extrapolation.converged(1.0 - 1e-4, 1e-3)
    assert not extrapolation.converged(0.9, 1e-3)
    assert not extrapolation.converged(1.1, 1e-3)  # went up
    extrapolation.reset(_unit_atoms(3, 2))
    assert not extrapolation.converged(1.0 - 1e-4, 1e-3)


def test_minibatch_coding_hands_codes_to_the_update_and_reports_the_objective(data):
    X, dictionary, _ = data
    components = dictionary.clone()
    update = _OnlineDictionaryUpdate(components, batch_size=64, memory_rows=128,
                                     generator=torch.Generator())  # fmt: skip
    coding = _MinibatchCoding(components, 0.03, update, algorithm="fista",
                              n_nonzero_coefs=None, positive=True)  # fmt: skip
    batch = X[:64]
    codes, stats = coding(batch, True)
    assert update._observed[0] is batch and update._observed[1] is codes
    torch.testing.assert_close(stats[0], objective(batch, codes, components, alpha=0.03))
    assert coding(batch, False)[1] is None
    flops = coding.step_flops(64)
    assert flops > sparse_encode_flops("fista", X.shape[1], 16, 64, n_iter=coding.n_iter) > 0


def test_online_callbacks_end_with_the_checkpoint_and_log_into_the_history(tmp_path):
    history = {key: [] for key in HISTORY_KEYS}
    options = dict(step_flops=lambda rows: rows, tol=0.0, description="x", verbose=0)
    callbacks = _online_callbacks(history, 4, 100, "cpu", checkpoint=None, **options)
    assert [type(c) for c in callbacks[:3]] == [CountFlops, DeadLatents, LogHistory]
    assert isinstance(callbacks[-1], ProgressBar)
    assert callbacks[2].history is history and callbacks[2].dead is callbacks[1]
    assert callbacks[1].window == 100
    checkpoint = Checkpoint(tmp_path / "c.pt")
    with_checkpoint = _online_callbacks(history, 4, 100, "cpu", checkpoint=checkpoint, **options)
    assert with_checkpoint[-1] is checkpoint and len(with_checkpoint) == len(callbacks) + 1


def test_resampling_generator_is_seeded_by_one_draw():
    first, second = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = _resampling_generator(first), _resampling_generator(second)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    # It consumed exactly one draw of the parent, and is not the parent's stream.
    reference = torch.Generator().manual_seed(3)
    torch.randint(2**62, (1,), generator=reference)
    assert torch.equal(torch.rand(4, generator=first), torch.rand(4, generator=reference))


def test_adam_dictionary_learning_lowers_the_objective_with_unit_atoms(data):
    X, _, _ = data
    init = _initial_dictionary(X, 16, torch.Generator().manual_seed(0))
    atoms, codes, n_iter, history, flops = _adam_dictionary_learning(
        X, init, 0.03, learning_rate=1e-2, n_epochs=200
    )
    assert n_iter == 200 and flops > 0
    assert (codes > 0).all()  # exp-parametrised
    torch.testing.assert_close(atoms.norm(dim=1), torch.ones(16, dtype=torch.float64))
    assert history["loss"][-1] < history["loss"][0]
    assert history["step"] == list(range(10, 201, 10))
    assert not init.requires_grad and not torch.equal(init, atoms)  # init not modified


def test_exp_codes_gradients_are_per_sample_whatever_the_batch(data):
    # The loss is summed over the batch: a sample's code gradient does not depend on
    # how many samples share its batch.
    X, dictionary, _ = data
    log_codes = torch.nn.Parameter(torch.full((X.shape[0], 16), -3.0, dtype=X.dtype))
    atoms = torch.nn.Parameter(dictionary.clone())
    _exp_codes_gradients(X, log_codes, atoms, 0.03, torch.arange(4), False)
    few = log_codes.grad[:4].clone()
    codes, stats = _exp_codes_gradients(X, log_codes, atoms, 0.03, None, True)
    torch.testing.assert_close(log_codes.grad[:4], few)
    torch.testing.assert_close(stats[0], objective(X, codes, atoms, alpha=0.03).detach())
