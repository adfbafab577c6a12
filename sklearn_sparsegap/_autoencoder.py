"""The numerics of the amortised encoders, on tensors: initialisation, the
least-squares decoder of known codes, the gradient functions the training loop calls,
and dead-latent resampling.

``_sae.py`` validates the input once and calls these; nothing here sees numpy arrays
or estimator parameters.
"""

import math

import torch

from ._modules import cosine_gradients, heaviside_step, sae_gradients
from ._training import batch_statistics, cosine_loss, renormalize_atoms

__all__ = [
    "DeadLatentResampler",
    "data_scale",
    "fit_input_scale",
    "fit_output_layer",
    "fold_input_scale",
    "held_out_figures",
    "initialize_autoencoder",
    "least_squares_decoder",
    "make_gradient_function",
    "merge_code_moments",
    "set_decoder",
]

# Initial JumpReLU threshold (Rajamanoharan et al. 2024).
JUMPRELU_INIT_THRESHOLD = 1e-3
# Ridge penalty of an MLP's output-layer start, relative to the hidden features' mean
# square (see the user guide's defaults page).
MLP_INIT_RIDGE = 0.1
# Rows used to fit the starting encoder output layer.
MAX_INIT_ROWS = 2**14
# Resampled encoder rows get this fraction of the mean norm of the live rows (Bricken et al.).
RESAMPLE_ENCODER_SCALE = 0.2
# At most this many samples are scored to choose resampling directions.
RESAMPLE_POOL = 8192
# The input scale is estimated on at most this many evenly spaced rows.
MAX_SCALE_ROWS = 2**16
SCALE_BLOCK_ROWS = 4096


def fit_input_scale(X, centre=False):
    """The factor ``c`` such that ``c * X`` has mean squared row norm ``n_features``
    (SAELens's ``normalize_activations="expected_average_only_in"``), as a float.

    With ``centre`` the norms are those of ``X - mean(X)``: a model with a decoder bias
    reconstructs the mean through it, and on activations with a large shared offset
    the raw norms would shrink the rest. 1.0 when every row is zero, or there is none.
    Accumulated in float64 over blocks of rows: a float64 copy of 65,536 rows of 576
    features would take 300 MB and most of a second.
    """
    if X.shape[0] == 0:
        return 1.0
    blocks = X.split(SCALE_BLOCK_ROWS)
    mean = 0.0
    if centre:
        mean = sum(block.sum(dim=0, dtype=torch.float64) for block in blocks) / X.shape[0]
    squared = sum(
        (block.to(torch.float64) - mean).square_().sum() for block in blocks
    ) / X.shape[0]
    if not float(squared) > 0:
        return 1.0
    return math.sqrt(X.shape[1] / float(squared))


@torch.no_grad()
def fold_input_scale(module, factor):
    """Multiply every bias (encoder layers, decoder intercept) and the JumpReLU
    thresholds of ``module`` by ``factor``, in place.

    The encoder and decoder are positively homogeneous in (input, biases), so a model
    trained on ``c * X`` becomes, after ``fold_input_scale(module, 1 / c)``, the model
    of ``X`` whose codes and reconstructions are ``1 / c`` times the trained ones;
    ``fold_input_scale(module, c)`` undoes it.
    """
    if factor == 1.0:
        return
    module.intercept.mul_(factor)
    for bias in module.biases:
        bias.mul_(factor)
    module.log_threshold.add_(math.log(factor))


def _least_squares(design, target):
    """Minimum-norm least squares (rank-revealing on the CPU; CUDA has QR only)."""
    driver = "gelsd" if design.device.type == "cpu" else None
    return torch.linalg.lstsq(design, target, driver=driver).solution


def merge_code_moments(moments, codes, X):
    """Running means and centred cross-products of ``(codes, X)`` over every chunk.

    ``moments`` (None for the first chunk) is merged with this chunk by the pairwise
    update of Chan, Golub & LeVeque (1979), in float64 on the data's device; the result
    is a dict of float64 tensors (``n`` an int) that :func:`least_squares_decoder` reads.
    """
    codes, X = codes.to(torch.float64), X.to(torch.float64)
    mean_codes, mean_X = codes.mean(dim=0), X.mean(dim=0)
    centred = codes - mean_codes
    chunk = {
        "n": X.shape[0],
        "mean_codes": mean_codes,
        "mean_X": mean_X,
        "codes_codes": centred.T @ centred,
        "codes_X": centred.T @ (X - mean_X),
    }
    if moments is None:
        return chunk
    moments = {key: value.to(X.device) if torch.is_tensor(value) else value
               for key, value in moments.items()}
    n = moments["n"] + chunk["n"]
    shift_codes = mean_codes - moments["mean_codes"]
    shift_X = mean_X - moments["mean_X"]
    weight = moments["n"] * chunk["n"] / n
    return {
        "n": n,
        "mean_codes": moments["mean_codes"] + shift_codes * chunk["n"] / n,
        "mean_X": moments["mean_X"] + shift_X * chunk["n"] / n,
        "codes_codes": moments["codes_codes"] + chunk["codes_codes"]
        + weight * torch.outer(shift_codes, shift_codes),
        "codes_X": moments["codes_X"] + chunk["codes_X"]
        + weight * torch.outer(shift_codes, shift_X),
    }


