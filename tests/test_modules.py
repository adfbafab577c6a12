"""The numeric building blocks of the amortised encoders, on tensors: analytic
gradients against autograd, initialisation, the known-codes decoder and resampling."""

import pytest
import torch

from sklearn_sparsegap import make_sparse_dictionary_data
from sklearn_sparsegap._autoencoder import (
    DeadLatentResampler,
    data_scale,
    fit_output_layer,
    initialize_autoencoder,
    least_squares_decoder,
    make_gradient_function,
    merge_code_moments,
)
from sklearn_sparsegap._modules import SparseAutoencoderModule


@pytest.fixture(scope="module")
def data():
    return make_sparse_dictionary_data(512, random_state=0)


def _random_module(sizes, activation, k, fit_intercept, seed):
    """A float64 module with every parameter drawn from N(0, 1)."""
    module = SparseAutoencoderModule(
        sizes, activation=activation, k=k, fit_intercept=fit_intercept
    ).double()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(generator=torch.Generator().manual_seed(seed))
    return module


def test_analytic_gradients_match_autograd(data):
    X, _, _ = data
    x = torch.tensor(X[:64])
    from sklearn_sparsegap._modules import sae_gradients

    configurations = [
        (sizes, activation, k, sparse, fit_intercept)
        for sizes in ((8, 16), (8, 32, 16), (8, 12, 10, 16))
        for activation, k, sparse in (
            ("relu", None, False), ("topk", 3, False), ("topk", 3, True)
        )
        for fit_intercept in (True, False)
    ]
    for sizes, activation, k, sparse, fit_intercept in configurations:
        module = _random_module(sizes, activation, k, fit_intercept, seed=0)
        params = [p for p in module.parameters() if p.requires_grad]
        codes, reconstruction = module(x)
        loss = 0.5 * (x - reconstruction).square().sum(1).mean() + 0.3 * codes.abs().sum(
            1
        ).mean()
        expected = torch.autograd.grad(loss, params)
        returned, stats = sae_gradients(module, x, 0.3, with_stats=True, sparse=sparse)
        for param, grad in zip(params, expected):
            torch.testing.assert_close(param.grad, grad)
        torch.testing.assert_close(returned, codes.detach())
        torch.testing.assert_close(stats[0], loss.detach())


def test_analytic_codes_loss_gradients_match_autograd(data):
    X, _, codes = data
    x, target = torch.tensor(X[:64]), torch.tensor(codes[:64])
    from sklearn_sparsegap._modules import cosine_gradients
    from sklearn_sparsegap._training import cosine_loss

    zero_rows = zero_columns = 0
    configurations = [
        (sizes, activation, k, over, fit_intercept)
        for sizes in ((8, 16), (8, 32, 16))
        for activation, k in (("relu", None), ("topk", 3))
        for over in ("sample", "latent")
        for fit_intercept in (True, False)
    ]
    for sizes, activation, k, over, fit_intercept in configurations:
        module = _random_module(sizes, activation, k, fit_intercept, seed=1)
        with torch.no_grad():
            # Some samples (rows) and latents (columns) with every code zero.
            module.biases[-1].sub_(4.0)
        module.components.requires_grad_(False)
        module.intercept.requires_grad_(False)
        params = [p for p in module.parameters() if p.requires_grad]
        predicted = module.encode(x)
        zero_rows += int((predicted == 0).all(dim=1).sum())
        zero_columns += int((predicted == 0).all(dim=0).sum())
        loss = cosine_loss(predicted, target, over=over)
        expected = torch.autograd.grad(loss, params)
        _, analytic_loss = cosine_gradients(module, x, target, over)
        for param, grad in zip(params, expected):
            torch.testing.assert_close(param.grad, grad)
        torch.testing.assert_close(analytic_loss, loss.detach())
    assert zero_rows > 0 and zero_columns > 0


