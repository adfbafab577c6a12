"""The numerics of the amortised encoders, on tensors: initialisation, the
least-squares decoder of known codes, the gradient functions the training loop calls,
dead-latent resampling, and :func:`fit_autoencoder`, the one training function.

``_sae.py`` validates the input once, resolves the defaults into an
:class:`AutoencoderSettings` and calls :func:`fit_autoencoder`; nothing here sees
estimator parameters, and numpy arrays only at the data's way in and the fitted state's
way out.
"""

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ._batches import DiskBatches, TensorBatches, exceeds_device, iter_row_blocks
from ._distributed import (
    RankBatches,
    active_reducer,
    averaged_gradients,
    broadcast_module,
    minimum_reducer,
    sync_after_resampling,
)
from ._families import (
    FamilyAutoencoderModule,
    family_gradient_function,
    initial_log_threshold,
    initialize_transcoder,
    uses_family_module,
)
from ._modules import SparseAutoencoderModule, cosine_gradients, heaviside_step, sae_gradients
from ._torch_utils import (
    make_generator,
    serial_if_small,
    state_to_numpy,
    state_to_torch,
    to_numpy,
    to_tensor,
)
from ._training import (
    HELD_OUT_KEYS,
    HISTORY_KEYS,
    Checkpoint,
    CountFlops,
    DeadLatents,
    HeldOutHistory,
    LogHistory,
    ProgressBar,
    ResampleDeadLatents,
    WarnIfLong,
    batch_statistics,
    cosine_loss,
    history_arrays,
    make_adam,
    renormalize_atoms,
    train,
)
from .flops import encoder_training_flops