def least_squares_decoder(moments, fit_intercept, dictionary=None):
    """The dictionary ``D`` and bias ``b`` minimising ``||X - codes @ D - b||`` over the
    rows summarised by ``moments`` (``b = 0`` without ``fit_intercept``; a given
    ``dictionary`` is kept and only ``b`` is fitted). Float64 tensors.

    Solved through the normal equations (Cholesky); a rank-deficient code matrix (a
    latent never active) falls back to the minimum-norm solution.
    """
    n, mean_codes, mean_X = moments["n"], moments["mean_codes"], moments["mean_X"]
    gram, cross = moments["codes_codes"], moments["codes_X"]
    if not fit_intercept:
        gram = gram + n * torch.outer(mean_codes, mean_codes)
        cross = cross + n * torch.outer(mean_codes, mean_X)
    if dictionary is None:
        factor, info = torch.linalg.cholesky_ex(gram)
        if int(info) == 0:
            dictionary = torch.cholesky_solve(cross, factor)
        else:
            dictionary = _least_squares(gram, cross)
    dictionary = dictionary.to(torch.float64)
    intercept = mean_X - mean_codes @ dictionary if fit_intercept else torch.zeros_like(mean_X)
    return dictionary, intercept


def data_scale(reconstruction, centred):
    """Per row, the non-negative factor ``c`` minimising ``||centred - c * reconstruction||``
    (least squares), as a column: the scale of known codes the cosine loss leaves free."""
    scale = (reconstruction * centred).sum(dim=1) / reconstruction.square().sum(
        dim=1
    ).clamp_min(torch.finfo(reconstruction.dtype).tiny)
    return scale.clamp_min(0).unsqueeze(1)


@torch.no_grad()
def set_decoder(module, dictionary, intercept):
    """Copy a decoder ``(dictionary, intercept)`` into ``module``."""
    module.components.copy_(dictionary)
    module.intercept.copy_(intercept)


@torch.no_grad()
def fit_output_layer(module, X, target=None, ridge=MLP_INIT_RIDGE):
    """Set the last encoder layer to the (ridge) regression of its inputs onto ``target``.

    ``target`` is the pre-activations the layer should start with; None means the
    SAE's starting pre-activations ``(x - b) D^T``. From PyTorch's random start a
    quarter of an MLP's ReLU latents never fire on the paper's task and never get a
    gradient; starting where the SAE starts keeps every latent alive. An MLP's start
    is a ridge regression because plain least squares interpolates once the hidden
    width reaches ``n_samples``; ``ridge`` is relative to the mean square of the
    (centred) layer input, and the bias is not penalised (``ridge=0``: least squares).
    At most ``MAX_INIT_ROWS`` evenly spaced rows are used. Computed in float64.
    """
    fit_intercept = module.fit_intercept
    if X.shape[0] > MAX_INIT_ROWS:
        rows = torch.linspace(0, X.shape[0] - 1, MAX_INIT_ROWS, device=X.device).long()
        X = X[rows]
        target = None if target is None else target[rows]
    hidden = X - module.intercept if fit_intercept else X
    if target is None:
        target = hidden @ module.components.T
    for weight, bias in zip(module.weights[:-1], module.biases[:-1]):
        hidden = torch.relu(torch.addmm(bias, hidden, weight.T))
    design = hidden.to(torch.float64)
    target = target.to(torch.float64)
    if ridge > 0:
        # Centred features carry the bias; the penalty is relative to their mean square,
        # so that neither the scale of X nor the bias column matters.
        offset = design.mean(dim=0) if fit_intercept else torch.zeros_like(design[0])
        target_offset = target.mean(dim=0) if fit_intercept else torch.zeros_like(target[0])
        design = design - offset
        gram = design.T @ design
        gram.diagonal().add_(ridge * max(float(gram.trace()), 1e-300) / gram.shape[0])
        weights = torch.linalg.solve(gram, design.T @ (target - target_offset))
        bias = target_offset - offset @ weights
    else:
        if fit_intercept:
            design = torch.cat([design, torch.ones_like(design[:, :1])], dim=1)
        solution = _least_squares(design, target)
        weights, bias = solution[: hidden.shape[1]], solution[-1]
    module.weights[-1].copy_(weights.T)
    if fit_intercept:
        module.biases[-1].copy_(bias)


