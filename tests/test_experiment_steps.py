"""The steps of ``sparsegap activations`` that need no language model."""

import numpy as np
import pytest
import torch

from sklearn_sparsegap.experiments._activations import (
    loss_batches,
    plot_fvu_vs_flops,
    run_methods,
    split_activations,
)


def _activation_set(n_sequences=20, length=10, n_features=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_sequences * length, n_features)).astype(np.float32)
    X[::length] *= 100.0  # position 0: the attention sink
    metadata = {"sequence": np.repeat(np.arange(n_sequences), length),
                "position": np.tile(np.arange(length), n_sequences),
                "token": rng.integers(0, 50, n_sequences * length)}
    return X, metadata


def test_split_activations_scales_and_keeps_sequences_whole():
    X, metadata = _activation_set()
    split = split_activations(X, metadata, len(X), holdout_fraction=0.25, max_holdout=None)
    sequence = metadata["sequence"]
    assert not set(sequence[split.train_rows]) & set(sequence[split.holdout_rows])
    assert (metadata["position"][np.r_[split.train_rows, split.holdout_rows]] != 0).all()
    # Scaled to mean squared norm n_features on the training rows, holdout alike.
    assert np.mean(np.sum(split.X_train.astype(np.float64) ** 2, axis=1)) == pytest.approx(8)
    np.testing.assert_allclose(split.X_holdout, X[split.holdout_rows] * split.scale, rtol=1e-6)
    assert split.n_massive == 0
    # X is not modified.
    np.testing.assert_array_equal(X, _activation_set()[0])


def test_split_activations_cuts_the_holdout_at_a_sequence_boundary():
    X, metadata = _activation_set()
    split = split_activations(X, metadata, len(X), holdout_fraction=0.25, max_holdout=12)
    # 9 usable rows per sequence: 12 rows would end inside the second sequence.
    assert len(split.holdout_rows) == 9
    assert len(set(metadata["sequence"][split.holdout_rows])) == 1


def test_loss_batches_only_for_a_language_model():
    _, metadata = _activation_set()
    holdout = np.flatnonzero(metadata["sequence"] < 6)

    class Encoder(torch.nn.Module):  # no output embeddings: no LM loss
        pass

    class CausalLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(8, 50)

        def get_output_embeddings(self):
            return self.head

    assert loss_batches(Encoder(), metadata, holdout, 5) is None
    assert loss_batches(CausalLM(), metadata, holdout, 0) is None
    batches = loss_batches(CausalLM(), metadata, holdout, 5)
    assert [tuple(b.shape) for b in batches] == [(4, 10), (1, 10)]
    assert batches[0][0, 0] == metadata["token"][0]  # position 0 kept, as the model saw it


def test_run_methods_refines_an_sae_fitted_for_ito_alone():
    X, metadata = _activation_set(n_sequences=40)
    split = split_activations(X, metadata, len(X), max_holdout=None)
    rows, fitted = run_methods(["sae+ito"], split, n_components=16, budget="quick",
                               progress=False)
    assert [row["method"] for row in rows] == ["sae+ito"]
    # Its SAE was fitted for it but is not reported as a method of the run.
    assert set(fitted) == {"sae+ito"}
    assert rows[0]["fit_seconds"] > 0 and rows[0]["training_flops"] > 0
    assert rows[0]["matched"] == "the SAE's dictionary; OMP at each token's SAE L0"


def test_plot_fvu_vs_flops_puts_methods_at_their_cost(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    rows = [{"method": "sae", "fvu": 0.5, "mean_l0": 8, "inference_flops": 1e6, "n_holdout": 10},
            {"method": "sae+ito", "fvu": 0.3, "mean_l0": 8, "inference_flops": 1e8,
             "n_holdout": 10}]
    captured = {}
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["ax"] = fig.axes[0]
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        path = plot_fvu_vs_flops(rows, tmp_path / "f.png", title="t")
    finally:
        plt.Figure.savefig = original
    assert path.stat().st_size > 0
    ax = captured["ax"]
    assert ax.get_xscale() == "log"
    xs = sorted(line.get_xdata()[0] for line in ax.get_lines())
    assert xs == [1e5, 1e7]  # FLOPs per token
