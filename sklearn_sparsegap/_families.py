"""SAE families beyond ReLU / TopK / JumpReLU, on tensors: BatchTopK (Bussmann et al.
2024), Matryoshka prefixes (Bussmann et al. 2025; Nabeshima 2024), gated SAEs
(Rajamanoharan et al. 2024) and transcoders (the decoder maps to another space,
optionally with a linear skip).

They share :func:`~sklearn_sparsegap._autoencoder.fit_autoencoder` and the one training
loop with the other SAEs; what differs lives here: the module
(:class:`FamilyAutoencoderModule`, a :class:`SparseAutoencoderModule` with a BatchTopK
activation, nested prefixes, an output space of its own and a skip), the global
threshold's running estimate, the transcoder's start and the loss. Gradients go through
autograd (the ReLU/TopK SAEs keep their hand-written ones); the AuxK term reuses
``_modules._auxk_gradients``.
"""

import math
from numbers import Integral

import numpy as np
import torch
from torch import nn

from ._modules import SparseAutoencoderModule, _auxk_gradients, heaviside_step, jump_relu
from ._training import batch_statistics, renormalize_atoms

__all__ = [
    "BATCHTOPK_THRESHOLD_RATE",
    "FamilyAutoencoderModule",
    "batch_topk",
    "check_matryoshka_prefixes",
    "check_threshold_estimated",
    "family_gradient_function",
    "gated_threshold",
    "initial_log_threshold",
    "initialize_transcoder",
    "nested_reconstruction_loss",
    "sample_matryoshka_prefixes",
    "update_global_threshold",
    "uses_family_module",
]

# The running estimate of a BatchTopK SAE's global threshold moves this fraction of the
# way to each training batch's smallest kept activation (SAELens's topk_threshold_lr;
# dictionary_learning uses 1 - 0.999 after 1,000 steps, which suits runs of 10^5 steps
# rather than the few thousand of a full-batch fit). The first batch sets it.
BATCHTOPK_THRESHOLD_RATE = 0.01
# Sampled Matryoshka widths m in 1..N-1 are drawn with probability proportional to
# (m/N)**p - ((m-1)/N)**p (Nabeshima 2024's truncated power law, p = 1/2): small
# prefixes are drawn most often.
MATRYOSHKA_PREFIX_POWER = 0.5
# The transcoder's start is estimated on at most this many evenly spaced rows.
_MAX_INIT_ROWS = 2**14


def batch_topk(pre, k):
    """BatchTopK: of the ReLU-ed pre-activations of the whole batch keep the
    ``k * n_rows`` largest, zero the rest (the peers' ``BatchTopK``: a row may keep more
    or fewer than ``k`` latents, ``k`` on average)."""
    acts = torch.relu(pre)
    flat = acts.reshape(-1)
    n_kept = min(int(k) * pre.shape[0], flat.numel())
    values, indices = flat.topk(n_kept, sorted=False)
    return torch.zeros_like(flat).scatter(0, indices, values).view_as(acts)


@torch.no_grad()
def update_global_threshold(module, codes, rate=BATCHTOPK_THRESHOLD_RATE, reduce=None):
    """Move the global threshold of ``module`` (stored in every entry of
    ``log_threshold``; NaN before the first update) towards the smallest positive code
    of ``codes`` by ``rate`` (an exponential moving average, as SAELens's
    ``update_topk_threshold``); the first batch sets it. A batch without a positive code
    leaves it as it is. No host synchronisation. Under data parallelism ``reduce`` (see
    ``_distributed.minimum_reducer``) takes the minimum over every rank's batch, so that
    the ranks keep one threshold."""
    minimum = torch.where(codes > 0, codes, math.inf).amin().to(module.log_threshold.dtype)
    if reduce is not None:
        minimum = reduce(minimum)
    current = module.log_threshold[0].exp()
    blended = torch.where(torch.isnan(current), minimum, (1 - rate) * current + rate * minimum)
    new = torch.where(torch.isinf(minimum), current, blended)
    module.log_threshold.copy_(new.log().expand_as(module.log_threshold))


