"""Analytic FLOP counts (Appendix I) against torch's FlopCounterMode on the real modules."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sklearn_sparsegap import MLPEncoder, SAEEncoder, make_sparse_dictionary_data
from sklearn_sparsegap._modules import SparseAutoencoderModule
from sklearn_sparsegap.flops import (
    encoder_inference_flops,
    encoder_training_flops,
    ito_adam_flops,
    sparse_coding_training_flops,
)


def _measured_forward_flops(module, x):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("hidden", [(), (32,), (64, 16)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_forward_matmul_terms_match_flop_counter(hidden, fit_intercept):
    n_samples, n_features, n_components = 50, 8, 16
    sizes = (n_features, *hidden, n_components)
    module = SparseAutoencoderModule(sizes, fit_intercept=fit_intercept)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_()
    measured = _measured_forward_flops(module, torch.randn(n_samples, n_features))
    analytic = encoder_inference_flops(
        n_features, n_components, n_samples, hidden_layer_sizes=hidden
    )
    # FlopCounterMode counts matrix products only: remove the per-layer element-wise term.
    elementwise = n_samples * sum(sizes[1:])
    assert analytic - elementwise == measured


def test_estimators_report_the_formulas():
    X, dictionary, _ = make_sparse_dictionary_data(64, random_state=0)
    sae = SAEEncoder(max_iter=3, tol=0, device="cpu").fit(X)
    assert sae.training_flops_ == encoder_training_flops(8, 8, 64, 3)
    mlp = MLPEncoder(hidden_layer_sizes=(32,), dictionary=dictionary, max_iter=2, tol=0,
                     device="cpu").fit(X)
    assert mlp.training_flops_ == encoder_training_flops(
        8, 16, 64, 2, hidden_layer_sizes=(32,), learn_dictionary=False
    )
    assert mlp.inference_flops(5) == encoder_inference_flops(8, 16, 5, hidden_layer_sizes=(32,))
    # partial_fit accumulates.
    before = sae.training_flops_
    sae.partial_fit(X)
    assert sae.training_flops_ == before + encoder_training_flops(8, 8, 64, 1)


def test_paper_reference_values():
    # The paper's Appendix I: 1360 / 1744 per sample-step, 528 per inference sample,
    # ITO 144 + 704 per iteration and sample at N=16, M=8; MLP H=32 5360 / 5744.
    assert encoder_training_flops(8, 16, 1, learn_dictionary=False) == 1360
    assert encoder_training_flops(8, 16, 1) == 1744
    assert encoder_inference_flops(8, 16, 1) == 528
    assert ito_adam_flops(8, 16, 1, 10) == 144 + 704 * 10
    assert encoder_training_flops(8, 16, 1, hidden_layer_sizes=(32,),
                                  learn_dictionary=False) == 5360
    assert encoder_training_flops(8, 16, 1, hidden_layer_sizes=(32,)) == 5744
    # Sparse coding counts the batch once (the authors' code counted it twice).
    assert sparse_coding_training_flops(8, 16, 2048) < 2 * sparse_coding_training_flops(8, 16, 1024) + 1