def _init_rows(X):
    """At most ``MAX_INIT_ROWS`` evenly spaced rows of ``X``."""
    if X.shape[0] <= MAX_INIT_ROWS:
        return X
    return X[torch.linspace(0, X.shape[0] - 1, MAX_INIT_ROWS, device=X.device).long()]


@torch.no_grad()
def initialize_autoencoder(
    module, X, generator, *, dictionary=None, decoder=None, target_codes=None, scale=1.0
):
    """The starting point of training, in place.

    Random unit-norm atoms (or ``dictionary``), the data mean as decoder bias, encoder
    layers uniform in ``+-1/sqrt(fan_in)``; the SAE's encoder then starts as the
    decoder's transpose and an MLP's output layer at the ridge regression of its random
    hidden features onto those same pre-activations, ``(x - b) D^T``. On known codes
    (``target_codes`` given) the decoder is ``decoder`` (the least-squares
    ``(dictionary, intercept)``) and the output layer starts at the regression onto the
    codes (least squares for a linear encoder, ridge for an MLP). Every random number is
    drawn in float64 from ``generator`` (a CPU generator), so that a float32 fit starts
    where the float64 fit of the same seed does. The model is that of ``scale * X``
    (the input scaling; ``X`` itself is not copied whole).
    """
    dtype, device = X.dtype, X.device
    n_components, n_features = module.components.shape
    if dictionary is not None:
        atoms = dictionary.to(device=device, dtype=dtype)
    else:
        atoms = torch.randn(n_components, n_features, generator=generator, dtype=torch.float64)
        atoms = atoms.to(device=device, dtype=dtype)
        renormalize_atoms(atoms)
    module.components.copy_(atoms)
    for weight, bias in zip(module.weights, module.biases):
        bound = weight.shape[1] ** -0.5
        draw = torch.rand(weight.shape, generator=generator, dtype=torch.float64)
        weight.copy_(((2 * draw - 1) * bound).to(device=device, dtype=dtype))
        bias.zero_()
    linear = len(module.weights) == 1
    if target_codes is None:
        if module.fit_intercept:
            module.intercept.copy_(X.mean(dim=0) * scale)
        if linear:
            module.weights[0].copy_(module.components)
        else:
            fit_output_layer(module, _init_rows(X) * scale, None, MLP_INIT_RIDGE)
    else:
        if decoder is not None:
            set_decoder(module, *decoder)
        fit_output_layer(module, X, target_codes, ridge=0.0 if linear else MLP_INIT_RIDGE)
    module.log_threshold.fill_(math.log(JUMPRELU_INIT_THRESHOLD))


def make_gradient_function(module, X, target=None, *, alpha=0.0, codes_loss="sample",
                           rescale=False, streamed=False, scale=1.0, auxk=None):
    """``compute_gradients(indices, with_stats)`` of ``module`` on ``X``, for ``train``.

    With ``streamed`` the batches come from a batch source instead: ``indices`` is then
    the rows themselves, or ``(rows, target rows)`` when ``target`` is not None (``X``
    and ``target`` are unused but for choosing the loss).

    On reconstruction (``target`` None) the loss is the library objective with penalty
    ``alpha`` (on the L1 norm of the codes, or on their L0 count for JumpReLU); on
    known codes it is ``1 - cos(codes, target)`` averaged per ``codes_loss``, and the
    logged statistics are those of what ``transform`` returns (rescaled when
    ``rescale``). ReLU and TopK encoders (linear or MLP) use the analytic gradients of
    ``_modules``; JumpReLU goes through autograd. Each batch is multiplied by ``scale``
    (the input scaling) as it is drawn, so ``X`` is not copied. ``auxk = (dead, k_aux,
    weight)`` adds the AuxK loss of the latents a ``DeadLatents`` tracker ``dead`` says
    are dead before the step (analytic encoders only).
    """
    analytic = module.activation in ("relu", "topk")
    jumprelu = module.activation == "jumprelu"
    params = [p for p in module.parameters() if p.requires_grad]

    def codes_gradients(indices, with_stats):
        if streamed:
            batch, batch_target = indices
        else:
            batch = X if indices is None else X[indices]
            batch_target = target if indices is None else target[indices]
        if analytic:
            codes, loss = cosine_gradients(module, batch, batch_target, codes_loss)
        else:
            for param in params:
                param.grad = None
            codes = module.encode(batch)
            loss = cosine_loss(codes, batch_target, over=codes_loss)
            loss.backward()
        if not with_stats:
            return codes, None
        with torch.no_grad():
            if rescale:  # log what transform would return
                centred = batch - module.intercept
                reconstruction = codes @ module.components
                factor = data_scale(reconstruction, centred)
                codes, residual = codes * factor, centred - reconstruction * factor
            else:
                residual = batch - module.decode(codes)
            return codes, batch_statistics(loss.detach(), residual, codes)

    def reconstruction_gradients(indices, with_stats):
        batch = indices if streamed else (X if indices is None else X[indices])
        if scale != 1.0:
            batch = batch * scale
        if analytic:
            aux = None if auxk is None else (auxk[0].mask, auxk[1], auxk[2])
            return sae_gradients(module, batch, alpha, with_stats, auxk=aux)
        for param in params:
            param.grad = None
        pre = module.pre_activation(batch)
        codes = module.activate(pre)
        residual = batch - module.decode(codes)
        if jumprelu:
            penalty = heaviside_step(pre, module.threshold).sum(dim=1).mean()
        else:
            penalty = codes.abs().sum(dim=1).mean()
        loss = 0.5 * residual.square().sum(dim=1).mean() + alpha * penalty
        loss.backward()
        if not with_stats:
            return codes, None
        return codes, batch_statistics(loss, residual, codes)

    return reconstruction_gradients if target is None else codes_gradients