def check_threshold_estimated(threshold, name="SAEEncoder"):
    """Raise the ``ValueError`` of a BatchTopK model whose global threshold is not
    estimated yet (``threshold`` holds NaN)."""
    if threshold is None or bool(torch.isnan(torch.as_tensor(threshold)).any()):
        raise ValueError(
            f"{name} with activation='batchtopk' encodes one row at a time with its global "
            "threshold, which is estimated during training and is not estimated yet (no "
            "training batch had an active latent, or the checkpoint stored none): fit it "
            "(or partial_fit it) on data first."
        )


def check_matryoshka_prefixes(prefixes, n_components):
    """The Matryoshka levels of ``prefixes``, checked against ``n_components``.

    A sequence gives fixed levels: returned as a strictly increasing tuple of ints
    ending at ``n_components`` (appended when missing, as SAELens appends ``d_sae``).
    An int ``n`` (1 to ``n_components``) asks for ``n`` levels sampled anew at every
    training step (:func:`sample_matryoshka_prefixes`) and is returned as it is. None
    stays None. Anything else is a ``ValueError`` naming ``matryoshka_prefixes``."""
    if prefixes is None:
        return None
    if isinstance(prefixes, Integral) and not isinstance(prefixes, bool):
        if not 1 <= prefixes <= n_components:
            raise ValueError(
                f"matryoshka_prefixes={prefixes!r} asks for {prefixes} sampled prefixes per "
                f"step, but the number must be positive and at most n_components="
                f"{n_components}."
            )
        return int(prefixes)
    values = tuple(prefixes) if isinstance(prefixes, (tuple, list)) else ()
    if not values or not all(
        isinstance(v, Integral) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(
            "matryoshka_prefixes must be a non-empty sequence of positive integers (the "
            f"widths of the nested dictionaries) or one integer (how many widths to sample "
            f"per step), got {prefixes!r}."
        )
    values = tuple(int(v) for v in values)
    if values[0] < 1 or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(
            f"matryoshka_prefixes must be positive and strictly increasing, got {prefixes!r}."
        )
    if values[-1] > n_components:
        raise ValueError(
            f"matryoshka_prefixes={prefixes!r} has a prefix of {values[-1]} latents but "
            f"n_components={n_components}; every prefix must be at most n_components."
        )
    if values[-1] < n_components:
        values = (*values, n_components)
    return values


def sample_matryoshka_prefixes(n_components, n_prefixes, generator):
    """``n_prefixes`` nested widths for one training step, the last ``n_components``.

    The other ``n_prefixes - 1`` are distinct widths ``m`` in ``1 .. n_components - 1``
    drawn without replacement from ``generator`` (a CPU generator) with probability
    proportional to ``(m/N)**p - ((m-1)/N)**p``, ``p = MATRYOSHKA_PREFIX_POWER`` (the
    truncated power law of Nabeshima 2024's Matryoshka SAEs). Small widths are the most
    likely, so the first latents are the ones asked most often to reconstruct alone.

    Examples
    --------
    >>> import torch
    >>> from sklearn_sparsegap._families import sample_matryoshka_prefixes
    >>> widths = sample_matryoshka_prefixes(64, 3, torch.Generator().manual_seed(0))
    >>> len(widths), widths[-1], widths[0] < widths[1] < widths[2]
    (3, 64, True)
    """
    if n_prefixes <= 1:
        return (n_components,)
    widths = torch.arange(1, n_components, dtype=torch.float64)
    cumulative = (widths / n_components) ** MATRYOSHKA_PREFIX_POWER
    weights = cumulative - ((widths - 1) / n_components) ** MATRYOSHKA_PREFIX_POWER
    drawn = torch.multinomial(weights, n_prefixes - 1, replacement=False, generator=generator)
    return (*sorted(int(m) + 1 for m in drawn), n_components)


def initial_log_threshold(module, jumprelu_threshold=1e-3):
    """The log-threshold a model starts with: NaN (not estimated) for BatchTopK, else
    ``log(jumprelu_threshold)`` (the JumpReLU start)."""
    return math.nan if module.activation == "batchtopk" else math.log(jumprelu_threshold)


def uses_family_module(activation, *, matryoshka_prefixes=None, n_outputs=None,
                       skip_connection=False):
    """Whether a model of these settings needs :class:`FamilyAutoencoderModule` (and
    its autograd loss) rather than the plain module and its analytic gradients."""
    return (activation in ("batchtopk", "gated") or matryoshka_prefixes is not None
            or n_outputs is not None or skip_connection)  # fmt: skip


def gated_threshold(gate_bias, magnitude_log_scale, magnitude_bias):
    """The per-latent threshold ``b_mag - exp(r_mag) * b_gate`` at which a gated SAE's
    magnitude pre-activation opens its gate (numpy arrays or tensors).

    With ``u`` the encoder's product without bias, the gate ``u + b_gate > 0`` is open
    exactly where ``pi_mag = exp(r_mag) u + b_mag`` exceeds it, so at inference the gated
    SAE is the JumpReLU ``ReLU(pi_mag) * 1[pi_mag > threshold]`` (a gated
    ``SAEEncoder``'s ``threshold_``; it may be negative, where the ReLU then decides)."""
    exp = torch.exp if torch.is_tensor(magnitude_log_scale) else np.exp
    return magnitude_bias - exp(magnitude_log_scale) * gate_bias


class FamilyAutoencoderModule(SparseAutoencoderModule):
    """A :class:`SparseAutoencoderModule` with the families' additions.

    - ``activation="batchtopk"``: :func:`batch_topk` in training (``activate`` while
      the global threshold is unset, NaN) and, once it is set, the JumpReLU
      ``pre * (pre > theta)`` at the global threshold ``theta`` kept in every entry of
      ``log_threshold``: one row's codes do not depend on the others.
    - ``matryoshka_prefixes``: the nested dictionary widths the loss reconstructs
      with (the full width last), or an int: that many widths sampled at every step
      (:meth:`loss_levels`; the count of draws is the buffer ``prefix_draws`` and each
      draw is seeded by ``prefix_seed`` plus that count, so a checkpoint resumes the
      same sequence); encoding and decoding are unchanged.
    - ``n_outputs`` (a transcoder): the decoder (``components``, ``intercept``) maps
      to an ``n_outputs``-dimensional output, and the encoder reads the input as it is
      (no decoder bias subtracted, as SAELens's and sparsify's transcoders).
    - ``skip_connection``: ``forward`` adds ``x @ skip.T`` (a linear map of the input,
      zeros at the start, as SAELens's ``SkipTranscoder``) to the reconstruction.
    - ``activation="gated"`` (Rajamanoharan et al. 2024): the encoder's last layer is
      the shared direction ``W_gate`` with the gate bias ``b_gate`` (``biases[-1]``),
      plus ``magnitude_log_scale`` (``r_mag``) and ``magnitude_bias`` (``b_mag``), all
      zero at the start (so training starts as a ReLU SAE). With ``u`` the last layer's
      product without bias, ``pi_gate = u + b_gate``, ``pi_mag = exp(r_mag) u + b_mag``
      and the codes are ``1[pi_gate > 0] * ReLU(pi_mag)`` (:meth:`gate_paths`).
    """

    def __init__(self, layer_sizes, *, activation="relu", k=None, fit_intercept=True,
                 matryoshka_prefixes=None, n_outputs=None, skip_connection=False,
                 prefix_seed=0):
        super().__init__(layer_sizes, activation=activation, k=k, fit_intercept=fit_intercept)
        n_features, n_components = layer_sizes[0], layer_sizes[-1]
        sampled = isinstance(matryoshka_prefixes, Integral)
        self.matryoshka_samples = int(matryoshka_prefixes) if sampled else None
        self.matryoshka_prefixes = (
            None if matryoshka_prefixes is None or sampled else tuple(matryoshka_prefixes)
        )
        self.prefix_seed = int(prefix_seed)
        if sampled:
            self.register_buffer("prefix_draws", torch.zeros((), dtype=torch.int64))
            # The count on the host too, so a step reads no device memory; a loaded
            # state (a checkpoint) sets the buffer, read once at the next draw.
            self._draws = 0
            self.register_load_state_dict_post_hook(_forget_host_draws)
        self.transcoder = n_outputs is not None
        n_outputs = n_features if n_outputs is None else n_outputs
        if self.transcoder:
            self.components = nn.Parameter(torch.empty(n_components, n_outputs))
            self.intercept = nn.Parameter(torch.zeros(n_outputs), requires_grad=fit_intercept)
        self.register_parameter(
            "skip",
            nn.Parameter(torch.zeros(n_outputs, n_features)) if skip_connection else None,
        )
        gated = activation == "gated"
        self.register_parameter(
            "magnitude_log_scale", nn.Parameter(torch.zeros(n_components)) if gated else None
        )
        self.register_parameter(
            "magnitude_bias",
            nn.Parameter(torch.zeros(n_components), requires_grad=fit_intercept)
            if gated else None,
        )  # fmt: skip

    def gate_paths(self, x):
        """``(pi_gate, pi_mag)`` of a gated SAE: the gate's and the magnitude's
        pre-activations (the input less the decoder bias, unless a transcoder)."""
        hidden = x - self.intercept if self.fit_intercept and not self.transcoder else x
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            product = hidden @ weight.T
            if layer < last:
                hidden = torch.relu(product + bias if self.fit_intercept else product)
        scale = self.magnitude_log_scale.exp()
        if not self.fit_intercept:
            return product, product * scale
        return product + bias, torch.addcmul(self.magnitude_bias, product, scale)

    @property
    def gate_threshold(self):
        """The JumpReLU threshold of a gated SAE's magnitude pre-activation
        (:func:`gated_threshold`)."""
        return gated_threshold(self.biases[-1], self.magnitude_log_scale, self.magnitude_bias)

    def encode(self, x):
        if self.activation != "gated":
            return super().encode(x)
        gate, magnitude = self.gate_paths(x)
        return (gate > 0).to(magnitude.dtype) * torch.relu(magnitude)

    def pre_activation(self, x):
        if self.activation == "gated":
            return self.gate_paths(x)[1]  # the magnitude's
        if not self.transcoder:
            return super().pre_activation(x)
        hidden, last = x, len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            pre = torch.addmm(bias, hidden, weight.T) if self.fit_intercept else hidden @ weight.T
            if layer < last:
                hidden = torch.relu(pre)
        return pre

    def activate(self, pre):
        if self.activation == "gated":
            # From the magnitude pre-activation alone: the JumpReLU it equals (encode
            # decides the gate on pi_gate itself).
            return torch.relu(pre) * (pre > self.gate_threshold).to(pre.dtype)
        if self.activation != "batchtopk":
            return super().activate(pre)
        if bool(torch.isnan(self.log_threshold[0])):
            return batch_topk(pre, self.k)
        return jump_relu(pre, self.threshold)

    def training_activation(self, pre):
        """The codes of a training step: BatchTopK over the batch, else ``activate``."""
        if self.activation == "batchtopk":
            return batch_topk(pre, self.k)
        return self.activate(pre)

    def loss_levels(self):
        """The widths this training step's loss reconstructs with: the fixed
        ``matryoshka_prefixes``, a fresh sample of ``matryoshka_samples`` widths, or the
        full width alone."""
        n_components = self.components.shape[0]
        if self.matryoshka_samples is None:
            return self.matryoshka_prefixes or (n_components,)
        if self._draws is None:
            self._draws = int(self.prefix_draws)
        generator = torch.Generator().manual_seed(self.prefix_seed + self._draws)
        self._draws += 1
        self.prefix_draws.fill_(self._draws)
        return sample_matryoshka_prefixes(n_components, self.matryoshka_samples, generator)

    def skip_output(self, x):
        """The skip connection's part of the output (None without one)."""
        return None if self.skip is None else x @ self.skip.T

    def forward(self, x):
        codes = self.encode(x)
        output = self.decode(codes)
        if self.skip is not None:
            output = output + self.skip_output(x)
        return codes, output


def _forget_host_draws(module, incompatible_keys):
    """After ``load_state_dict``: the draw count is the loaded buffer's (read once)."""
    module._draws = None


def nested_reconstruction_loss(module, codes, output, skip=None):
    """``sum over levels m of mean(0.5 * ||output - decode(codes[:, :m])||^2)`` with the
    levels of ``module.loss_levels()`` (one level, the full width, without prefixes), and
    the residual ``output - reconstruction`` at the full width. ``skip`` (the skip
    connection's output, or None) is added to every level's reconstruction."""
    components = module.components
    levels = module.loss_levels()
    decoded = module.intercept.expand(codes.shape[0], -1) if module.fit_intercept else None
    if skip is not None:
        decoded = skip if decoded is None else decoded + skip
    loss, start = 0.0, 0
    for end in levels:
        part = codes[:, start:end] @ components[start:end]
        decoded = part if decoded is None else decoded + part
        residual = output - decoded
        loss = loss + 0.5 * residual.square().sum(dim=1).mean()
        start = end
    return loss, residual


def family_gradient_function(module, X, target=None, *, alpha=0.0, streamed=False, scale=1.0,
                             auxk=None, reduce_minimum=None):
    """``compute_gradients(indices, with_stats)`` for a :class:`FamilyAutoencoderModule`
    (see :func:`~sklearn_sparsegap._autoencoder.make_gradient_function`, whose arguments
    these are): autograd on

    ``nested_reconstruction_loss + alpha * penalty`` (+ AuxK),

    the penalty being the L1 norm of the codes (the L0 count for JumpReLU; BatchTopK
    and TopK usually train with ``alpha=0``). The reconstructed output is the batch
    itself, or for a transcoder the ``target`` rows (``Y``). A BatchTopK step updates
    the global threshold from its codes (:func:`update_global_threshold`, the minimum
    taken over every rank by ``reduce_minimum`` under data parallelism) before the
    optimiser step. Every batch (and its target rows) is multiplied by ``scale``.
    ``auxk = (dead, k_aux, weight)`` adds the AuxK loss of the dead latents
    (``_modules._auxk_gradients``: their ``k_aux`` largest pre-activations reconstruct
    the full-width residual through their atoms).

    A gated SAE (``activation="gated"``, Rajamanoharan et al. 2024) trains on

    ``mean(0.5 * ||y - y_hat||^2 + alpha * sum ReLU(pi_gate)
    + 0.5 * ||y - (ReLU(pi_gate) @ sg(D) + sg(b))||^2)``,

    ``sg`` stopping the gradient (the gate path reconstructs through the frozen
    decoder, so the auxiliary term trains the gate alone). That is half of
    dictionary_learning's ``GatedSAETrainer`` loss (``L_recon + l1_penalty * L_sparse +
    L_aux``, squared errors summed over features, no 0.5) at ``alpha = l1_penalty / 2``,
    the library's convention that the objective is ``0.5 * ||x - x_hat||^2 + alpha *
    penalty``. SAELens's ``GatedTrainingSAE`` differs in two places: its auxiliary
    reconstruction does not stop the gradient into ``W_dec`` and ``b_dec``, and its
    penalty weights each latent by its decoder row norm (1 here: the atoms are kept at
    unit norm). Neither peer has the 0.5; dictionary_learning also warms the penalty up
    over its first 2,000 steps (``sparsity_warmup_steps``), which this loss does not.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    jumprelu = module.activation == "jumprelu"
    batchtopk = module.activation == "batchtopk"
    gated = module.activation == "gated"

    def batch_of(indices):
        if streamed:
            return indices if target is not None else (indices, None)
        rows = X if indices is None else X[indices]
        if target is None:
            return rows, None
        return rows, target if indices is None else target[indices]

    def compute_gradients(indices, with_stats):
        batch, batch_target = batch_of(indices)
        if scale != 1.0:
            batch = batch * scale
            batch_target = None if batch_target is None else batch_target * scale
        output = batch if batch_target is None else batch_target
        for param in params:
            param.grad = None
        if gated:
            gate, pre = module.gate_paths(batch)
            codes = (gate > 0).to(pre.dtype) * torch.relu(pre)
        else:
            pre = module.pre_activation(batch)
            codes = module.training_activation(pre)
        if batchtopk:
            update_global_threshold(module, codes.detach(), reduce=reduce_minimum)
        skip = module.skip_output(batch)
        loss, residual = nested_reconstruction_loss(module, codes, output, skip)
        if jumprelu:
            penalty = heaviside_step(pre, module.threshold).sum(dim=1).mean()
        elif gated:
            gate = torch.relu(gate)
            penalty = gate.sum(dim=1).mean()
            loss = loss + 0.5 * _gate_path_error(module, gate, output, skip)
        else:
            penalty = codes.abs().sum(dim=1).mean()
        loss = loss + alpha * penalty
        surrogate, aux = loss, None
        if auxk is not None and bool(auxk[0].mask.any()):
            with torch.no_grad():
                aux = _auxk_gradients(pre.detach(), -residual.detach(), module.components,
                                      auxk[0].mask, auxk[1], auxk[2])  # fmt: skip
            # Its gradient w.r.t. the pre-activations, backpropagated with the loss's.
            surrogate = loss + (pre * aux[0].to_dense()).sum()
        surrogate.backward()
        if aux is not None and module.components.requires_grad:
            module.components.grad[aux[1]] += aux[2]
        codes = codes.detach()
        if not with_stats:
            return codes, None
        return codes, batch_statistics(loss, residual, codes)

    return compute_gradients


def _gate_path_error(module, gate, output, skip=None):
    """``mean ||output - (gate @ sg(D) + sg(b) [+ sg(skip)])||^2``: the gated SAE's
    auxiliary loss, the gate path's reconstruction through the frozen decoder."""
    reconstruction = gate @ module.components.detach()
    if module.fit_intercept:
        reconstruction = reconstruction + module.intercept.detach()
    if skip is not None:
        reconstruction = reconstruction + skip.detach()
    return (output - reconstruction).square().sum(dim=1).mean()


def _init_rows(X, n_rows=_MAX_INIT_ROWS):
    if X.shape[0] <= n_rows:
        return X
    return X[torch.linspace(0, X.shape[0] - 1, n_rows, device=X.device).long()]


@torch.no_grad()
def initialize_transcoder(module, X, Y, generator, *, scale=1.0):
    """The starting point of a transcoder, in place (the model of ``scale * X`` to
    ``scale * Y``).

    Random unit encoder directions (drawn in float64 from ``generator``, a CPU
    generator), scaled so that each latent's pre-activation has unit standard deviation
    on the data, with the bias that centres it; the decoder bias is the mean of ``Y``
    and each atom the unit direction of ``E[relu(pre_i) (y - mean(y))]``: what the
    latent's activity predicts in the output (an atom never active starts random). The
    skip connection starts at zero, as SAELens's.
    """
    dtype, device = X.dtype, X.device
    X, Y = _init_rows(X) * scale, _init_rows(Y) * scale
    weight = module.weights[0]
    draw = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
    weight.copy_(draw.to(device=device, dtype=dtype))
    renormalize_atoms(weight)
    for hidden_weight, bias in zip(module.weights[1:], module.biases[1:]):
        bound = hidden_weight.shape[1] ** -0.5
        draw = torch.rand(hidden_weight.shape, generator=generator, dtype=torch.float64)
        hidden_weight.copy_(((2 * draw - 1) * bound).to(device=device, dtype=dtype))
        bias.zero_()
    module.biases[0].zero_()
    if len(module.weights) == 1 and X.shape[0] > 1:
        pre = X @ weight.T
        std = pre.std(dim=0).clamp_min(torch.finfo(dtype).tiny)
        weight.div_(std[:, None])
        if module.fit_intercept:
            module.biases[0].copy_(-(pre.mean(dim=0) / std))
    atoms = torch.randn(module.components.shape, generator=generator, dtype=torch.float64)
    atoms = atoms.to(device=device, dtype=dtype)
    if X.shape[0] > 1:
        centred = Y - Y.mean(dim=0)
        active = torch.relu(module.pre_activation(X))
        predicted = active.T @ centred
        alive = predicted.norm(dim=1) > 0
        atoms[alive] = predicted[alive]
    renormalize_atoms(atoms)
    module.components.copy_(atoms)
    if module.fit_intercept and Y.shape[0]:
        module.intercept.copy_(Y.mean(dim=0))
    if module.skip is not None:
        module.skip.zero_()
    module.log_threshold.fill_(initial_log_threshold(module))