def test_resampler_points_dead_latents_at_poorly_reconstructed_samples(data):
    X, _, _ = data
    x = torch.tensor(X[:256])
    module = SparseAutoencoderModule((8, 16)).double()
    with torch.no_grad():
        module.components.copy_(torch.eye(16, 8, dtype=torch.float64) + 0.01)
        module.weights[0].copy_(module.components)
    optimizer = torch.optim.Adam(module.parameters())
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[3, 7]] = True
    before = module.components.detach().clone()
    DeadLatentResampler(module, optimizer, x, torch.Generator().manual_seed(0))(dead)
    after = module.components.detach()
    torch.testing.assert_close(after[~dead], before[~dead])
    assert not torch.allclose(after[dead], before[dead])
    torch.testing.assert_close(after[dead].norm(dim=1), torch.ones(2, dtype=torch.float64))
    assert torch.all(module.biases[0][dead] == 0)


def test_initialisation_starts_the_encoder_at_the_decoder_transpose(data):
    X, _, _ = data
    x = torch.tensor(X)
    module = SparseAutoencoderModule((8, 16)).double()
    initialize_autoencoder(module, x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(module.weights[0], module.components)
    torch.testing.assert_close(module.components.norm(dim=1), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(module.intercept, x.mean(dim=0))
    # The same draw in float32 and float64.
    single = SparseAutoencoderModule((8, 16))
    initialize_autoencoder(single, x.float(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(single.components.double(), module.components, atol=1e-6, rtol=0)


def test_output_layer_start_is_the_ridge_regression_onto_the_sae_start(data):
    X, _, _ = data
    x = torch.tensor(X)
    module = SparseAutoencoderModule((8, 32, 16)).double()
    initialize_autoencoder(module, x, torch.Generator().manual_seed(0))
    hidden = torch.relu(module.weights[0] @ (x - module.intercept).T + module.biases[0][:, None]).T
    target = (x - module.intercept) @ module.components.T
    # The normal equations of the centred ridge problem hold at the solution.
    centred, centred_target = hidden - hidden.mean(0), target - target.mean(0)
    gram = centred.T @ centred
    penalty = 0.1 * gram.trace() / gram.shape[0]
    weights = module.weights[1].T
    residual_grad = centred.T @ (centred @ weights - centred_target) + penalty * weights
    assert residual_grad.abs().max() < 1e-8 * gram.abs().max()
    # And without a penalty it is least squares: exact on a reachable target.
    exact = hidden @ torch.randn(32, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fit_output_layer(module, x, exact, ridge=0.0)
    torch.testing.assert_close(hidden @ module.weights[1].T + module.biases[1], exact)


def test_running_moments_give_the_least_squares_decoder_of_all_chunks(data):
    X, _, codes = data
    x, s = torch.tensor(X), torch.tensor(codes)
    moments = None
    for rows in (slice(0, 100), slice(100, 350), slice(350, None)):
        moments = merge_code_moments(moments, s[rows], x[rows])
    assert moments["n"] == len(X)
    for fit_intercept in (True, False):
        dictionary, intercept = least_squares_decoder(moments, fit_intercept)
        design = torch.cat([s, torch.ones(len(s), 1, dtype=s.dtype)], 1) if fit_intercept else s
        solution = torch.linalg.lstsq(design, x).solution
        torch.testing.assert_close(dictionary, solution[:16])
        expected_intercept = solution[16] if fit_intercept else torch.zeros(8, dtype=x.dtype)
        torch.testing.assert_close(intercept, expected_intercept)


def test_rank_deficient_codes_fall_back_to_the_minimum_norm_decoder(data):
    X, _, codes = data
    s = torch.tensor(codes).clone()
    s[:, 3] = 0.0  # a latent never active
    moments = merge_code_moments(None, s, torch.tensor(X))
    dictionary, _ = least_squares_decoder(moments, True)
    assert torch.isfinite(dictionary).all()
    torch.testing.assert_close(dictionary[3], torch.zeros(8, dtype=torch.float64))


def test_data_scale_is_the_least_squares_factor():
    generator = torch.Generator().manual_seed(0)
    reconstruction = torch.randn(5, 8, dtype=torch.float64, generator=generator)
    factors = torch.tensor([0.5, 2.0, 1.0, 3.0, -1.0], dtype=torch.float64)[:, None]
    scale = data_scale(reconstruction, factors * reconstruction)
    torch.testing.assert_close(scale, factors.clamp_min(0))


def test_gradient_function_fills_the_reconstruction_gradients(data):
    X, _, _ = data
    x = torch.tensor(X[:64])
    module = _random_module((8, 16), "relu", None, True, seed=2)
    compute = make_gradient_function(module, x, alpha=0.3)
    codes, stats = compute(torch.arange(32), True)
    batch = x[:32]
    loss = 0.5 * (batch - module(batch)[1]).square().sum(1).mean() + 0.3 * codes.sum(1).mean()
    torch.testing.assert_close(stats[0], loss.detach())
    assert compute(None, False)[1] is None


def test_auxk_gradients_match_autograd(data):
    """The AuxK term: the k_aux largest pre-activations of the dead latents reconstruct
    the (detached) residual through their atoms, no bias, weighted by
    weight * min(n_dead / k_aux, 1)."""
    from sklearn_sparsegap._modules import sae_gradients

    X, _, _ = data
    x = torch.tensor(X[:64])
    cases = [
        (sizes, n_dead_latents, sparse)
        for sizes, n_dead_latents in (((8, 16), 5), ((8, 32, 16), 12))
        # The sparse step also adds up a dead latent that is among a row's top k.
        for sparse in (False, True)
    ]
    for sizes, n_dead_latents, sparse in cases:
        module = _random_module(sizes, "topk", 3, True, seed=1)
        dead = torch.zeros(16, dtype=torch.bool)
        dead[torch.randperm(16, generator=torch.Generator().manual_seed(0))[:n_dead_latents]] = True
        k_aux, weight = 4, 0.25
        params = [p for p in module.parameters() if p.requires_grad]
        pre = module.pre_activation(x)
        codes = module.activate(pre)
        reconstruction = module.decode(codes)
        masked = pre.masked_fill(~dead, float("-inf"))
        k = min(k_aux, n_dead_latents)
        values, chosen = masked.topk(k, dim=1)
        aux_codes = torch.zeros_like(pre).scatter(1, chosen, torch.relu(values))
        error = (x - reconstruction).detach()
        aux = 0.5 * (aux_codes @ module.components - error).square().sum(1).mean()
        loss = 0.5 * (x - reconstruction).square().sum(1).mean()
        loss = loss + weight * min(n_dead_latents / k_aux, 1.0) * aux
        expected = torch.autograd.grad(loss, params)
        assert bool((codes[:, dead] != 0).any())
        sae_gradients(module, x, 0.0, auxk=(dead, k_aux, weight), sparse=sparse)
        for param, grad in zip(params, expected):
            torch.testing.assert_close(param.grad, grad)
        # No dead latent: the plain gradients.
        no_dead = torch.zeros(16, dtype=torch.bool)
        sae_gradients(module, x, 0.0, auxk=(no_dead, k_aux, weight), sparse=sparse)
        plain = torch.autograd.grad(0.5 * (x - module(x)[1]).square().sum(1).mean(), params)
        for param, grad in zip(params, plain):
            torch.testing.assert_close(param.grad, grad)


def test_sparse_topk_step_trains_the_dense_steps_model(monkeypatch):
    """A TopK SAE wide enough for the sparse step (k = 2 of 64 latents) follows the
    dense step's trajectory: same codes and dictionary up to float32 rounding."""
    import numpy as np

    from sklearn_sparsegap import SAEEncoder
    from sklearn_sparsegap import _modules

    X, _, _ = make_sparse_dictionary_data(
        256, n_features=16, n_components=64, n_nonzero_coefs=2, random_state=0
    )
    X = X.astype(np.float32)
    params = dict(
        n_components=64, activation="topk", n_nonzero_coefs=2, batch_size=64, max_iter=5,
        random_state=0,
    )  # fmt: skip
    module = SparseAutoencoderModule((16, 64), activation="topk", k=2)
    assert _modules.uses_sparse_topk_step(module)
    sparse = SAEEncoder(**params).fit(X)
    monkeypatch.setattr(_modules, "uses_sparse_topk_step", lambda module: False)
    dense = SAEEncoder(**params).fit(X)
    np.testing.assert_allclose(sparse.components_, dense.components_, atol=1e-4)
    np.testing.assert_allclose(sparse.transform(X), dense.transform(X), atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sparse_topk_step_matches_dense():
    """The sparse TopK step's kernels (embedding_bag, sampled_addmm, CSR products) on
    the GPU give the dense step's gradients, AuxK included."""
    from sklearn_sparsegap._modules import sae_gradients

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 16, generator=generator, dtype=torch.float64).cuda()
    module = _random_module((16, 32, 64), "topk", 3, True, seed=2).cuda()
    dead = torch.zeros(64, dtype=torch.bool, device="cuda")
    dead[::3] = True
    grads = {}
    for sparse in (False, True):
        codes, stats = sae_gradients(
            module, x, 0.1, with_stats=True, auxk=(dead, 4, 0.5), sparse=sparse
        )
        grads[sparse] = [codes, stats] + [p.grad for p in module.parameters() if p.requires_grad]
    for dense_value, sparse_value in zip(grads[False], grads[True]):
        torch.testing.assert_close(sparse_value, dense_value)


def test_sparse_and_dense_output_gradients_agree(data):
    # The sparse TopK step's residual and last-layer gradient are the dense step's,
    # restricted to the active latents.
    from sklearn_sparsegap._modules import (
        _dense_output_gradient,
        _encoder_pre_activation,
        _sparse_output_gradient,
    )

    X, _, _ = data
    x = torch.tensor(X[:32])
    module = _random_module([X.shape[1], 24], "topk", 3, True, seed=2)
    with torch.no_grad():  # as in sae_gradients
        _, pre = _encoder_pre_activation(module, x)
        codes, residual, grad = _dense_output_gradient(module, pre, x, 0.1)
        active, sparse_residual, sparse_grad = _sparse_output_gradient(module, pre, x, 0.1)
    torch.testing.assert_close(active.to_dense(), codes)
    torch.testing.assert_close(sparse_residual, residual)
    torch.testing.assert_close(sparse_grad.to_dense(), grad)
    torch.testing.assert_close(residual, codes @ module.components + module.intercept - x)


def test_auxk_gradient_is_added_to_dense_and_sparse_gradients_alike():
    from sklearn_sparsegap._modules import _add_auxk_gradient, _RowSparse

    main = _RowSparse(torch.tensor([[1.0], [2.0]]), torch.tensor([[0], [3]]), 4)
    aux = _RowSparse(torch.tensor([[0.5], [0.25]]), torch.tensor([[0], [1]]), 4)
    dense = _add_auxk_gradient(main.to_dense(), aux)
    expected = torch.tensor([[1.5, 0.0, 0.0, 0.0], [0.0, 0.25, 0.0, 2.0]])
    torch.testing.assert_close(dense, expected)
    torch.testing.assert_close(_add_auxk_gradient(main, aux).to_dense(), expected)


def test_sae_statistics_are_the_logged_batch_statistics():
    from sklearn_sparsegap._modules import _sae_statistics
    from sklearn_sparsegap._training import batch_statistics

    generator = torch.Generator().manual_seed(0)
    residual = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    codes = torch.relu(torch.randn(6, 4, generator=generator, dtype=torch.float64))
    loss = 0.5 * residual.square().sum(dim=1).mean() + 0.2 * codes.sum(dim=1).mean()
    torch.testing.assert_close(
        _sae_statistics(residual, codes, 0.2, 5), batch_statistics(loss, residual, codes)
    )