@torch.no_grad()
def held_out_figures(module, X, *, scale=1.0, dtype, device):
    """FVU, mean L0 and the fraction of latents never active of ``module`` on the rows
    of ``X`` (an array in memory or on disk, read in blocks of a few megabytes), as a
    dict keyed ``val_fvu``, ``val_l0``, ``val_dead_fraction``.

    The rows are multiplied by ``scale`` (the input scaling; FVU and L0 do not depend
    on it). FVU is ``1 - r2_score(X, X_hat, multioutput="variance_weighted")``,
    accumulated block by block (:class:`~sklearn_sparsegap._metrics.ExplainedDeviance`).
    """
    from ._batches import BLOCK_BYTES, iter_row_blocks
    from ._metrics import ExplainedDeviance
    from ._training import active_latents

    n_components, n_features = module.components.shape
    deviance = ExplainedDeviance(n_features)
    n_active = torch.zeros((), dtype=torch.int64, device=device)
    fired = torch.zeros(n_components, dtype=torch.bool, device=device)
    n_rows = 0
    for _, rows in iter_row_blocks(X, block_bytes=BLOCK_BYTES):
        batch = torch.as_tensor(rows).to(device=device, dtype=dtype)
        if scale != 1.0:
            batch = batch * scale
        codes, reconstruction = module(batch)
        deviance.update(batch.cpu().numpy(), reconstruction.cpu().numpy())
        n_active += (codes != 0).sum()
        fired |= active_latents(codes)
        n_rows += batch.shape[0]
    return {
        "val_fvu": deviance.fvu() if n_rows > 1 else math.nan,
        "val_l0": float(n_active) / n_rows,
        "val_dead_fraction": 1.0 - fired.to(torch.float64).mean().item(),
    }


class DeadLatentResampler:
    """Bricken et al. (2023) resampling: ``resampler(dead)`` points the latents of the
    boolean mask ``dead`` at the residuals of poorly reconstructed samples of ``X``
    (drawn with probability proportional to the squared error), gives their encoder
    rows a fraction of the live rows' norm, zeroes their bias and their Adam moments.
    ``generator`` (a CPU generator) draws the samples; the model is that of
    ``scale * X``."""

    def __init__(self, module, optimizer, X, generator, scale=1.0):
        self.module, self.optimizer, self.X, self.generator = module, optimizer, X, generator
        self.scale = scale

    @torch.no_grad()
    def __call__(self, dead):
        module, X = self.module, self.X
        n_dead = int(dead.sum())
        pool = X
        if X.shape[0] > RESAMPLE_POOL:
            rows = torch.randperm(X.shape[0], generator=self.generator)[:RESAMPLE_POOL]
            pool = X[rows.to(X.device)]
        if self.scale != 1.0:
            pool = pool * self.scale
        residual = pool - module(pool)[1]
        weights = residual.square().sum(dim=1)
        if float(weights.sum()) <= 0:
            return
        chosen = torch.multinomial(
            weights.cpu(), n_dead, replacement=n_dead > pool.shape[0], generator=self.generator
        ).to(X.device)
        directions = residual[chosen]
        directions /= directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
        dead_index = dead.nonzero().squeeze(1)
        module.components[dead_index] = directions
        last_weight, last_bias = module.weights[-1], module.biases[-1]
        alive = ~dead
        scale = RESAMPLE_ENCODER_SCALE * (
            last_weight[alive].norm(dim=1).mean() if bool(alive.any()) else 1.0
        )
        if last_weight.shape[1] == directions.shape[1]:
            last_weight[dead_index] = directions * scale
        last_bias[dead_index] = 0.0
        # Reset the optimiser moments of the rows that were reinitialised.
        for param in (module.components, last_weight, last_bias):
            state = self.optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead_index] = 0.0