__all__ = [
    "AutoencoderData",
    "AutoencoderSettings",
    "AutoencoderState",
    "DeadLatentResampler",
    "data_scale",
    "fit_autoencoder",
    "fit_input_scale",
    "fit_output_layer",
    "fold_input_scale",
    "held_out_figures",
    "initialize_autoencoder",
    "least_squares_decoder",
    "load_weights",
    "make_gradient_function",
    "make_module",
    "merge_code_moments",
    "set_decoder",
    "training_generator",
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
# A ReLU SAE trained in minibatches starts its encoder at this multiple of the decoder's
# transpose (SAELens starts its tied encoder at decoder norm 0.1): with small starting
# codes the L1 penalty sparsifies instead of shrinking every code, which matters with a
# few hundred steps (see the defaults page: SAELens side by side).
MINIBATCH_RELU_ENCODER_SCALE = 0.1


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
    if getattr(module, "magnitude_bias", None) is not None:  # a gated SAE's b_mag
        module.magnitude_bias.mul_(factor)


def _least_squares(design, target):
    """Minimum-norm least squares of a possibly rank-deficient system.

    Reached only when a Cholesky factorisation failed, i.e. when the system is singular
    (a latent never active in known codes; fewer rows than features + 1 with no ridge).
    CUDA's ``lstsq`` has only the QR driver (``gels``), which assumes full rank and
    returns garbage or fails there, so these one-off systems are solved on the CPU with
    the rank-revealing ``gelsd`` driver, as ``_solvers._greedy._solve_spd`` does.
    """
    solution = torch.linalg.lstsq(design.cpu(), target.cpu(), driver="gelsd").solution
    return solution.to(design.device)


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
    module.log_threshold.fill_(initial_log_threshold(module, JUMPRELU_INIT_THRESHOLD))


def make_gradient_function(module, X, target=None, *, alpha=0.0, codes_loss="sample",
                           rescale=False, streamed=False, scale=1.0, auxk=None,
                           reduce_minimum=None):
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
    are dead before the step (analytic encoders and the families).

    A :class:`~sklearn_sparsegap._families.FamilyAutoencoderModule` (BatchTopK,
    Matryoshka, transcoders) trains on its own loss,
    :func:`~sklearn_sparsegap._families.family_gradient_function`; for a transcoder
    ``target`` is the output rows ``Y`` it reconstructs; ``reduce_minimum`` makes a
    BatchTopK threshold's update agree over data-parallel ranks.
    """
    if isinstance(module, FamilyAutoencoderModule):
        return family_gradient_function(module, X, target, alpha=alpha, streamed=streamed,
                                        scale=scale, auxk=auxk,
                                        reduce_minimum=reduce_minimum)  # fmt: skip
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
        # A gated SAE's magnitude path restarts as its gate path, as at initialisation.
        gate_params = tuple(
            param for param in (getattr(module, "magnitude_log_scale", None),
                                getattr(module, "magnitude_bias", None))
            if param is not None
        )  # fmt: skip
        for param in gate_params:
            param[dead_index] = 0.0
        # Reset the optimiser moments of the rows that were reinitialised.
        for param in (module.components, last_weight, last_bias, *gate_params):
            state = self.optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead_index] = 0.0


# ---------------------------------------------------------------------------- training


@dataclass
class AutoencoderData:
    """The validated training problem, on the host.

    ``X`` is a numpy array, or a memmap streamed from disk in minibatches when
    ``streamed``; ``target_codes`` the known codes (``target="codes"``) or None;
    ``X_val`` held-out rows or None; ``dictionary`` a fixed dictionary or None.
    """

    X: object
    target_codes: object = None
    X_val: object = None
    dictionary: object = None
    streamed: bool = False


@dataclass
class AutoencoderSettings:
    """What :func:`fit_autoencoder` needs besides the data, every default resolved: the
    architecture, the objective, the schedule and the run (``checkpoint`` is None or
    ``(path, every, config)``; ``description`` and ``advice`` name the estimator and
    the fix in messages)."""

    n_components: int
    hidden_layer_sizes: tuple
    activation: str
    k: object
    fit_intercept: bool
    target: str
    alpha: float
    codes_loss: str
    rescale: bool
    fit_scale: bool
    small_encoder_start: bool
    auxk_alpha: float
    batch_size: int
    n_epochs: int
    learning_rate: float
    dead_window: int
    tol: float
    resample_dead_every: object
    random_state: object
    device: object
    dtype: object
    description: str
    advice: str
    verbose: bool = False
    checkpoint: object = None
    chunk: bool = False
    # The families (_families): nested Matryoshka widths (the full width last; an int:
    # that many sampled per step), and a
    # transcoder's output dimension (target "transcode") and skip connection.
    matryoshka_prefixes: object = None
    n_outputs: object = None
    skip_connection: bool = False
    # Clip each step's global gradient norm to this (None: no clipping).
    max_grad_norm: object = None


@dataclass
class AutoencoderState:
    """A fitted autoencoder in numpy arrays: where a fit ends and where the next one
    (``warm_start``, ``partial_fit``) continues.

    The weights are on X's scale (folded); ``trained_biases`` are the biases as trained
    on ``input_scale * X`` (None when the scale is 1), from which training continues
    exactly. ``code_moments`` are the running moments of known codes (``partial_fit``).
    """

    components: object
    intercept: object
    coefs: list
    intercepts: list
    threshold: object = None
    trained_biases: object = None
    input_scale: float = 1.0
    history: dict = field(default_factory=dict)
    optimizer_state: object = None
    dead_since: object = None
    n_steps: int = 0
    n_epochs: int = 0
    training_flops: int = 0
    code_moments: object = None
    dead_fraction: float = math.nan
    zero_code_fraction: float = 0.0
    skip: object = None
    # A gated SAE's (magnitude_log_scale, magnitude_bias); its gate bias is intercepts[-1].
    gate: object = None


def make_module(n_features, n_components, *, hidden_layer_sizes=(), activation="relu", k=None,
                fit_intercept=True, device="cpu", dtype=torch.float32, matryoshka_prefixes=None,
                n_outputs=None, skip_connection=False, prefix_seed=0):
    """An untrained :class:`SparseAutoencoderModule` of this architecture (a
    :class:`~sklearn_sparsegap._families.FamilyAutoencoderModule` for BatchTopK,
    Matryoshka prefixes, a transcoder's ``n_outputs`` or a skip connection).
    ``prefix_seed`` seeds the widths of sampled Matryoshka prefixes (an int
    ``matryoshka_prefixes``)."""
    layer_sizes = (n_features, *hidden_layer_sizes, n_components)
    family = {"matryoshka_prefixes": matryoshka_prefixes, "n_outputs": n_outputs,
              "skip_connection": skip_connection}  # fmt: skip
    if uses_family_module(activation, **family):
        module = FamilyAutoencoderModule(layer_sizes, activation=activation, k=k,
                                         fit_intercept=fit_intercept, prefix_seed=prefix_seed,
                                         **family)  # fmt: skip
    else:
        module = SparseAutoencoderModule(layer_sizes, activation=activation, k=k,
                                         fit_intercept=fit_intercept)  # fmt: skip
    return module.to(device=device, dtype=dtype)


@torch.no_grad()
def load_weights(module, state):
    """Copy the weights of ``state`` (an :class:`AutoencoderState`, on X's scale) into
    ``module``, in the module's dtype and on its device."""
    device, dtype = module.components.device, module.components.dtype

    def put(param, value):
        param.copy_(to_tensor(value, device=device, dtype=dtype))

    put(module.components, state.components)
    put(module.intercept, state.intercept)
    for weight, value in zip(module.weights, state.coefs):
        put(weight, value)
    for bias, value in zip(module.biases, state.intercepts):
        put(bias, value)
    if state.threshold is not None:
        put(module.log_threshold, np.log(state.threshold))
    if getattr(state, "skip", None) is not None:
        put(module.skip, state.skip)
    if getattr(state, "gate", None) is not None:
        put(module.magnitude_log_scale, state.gate[0])
        put(module.magnitude_bias, state.gate[1])


@torch.no_grad()
def _load_trained_biases(module, state):
    """Continue on ``input_scale * X`` from the biases as trained (folding the stored
    ones back would round them)."""
    if state.trained_biases is None:
        fold_input_scale(module, state.input_scale)
        return
    device, dtype = module.components.device, module.components.dtype
    for param, value in zip((module.intercept, module.log_threshold, *module.biases,
                             *_gate_biases(module)), state.trained_biases):
        param.copy_(to_tensor(value, device=device, dtype=dtype))


def training_generator(random_state, n_steps=None):
    """The CPU generator of one fit's draws; continuing after ``n_steps`` steps
    (``partial_fit``, ``warm_start``) shifts its seed, so minibatch orders differ."""
    generator = make_generator(random_state)
    if n_steps is not None:
        generator.manual_seed(generator.initial_seed() + n_steps)
    return generator


def streamed_from_host(data, settings):
    """``data``, to be streamed from host memory in minibatches (as rows on disk are)
    when an in-memory ``X`` (with its known codes or outputs) would take more of the
    device than ``device_rows`` allows; unchanged on the CPU and for a full batch."""
    if data.streamed or settings.batch_size >= data.X.shape[0]:
        return data
    width = data.X.shape[1] + (0 if data.target_codes is None else data.target_codes.shape[1])
    itemsize = torch.empty((), dtype=settings.dtype).element_size()
    if not exceeds_device(data.X.shape[0], width * itemsize, settings.device):
        return data
    return replace(data, streamed=True)


def _training_tensors(data, settings):
    """``(source, X, codes, dictionary)``: the rows the loop draws from (None: ``X`` in
    memory), and the tensors of the initialisation, on the device. A streamed ``X``
    gives a bounded sample of rows (``MAX_INIT_ROWS``) for the initialisation and the
    resampling pool."""
    device, dtype = settings.device, settings.dtype
    source = None
    if data.streamed:
        source = DiskBatches(data.X, data.target_codes, dtype=dtype)
        sample = source.sample(MAX_INIT_ROWS, device)
        X, codes = (sample, None) if data.target_codes is None else sample
    else:
        X = to_tensor(data.X, device=device, dtype=dtype)
        codes = (
            None if data.target_codes is None
            else to_tensor(data.target_codes, device=device, dtype=dtype)
        )  # fmt: skip
    dictionary = (
        None if data.dictionary is None
        else to_tensor(data.dictionary, device=device, dtype=dtype)
    )  # fmt: skip
    return source, X, codes, dictionary


def _known_codes_decoder(data, X, codes, dictionary, previous_moments, *, fit_intercept,
                         device):
    """``(decoder, moments)`` on known codes: the least-squares ``(dictionary,
    intercept)`` of X on the codes over every chunk so far (``previous_moments``, the
    running moments), and the updated moments (on the CPU)."""
    if data.streamed:
        moments = previous_moments
        for start, rows in iter_row_blocks(data.X):
            moments = merge_code_moments(
                moments,
                to_tensor(data.target_codes[start : start + len(rows)], device=device),
                to_tensor(rows, device=device),
            )  # fmt: skip
    else:
        moments = merge_code_moments(previous_moments, codes, X)
    decoder = least_squares_decoder(moments, fit_intercept, dictionary)
    moments = {
        key: value.cpu() if torch.is_tensor(value) else value for key, value in moments.items()
    }
    return decoder, moments


def _sampled_input_scale(X, settings):
    """The input scale: 1.0 unless ``fit_scale``; else estimated on at most
    ``MAX_SCALE_ROWS`` evenly spaced rows of ``X`` (a tensor)."""
    if not settings.fit_scale:
        return 1.0
    if X.shape[0] > MAX_SCALE_ROWS:
        X = X[torch.linspace(0, X.shape[0] - 1, MAX_SCALE_ROWS, device=X.device).long()]
    return fit_input_scale(X, centre=settings.fit_intercept)


def _start_module(module, settings, previous, *, X, codes, dictionary, decoder, scale,
                  full_batch, group):
    """Put ``module`` where training starts: initialised (a first fit, broadcast to
    every rank) or the ``previous`` state continued. Returns the history lists."""
    if previous is None:
        if settings.target == "transcode":
            initialize_transcoder(module, X, codes, make_generator(settings.random_state),
                                  scale=scale)  # fmt: skip
        else:
            initialize_autoencoder(
                module, X, make_generator(settings.random_state), dictionary=dictionary,
                decoder=decoder, target_codes=codes, scale=scale,
            )  # fmt: skip
        if not full_batch and settings.small_encoder_start:
            with torch.no_grad():
                module.weights[0].mul_(MINIBATCH_RELU_ENCODER_SCALE)
        if group is not None:
            broadcast_module(group, module)
        return {key: [] for key in HISTORY_KEYS}
    load_weights(module, previous)
    _load_trained_biases(module, previous)
    if decoder is not None:
        set_decoder(module, *decoder)
    return {key: list(values) for key, values in previous.history.items()}


def _training_callbacks(module, optimizer, settings, previous, *, history, X, X_val, scale,
                        step_flops, group):
    """``(callbacks, dead, resume_from)``: the loop's callbacks in order (FLOPs, dead
    latents, the history, held-out figures, resampling, warnings, progress,
    checkpoints), the dead-latent tracker (one definition of dead for the history, the
    resampling and AuxK) and the checkpoint to resume from (or None)."""
    device = settings.device
    dead = DeadLatents(settings.n_components, settings.dead_window, device,
                       reduce=None if group is None else active_reducer(group))  # fmt: skip
    if previous is not None and previous.dead_since is not None:
        dead.since.copy_(torch.as_tensor(previous.dead_since))
    log = LogHistory(history, tol=settings.tol if previous is None else 0.0,
                     description=settings.description, advice=settings.advice, dead=dead)
    start_flops = 0 if previous is None else previous.training_flops
    callbacks = [CountFlops(step_flops, start=start_flops), dead, log]
    if X_val is not None or HELD_OUT_KEYS[0] in history:
        n_logged = len(history["step"])
        for key in HELD_OUT_KEYS:  # earlier logs had no held-out rows
            values = history.setdefault(key, [])
            values.extend([float("nan")] * (n_logged - len(values)))

        def evaluate():
            return held_out_figures(module, X_val, scale=scale, dtype=settings.dtype,
                                    device=device)

        callbacks.append(HeldOutHistory(history, None if X_val is None else evaluate))
    # Resampling moves atoms: a given dictionary (or known codes' decoder) stays as given.
    if settings.resample_dead_every is not None and module.components.requires_grad:
        n_steps = None if previous is None else previous.n_steps
        resampler = DeadLatentResampler(
            module, optimizer, X, training_generator(settings.random_state, n_steps),
            scale=scale,
        )  # fmt: skip
        callbacks.append(ResampleDeadLatents(resampler, settings.resample_dead_every, dead))
        if group is not None:
            callbacks.append(sync_after_resampling(group, module, optimizer,
                                                   settings.resample_dead_every))
    callbacks.append(WarnIfLong(
        settings.description,
        "Set max_iter (epochs) lower, or fit on a subset of X, to shorten it.",
    ))  # fmt: skip
    callbacks.append(ProgressBar(settings.description, disable=not settings.verbose))
    resume_from = None
    if settings.checkpoint is not None:
        path, every, config = settings.checkpoint
        # One writer; every rank checks and restores the checkpoint when resuming.
        checkpoint = Checkpoint(path, every, config=config,
                                write=group is None or group.rank == 0)  # fmt: skip
        callbacks.append(checkpoint)
        resume_from = checkpoint.resume_path
    return callbacks, dead, resume_from


def _gradients_and_source(module, settings, data, *, X, codes, source, scale, dead, group):
    """``(compute_gradients, source)`` for the loop: the objective's gradient function
    (with AuxK on TopK reconstruction) and, under DDP, each rank's shard of the rows with
    gradients averaged over the ranks."""
    auxk = None
    if (settings.activation in ("topk", "batchtopk") and settings.auxk_alpha > 0
            and settings.target != "codes"):
        # Gao et al.'s k_aux: half the input dimension (sparsify's d_in // 2).
        auxk = (dead, max(1, data.X.shape[1] // 2), settings.auxk_alpha)
    compute_gradients = make_gradient_function(
        module, X, codes, alpha=settings.alpha, codes_loss=settings.codes_loss,
        rescale=settings.rescale, streamed=data.streamed or group is not None, scale=scale,
        auxk=auxk, reduce_minimum=None if group is None else minimum_reducer(group),
    )  # fmt: skip
    if group is None:
        return compute_gradients, source
    # Each rank trains on its own shard of the rows; see _distributed.
    source = RankBatches(
        DiskBatches(data.X, data.target_codes, dtype=settings.dtype, shard=group.shard)
        if data.streamed else TensorBatches(X, codes, shard=group.shard),
        group.rank,
    )  # fmt: skip
    trained = [p for p in module.parameters() if p.requires_grad]
    return averaged_gradients(group, compute_gradients, trained), source


@torch.no_grad()
def zero_code_fraction(module, X, scale, max_rows):
    """The fraction of (at most ``max_rows`` evenly spaced) rows of ``X`` whose codes
    are all zero: a fit that reconstructs nothing."""
    if X.shape[0] > max_rows:
        X = X[torch.linspace(0, X.shape[0] - 1, max_rows, device=X.device).long()]
    codes = module.encode(X * scale if scale != 1.0 else X)
    return float((codes == 0).all(dim=1).to(torch.float64).mean())


def fit_autoencoder(data, settings, previous=None, *, group=None, zero_code_rows=8192):
    """Train an amortised encoder (SAE or MLP) and return its fitted state.

    Parameters
    ----------
    data : AutoencoderData
        The validated rows (in memory or streamed from disk), known codes, held-out
        rows and fixed dictionary.
    settings : AutoencoderSettings
        The resolved architecture, objective and schedule.
    previous : AutoencoderState, default=None
        The state to continue from (``warm_start``, ``partial_fit``); None starts
        afresh.
    group : distributed group, default=None
        Train data-parallel over its ranks (``_distributed``).
    zero_code_rows : int, default=8192
        At most this many training rows measure ``zero_code_fraction``.

    Returns
    -------
    state : AutoencoderState
        The model folded onto X's scale, its history, optimiser state and counters.
    """
    device, dtype = settings.device, settings.dtype
    data = streamed_from_host(data, settings)
    source, X, codes, dictionary = _training_tensors(data, settings)
    n_samples, n_features = data.X.shape
    # Sampled Matryoshka widths: seeded like the fit's other draws (shifted when training
    # continues, so a continued fit draws new widths).
    sampled_prefixes = isinstance(settings.matryoshka_prefixes, int)
    prefix_seed = training_generator(
        settings.random_state, None if previous is None else previous.n_steps
    ).initial_seed() if sampled_prefixes else 0  # fmt: skip
    module = make_module(
        n_features, settings.n_components, hidden_layer_sizes=settings.hidden_layer_sizes,
        activation=settings.activation, k=settings.k, fit_intercept=settings.fit_intercept,
        device=device, dtype=dtype, matryoshka_prefixes=settings.matryoshka_prefixes,
        n_outputs=settings.n_outputs, skip_connection=settings.skip_connection,
        prefix_seed=prefix_seed,
    )  # fmt: skip
    decoder = None
    code_moments = None if previous is None else previous.code_moments
    if settings.target == "codes":
        # No decoder is trained on known codes: the least-squares decoder of X on the
        # codes (over every partial_fit chunk so far) serves inverse_transform, the
        # rescaling and the logged mse.
        decoder, code_moments = _known_codes_decoder(
            data, X, codes, dictionary, code_moments if settings.chunk else None,
            fit_intercept=settings.fit_intercept, device=device,
        )  # fmt: skip
    # A transcoder scales X and Y by one factor, fitted on Y (what it reconstructs), so
    # that the model stays homogeneous and the factor folds into the biases.
    scale_rows = codes if settings.target == "transcode" else X
    scale = (
        _sampled_input_scale(scale_rows, settings) if previous is None
        else previous.input_scale
    )  # fmt: skip
    full_batch = settings.batch_size >= n_samples
    history = _start_module(module, settings, previous, X=X, codes=codes,
                            dictionary=dictionary, decoder=decoder, scale=scale,
                            full_batch=full_batch, group=group)  # fmt: skip
    learn_dictionary = data.dictionary is None and settings.target != "codes"
    module.components.requires_grad_(learn_dictionary)
    if settings.target == "codes":
        module.intercept.requires_grad_(False)
    optimizer = make_adam([p for p in module.parameters() if p.requires_grad],
                          settings.learning_rate)
    if previous is not None and previous.optimizer_state is not None:
        optimizer.load_state_dict(state_to_torch(previous.optimizer_state, device))

    def step_flops(rows):
        return encoder_training_flops(
            n_features, settings.n_components, rows,
            hidden_layer_sizes=settings.hidden_layer_sizes, learn_dictionary=learn_dictionary,
        )  # fmt: skip

    callbacks, dead, resume_from = _training_callbacks(
        module, optimizer, settings, previous, history=history, X=X, X_val=data.X_val,
        scale=scale, step_flops=step_flops, group=group,
    )  # fmt: skip
    compute_gradients, source = _gradients_and_source(
        module, settings, data, X=X, codes=codes, source=source, scale=scale, dead=dead,
        group=group,
    )  # fmt: skip
    n_steps = None if previous is None else previous.n_steps
    # A step's forward and backward passes are about six products of similar size;
    # the size of one product decides whether a second thread helps.
    with serial_if_small(device, step_flops(settings.batch_size) // 6):
        loop = train(
            compute_gradients,
            n_samples if source is None else source,
            optimizer=optimizer,
            n_epochs=settings.n_epochs,
            batch_size=settings.batch_size,
            generator=training_generator(settings.random_state, n_steps),
            atoms=module.components if learn_dictionary else None,
            model=module,
            callbacks=callbacks,
            start_step=0 if previous is None else previous.n_steps,
            start_epoch=0 if previous is None else previous.n_epochs,
            resume_from=resume_from,
            max_grad_norm=settings.max_grad_norm,
        )
    zero = 0.0
    if settings.target != "codes" and X.shape[0]:
        zero = zero_code_fraction(module, X, scale, zero_code_rows)
    return _folded_state(module, settings, scale, optimizer=optimizer, dead=dead, loop=loop,
                         history=history, code_moments=code_moments, zero=zero)  # fmt: skip


def _folded_state(module, settings, scale, *, optimizer, dead, loop, history, code_moments,
                  zero):
    """The trained ``module`` folded onto X's scale (in place), with the run's history,
    optimiser state and counters, as the :class:`AutoencoderState` a fit returns."""
    trained_biases = (
        [to_numpy(b) for b in (module.intercept, module.log_threshold, *module.biases,
                               *_gate_biases(module))]
        if scale != 1.0 else None
    )  # fmt: skip
    fold_input_scale(module, 1.0 / scale)
    return AutoencoderState(
        components=to_numpy(module.components),
        intercept=to_numpy(module.intercept),
        coefs=[to_numpy(w) for w in module.weights],
        intercepts=[to_numpy(b) for b in module.biases],
        threshold=(
            to_numpy(module.threshold) if settings.activation in ("jumprelu", "batchtopk")
            else to_numpy(module.gate_threshold) if settings.activation == "gated"
            else None
        ),  # fmt: skip
        trained_biases=trained_biases,
        input_scale=scale,
        history=history_arrays(history),
        optimizer_state=state_to_numpy(optimizer.state_dict()),
        dead_since=dead.since.cpu().numpy(),
        n_steps=loop.step,
        n_epochs=loop.epoch,
        training_flops=loop.flops,
        code_moments=code_moments,
        dead_fraction=dead.fraction(),
        zero_code_fraction=zero,
        skip=None if getattr(module, "skip", None) is None else to_numpy(module.skip),
        gate=(
            (to_numpy(module.magnitude_log_scale), to_numpy(module.magnitude_bias))
            if settings.activation == "gated" else None
        ),  # fmt: skip
    )


def _gate_biases(module):
    """A gated SAE's magnitude bias (scaled with the input, as the other biases), or ()."""
    bias = getattr(module, "magnitude_bias", None)
    return () if bias is None else (bias,)
