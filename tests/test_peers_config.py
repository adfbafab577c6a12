"""The SAELens configuration the peer benchmarks use (benchmarks/_bench/saelens.py):
a careful user's settings really take effect."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sae_lens", reason="SAELens is in the benchmark extra")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _bench.saelens import SAELensSAE  # noqa: E402


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    # Activations whose mean is as large as their spread, as on SmolLM2.
    return (rng.normal(size=(256, 16)) + 3.0 * rng.normal(size=16)).astype(np.float32)


def test_decoder_bias_starts_at_the_training_mean_only_when_asked(X):
    tuned = SAELensSAE.tuned(len(X), n_components=32, k=4, batch_size=32, epochs=1).fit(X)
    np.testing.assert_allclose(tuned.b_dec_start_, X.mean(axis=0), rtol=1e-6)
    default = SAELensSAE(n_components=32, k=4, batch_size=32, epochs=1).fit(X)
    assert not default.b_dec_start_.any()  # SAELens 6 starts the decoder bias at zero


def test_auxk_switches_on_in_a_short_run_with_a_one_epoch_window(X):
    params = dict(n_components=64, k=1, batch_size=32, epochs=3, record_aux_loss=True)
    tuned = SAELensSAE.tuned(len(X), **params).fit(X)
    assert tuned.dead_feature_window_ == len(X) // 32
    assert len(tuned.aux_losses_) == 3 * len(X) // 32
    # Dead latents exist after the first epoch, and AuxK trains them from then on.
    assert max(tuned.aux_losses_) > 0
    assert not any(tuned.aux_losses_[: tuned.dead_feature_window_])
    default = SAELensSAE(**params).fit(X)
    assert default.dead_feature_window_ == 1000 and not any(default.aux_losses_)


def test_l1_warm_up_over_five_percent_of_the_steps(X):
    tuned = SAELensSAE.tuned(len(X), n_components=32, batch_size=16, epochs=5)
    assert tuned.l1_warm_up_steps == 5 * (len(X) // 16) // 20
    fitted = tuned.fit(X)
    assert fitted.sae_.cfg.l1_warm_up_steps == tuned.l1_warm_up_steps
    assert SAELensSAE.tuned(len(X), k=4).l1_warm_up_steps == 0  # TopK has no L1


def test_bad_bias_start_is_named(X):
    with pytest.raises(ValueError, match="b_dec_init"):
        SAELensSAE(b_dec_init="median", batch_size=32).fit(X)
