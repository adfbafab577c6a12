"""Plain ``nn.Module`` building blocks: amortised encoders with a linear decoder.

No scikit-learn here: the estimators in ``_sae.py`` own validation and state, these
modules own the forward computation only.
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SparseAutoencoderModule", "jump_relu", "heaviside_step", "topk_relu"]

# Half-width of the rectangle kernel of the JumpReLU straight-through estimator
# (Rajamanoharan et al. 2024 use 1e-3 on unit-scale activations).
JUMPRELU_BANDWIDTH = 1e-3


def _rectangle(x):
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - theta)``; the gradient reaches ``theta`` through a rectangle kernel."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        pre, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        grad_pre = grad_output * (pre > threshold).to(pre.dtype)
        grad_threshold = (
            -(threshold / bandwidth) * _rectangle((pre - threshold) / bandwidth) * grad_output
        ).sum(dim=0)
        return grad_pre, grad_threshold, None


class _HeavisideStep(torch.autograd.Function):
    """``H(z - theta)``, whose pseudo-derivative w.r.t. ``theta`` feeds the L0 penalty."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        pre, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        grad_threshold = (
            -(1.0 / bandwidth) * _rectangle((pre - threshold) / bandwidth) * grad_output
        ).sum(dim=0)
        return torch.zeros_like(pre), grad_threshold, None


def jump_relu(pre, threshold, bandwidth=JUMPRELU_BANDWIDTH):
    """JumpReLU activation with a straight-through gradient for ``threshold``."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def heaviside_step(pre, threshold, bandwidth=JUMPRELU_BANDWIDTH):
    """Indicator ``pre > threshold`` with a straight-through gradient for ``threshold``."""
    return _HeavisideStep.apply(pre, threshold, bandwidth)


def topk_relu(pre, k):
    """Keep the ``k`` largest pre-activations of each row (ReLU-ed), zero the rest."""
    values, indices = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter_(1, indices, torch.relu(values))


class SparseAutoencoderModule(nn.Module):
    """Encoder (linear or MLP) + sparse activation + linear decoder (its atoms are kept
    at unit norm by the training loop when the decoder is learned).

    ``encode(x) = act(W_L relu(... relu(W_1 (x - b_dec) + b_1) ...) + b_L)`` and
    ``decode(s) = s @ components + intercept``; with ``fit_intercept=False`` there are no
    biases at all (the paper's setting).

    Parameters
    ----------
    layer_sizes : sequence of int
        ``(n_features, *hidden_layer_sizes, n_components)``.
    activation : {"relu", "topk", "jumprelu"}
        Output activation.
    k : int or None
        Number of active latents for ``"topk"``.
    fit_intercept : bool
        Whether the encoder layers and the decoder have biases.
    """

    def __init__(self, layer_sizes, *, activation="relu", k=None, fit_intercept=True):
        super().__init__()
        self.activation = activation
        self.k = k
        self.fit_intercept = fit_intercept
        n_features, n_components = layer_sizes[0], layer_sizes[-1]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n_out, n_in))
            for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n_out), requires_grad=fit_intercept)
            for n_out in layer_sizes[1:]
        )
        self.components = nn.Parameter(torch.empty(n_components, n_features))
        self.intercept = nn.Parameter(torch.zeros(n_features), requires_grad=fit_intercept)
        self.log_threshold = nn.Parameter(
            torch.zeros(n_components), requires_grad=activation == "jumprelu"
        )

    @property
    def threshold(self):
        return self.log_threshold.exp()

    def pre_activation(self, x):
        return _encoder_pre_activation(self, x)[1]

    def activate(self, pre):
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "topk":
            return topk_relu(pre, self.k)
        return jump_relu(pre, self.threshold)

    def encode(self, x):
        return self.activate(self.pre_activation(x))

    def decode(self, codes):
        if self.fit_intercept:
            return torch.addmm(self.intercept, codes, self.components)
        return codes @ self.components

    def forward(self, x):
        codes = self.encode(x)
        return codes, self.decode(codes)


def _relu_backward(grad, output):
    """``grad`` where ``output > 0``, else 0."""
    return torch.ops.aten.threshold_backward(grad, output, 0)


def _encoder_pre_activation(module, x):
    """The encoder's layer inputs (``x - b`` first, then each hidden ReLU output) and
    the last layer's pre-activation."""
    inputs = [x - module.intercept if module.fit_intercept else x]
    last = len(module.weights) - 1
    for layer, (weight, bias) in enumerate(zip(module.weights, module.biases)):
        h = inputs[-1]
        pre = torch.addmm(bias, h, weight.T) if module.fit_intercept else h @ weight.T
        if layer < last:
            inputs.append(torch.relu(pre))
    return inputs, pre


def _encoder_forward(module, x):
    """``_encoder_pre_activation`` and the (dense) codes."""
    inputs, pre = _encoder_pre_activation(module, x)
    return inputs, pre, module.activate(pre)


def _csr(crow_indices, col_indices, values, size):
    # Built from indices that are valid by construction: no invariant check, and
    # torch's "beta" notice on every new process is not for our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow_indices, col_indices, values, size=size, check_invariants=False
        )


class _RowSparse:
    """An ``(n_rows, n_columns)`` matrix with ``m`` entries per row: ``values[i, j]``
    in column ``indices[i, j]`` (repeated columns add up), and the products a TopK
    step needs, each costing ``O(n_rows * m)`` rows of the dense operand instead of
    ``O(n_rows * n_columns)``.

    ``matmul`` is an ``embedding_bag`` sum; ``transpose_matmul`` a CSR product with
    the transpose, whose pattern (a stable sort of the column indices) is computed
    once and shared by ``with_values``; ``sampled`` a ``sampled_addmm`` at the
    entries (the indices must then be sorted within each row and distinct).
    """

    def __init__(self, values, indices, n_columns, transpose_pattern=None):
        self.values, self.indices, self.n_columns = values, indices, n_columns
        self._transpose_pattern = transpose_pattern

    def with_values(self, values):
        """The same sparsity pattern with other ``values``."""
        return _RowSparse(values, self.indices, self.n_columns, self._transpose_pattern)

    def matmul(self, dense):
        """``self @ dense``."""
        return F.embedding_bag(self.indices, dense, per_sample_weights=self.values, mode="sum")

    def transpose_matmul(self, dense):
        """``self.T @ dense``."""
        n_rows, per_row = self.indices.shape
        if self._transpose_pattern is None:
            flat = self.indices.reshape(-1)
            order = torch.argsort(flat, stable=True)
            crow = torch.zeros(self.n_columns + 1, dtype=torch.int64, device=flat.device)
            torch.cumsum(_column_counts(flat, self.n_columns), 0, out=crow[1:])
            self._transpose_pattern = order, crow, torch.div(order, per_row, rounding_mode="floor")
        order, crow, rows = self._transpose_pattern
        values = self.values.reshape(-1)[order]
        return _csr(crow, rows, values, (self.n_columns, n_rows)) @ dense

    def column_sums(self):
        """``self.sum(dim=0)``."""
        sums = self.values.new_zeros(self.n_columns)
        return sums.index_add_(0, self.indices.reshape(-1), self.values.reshape(-1))

    def sampled(self, left, right):
        """``(left @ right)`` at the entries, shaped like ``values``."""
        n_rows, per_row = self.indices.shape
        crow = torch.arange(
            0, n_rows * per_row + 1, per_row, dtype=torch.int64, device=left.device
        )
        pattern = _csr(
            crow, self.indices.reshape(-1), self.values.new_zeros(n_rows * per_row),
            (n_rows, self.n_columns),
        )
        return torch.sparse.sampled_addmm(pattern, left, right, beta=0.0).values().view(
            n_rows, per_row
        )

    def to_dense(self):
        dense = self.values.new_zeros(self.indices.shape[0], self.n_columns)
        return dense.scatter_add_(1, self.indices, self.values)


def _column_counts(flat, n_columns, sync_free=None):
    """How many times each of ``range(n_columns)`` occurs in the int64 ``flat``.

    ``bincount`` on the CPU; on CUDA (``sync_free``, default: when ``flat`` is there) a
    ``scatter_add`` of ones, as CUDA's ``bincount`` reads its input's min and max back
    to the host (two synchronisations per sparse TopK step).
    """
    if sync_free is None:
        sync_free = flat.device.type == "cuda"
    if not sync_free:
        return torch.bincount(flat, minlength=n_columns)
    counts = torch.zeros(n_columns, dtype=torch.int64, device=flat.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat))


def sparse_topk(pre, k):
    """The ``k`` largest pre-activations of each row (ReLU-ed) as a ``_RowSparse``, the
    latent indices sorted within each row; ``topk_relu`` in sparse form."""
    values, indices = pre.topk(k, dim=1, sorted=False)
    indices, order = indices.sort(dim=1)
    return _RowSparse(torch.relu(values.gather(1, order)), indices, pre.shape[1])


# The largest fraction of active latents (k / n_components) at which ``sae_gradients``
# takes the sparse TopK step, per device type. The CPU figure is measured:
# ``benchmarks/speed/bench_topk_step.py`` at 1,024 rows of 576 features and 2,304 latents
# on two threads finds the sparse step 2.4 times faster at k = 32, 1.6 at k = N/16 and
# slower from k = N/8 on. The CUDA figure is the CPU's until measured on a GPU:
# ``benchmarks/gpu/check.py`` times both steps there (``topk_step``); set the entry from it.
SPARSE_TOPK_MAX_DENSITY = {"cpu": 1 / 16, "cuda": 1 / 16}


def uses_sparse_topk_step(module):
    """Whether ``sae_gradients`` takes a TopK module's sparse step: when at most
    ``SPARSE_TOPK_MAX_DENSITY`` of the latents (for the module's device type) are
    active."""
    density = SPARSE_TOPK_MAX_DENSITY.get(module.components.device.type, 1 / 16)
    return module.activation == "topk" and module.k <= density * module.components.shape[0]


def _column_sums(grad):
    """``grad.sum(dim=0)`` of a tensor or a ``_RowSparse``."""
    return grad.column_sums() if isinstance(grad, _RowSparse) else grad.sum(dim=0)


def _encoder_backward(module, inputs, grad):
    """Backpropagate ``grad`` (d loss / d last pre-activation, a tensor or a
    ``_RowSparse``) through the encoder, filling ``.grad`` of its weights and biases;
    returns d loss / d first pre-activation (from which the decoder bias, subtracted
    at the input, gets its share)."""
    last = len(module.weights) - 1
    for layer in range(last, -1, -1):
        weight, bias = module.weights[layer], module.biases[layer]
        sparse = isinstance(grad, _RowSparse)
        if weight.requires_grad:
            weight.grad = (
                grad.transpose_matmul(inputs[layer]) if sparse else grad.T @ inputs[layer]
            )
        if bias.requires_grad:
            bias.grad = _column_sums(grad)
        if layer > 0:
            grad = _relu_backward(
                grad.matmul(weight) if sparse else grad @ weight, inputs[layer]
            )
    return grad


def _auxk_gradients(pre, residual, components, dead, k_aux, weight):
    """The AuxK term (Gao et al. 2024): the ``k_aux`` largest (ReLU-ed) pre-activations
    of the ``dead`` latents reconstruct the main residual ``e = x - x_hat`` (held
    fixed) through their atoms, without the bias, and the loss
    ``weight * min(n_dead / k_aux, 1) * mean(0.5 * ||e_hat - e||^2)`` is added (the
    scale as sparsify's: fewer dead latents than ``k_aux`` weigh less).

    ``dead`` is the boolean mask of the dead latents or their indices. Only the dead
    latents' columns are touched, so the cost scales with their number.
    Returns, already scaled, the gradient w.r.t. the chosen pre-activations as a
    ``_RowSparse`` (``k_aux`` latents per row), and the indices of the dead latents
    with the gradient w.r.t. their atoms; ``residual`` is ``x_hat - x``.
    """
    # The dead latents' indices (a mask is turned into them: one host synchronisation).
    index = dead.nonzero().squeeze(1) if dead.dtype == torch.bool else dead
    n_dead = index.numel()
    k = min(k_aux, n_dead)
    scale = weight * min(n_dead / k_aux, 1.0) / pre.shape[0]
    values, chosen = pre[:, index].topk(k, dim=1, sorted=False)
    values = torch.relu(values)
    aux_codes = torch.zeros(pre.shape[0], n_dead, dtype=pre.dtype, device=pre.device)
    aux_codes.scatter_(1, chosen, values)
    dead_atoms = components[index]
    # e_hat - e = aux_codes @ D_dead + (x_hat - x).
    aux_residual = torch.addmm(residual, aux_codes, dead_atoms)
    grad_pre = _relu_backward((aux_residual @ dead_atoms.T).gather(1, chosen), values)
    grad_atoms = (aux_codes.T @ aux_residual).mul_(scale)
    return _RowSparse(grad_pre.mul_(scale), index[chosen], pre.shape[1]), index, grad_atoms


@torch.no_grad()
def sae_gradients(module, x, alpha, with_stats=False, auxk=None, sparse=None):
    """Analytic gradients of the library objective for a ReLU or TopK (MLP) SAE.

    Fills ``.grad`` of every parameter of ``module`` that requires one, for the loss
    ``mean(0.5 * ||x - decode(encode(x))||^2 + alpha * ||codes||_1)`` (plus the AuxK
    term of ``_auxk_gradients`` when ``auxk = (dead, k_aux, weight)`` is given and
    some latent of the mask ``dead`` is dead), by writing out
    backpropagation through the ReLU layers: a handful of matrix products per layer
    instead of an autograd graph (faster at small problem sizes, where per-operation
    overhead dominates). ``tests/test_modules.py`` checks it against autograd.

    A TopK step is sparse when ``sparse`` (``None``: when ``uses_sparse_topk_step``):
    after the encoder's dense product, the decoder, ``residual @ D^T`` and the
    gradients of the decoder and of the encoder's last layer only touch the ``k``
    active latents of each row, which at SAE widths (k = 32 of 2,304) makes a step
    2-3 times faster. The FLOPs a fit reports (``flops.encoder_training_flops``) keep
    the paper's dense count, so they do not depend on which step ran.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
    stats : Tensor of shape (4,) or None
        ``(loss, mse, l1, l0)`` when ``with_stats``.
    """
    components, intercept = module.components, module.intercept
    n_samples = x.shape[0]
    if sparse is None:
        sparse = uses_sparse_topk_step(module)
    inputs, pre = _encoder_pre_activation(module, x)
    if sparse:
        active, residual, grad = _sparse_output_gradient(module, pre, x, alpha)
        codes, code_values = active.to_dense(), active.values
    else:
        codes, residual, grad = _dense_output_gradient(module, pre, x, alpha)
        code_values = codes
    aux = None
    if auxk is not None:
        # The dead latents' indices: one host synchronisation (``nonzero``), not two
        # (an ``any()`` first); none dead, no AuxK term.
        dead_index = auxk[0].nonzero().squeeze(1)
        if dead_index.numel():
            aux = _auxk_gradients(pre, residual, components, dead_index, *auxk[1:])
            grad = _add_auxk_gradient(grad, aux[0])
    first_grad = _encoder_backward(module, inputs, grad)
    if intercept.requires_grad:
        # The decoder bias is also subtracted at the input.
        intercept.grad = residual.mean(dim=0) - _column_sums(first_grad) @ module.weights[0]
    if components.requires_grad:
        components.grad = active.transpose_matmul(residual) if sparse else codes.T @ residual
        components.grad.div_(n_samples)
        if aux is not None:
            components.grad[aux[1]] += aux[2]
    stats = _sae_statistics(residual, code_values, alpha, x.shape[1]) if with_stats else None
    return codes, stats


def _dense_output_gradient(module, pre, x, alpha):
    """The codes, the residual ``x_hat - x`` and the gradient of the mean loss w.r.t. the
    last pre-activations, for the dense step of :func:`sae_gradients`."""
    codes = module.activate(pre)
    components, intercept = module.components, module.intercept
    residual = torch.addmm(intercept, codes, components) if module.fit_intercept else (
        codes @ components
    )
    residual.sub_(x)
    # d loss / d pre-activation of the last layer: (residual @ D^T + alpha) where the
    # code is active. threshold_backward is ReLU's own backward kernel: one operation,
    # no boolean mask converted to the float dtype.
    grad = residual @ components.T
    grad.add_(alpha).div_(x.shape[0])
    return codes, residual, _relu_backward(grad, codes)


def _sparse_output_gradient(module, pre, x, alpha):
    """As :func:`_dense_output_gradient` for a sparse TopK step: the active latents (a
    ``_RowSparse``), the residual and the gradient at the active latents only."""
    components = module.components
    active = sparse_topk(pre, module.k)
    residual = active.matmul(components)
    if module.fit_intercept:
        residual.add_(module.intercept)
    residual.sub_(x)
    grad = active.sampled(residual, components.T)
    grad = active.with_values(_relu_backward(grad.add_(alpha).div_(x.shape[0]), active.values))
    return active, residual, grad


def _add_auxk_gradient(grad, aux_grad):
    """The pre-activation gradient ``grad`` (dense, or a ``_RowSparse``) plus the AuxK
    term's ``aux_grad`` (a ``_RowSparse``); a dense ``grad`` is updated in place."""
    if isinstance(grad, _RowSparse):
        return _RowSparse(
            torch.cat([grad.values, aux_grad.values], dim=1),
            torch.cat([grad.indices, aux_grad.indices], dim=1),
            grad.n_columns,
        )
    return grad.scatter_add_(1, aux_grad.indices, aux_grad.values)


def _sae_statistics(residual, code_values, alpha, n_features):
    """``(loss, mse, l1, l0)`` of a step from its residual and its (non-negative) code
    values, as :func:`~sklearn_sparsegap._training.batch_statistics` logs them."""
    n_samples = residual.shape[0]
    squared = residual.square().sum() / n_samples
    l1 = code_values.sum() / n_samples
    return torch.stack(
        [
            0.5 * squared + alpha * l1,
            squared / n_features,
            l1,
            # An int32 count: summing the boolean mask into int64 costs twice as much
            # (a quarter of the non-matmul time of a step at M=768, N=4096).
            (code_values != 0).sum(dtype=torch.int32).to(residual.dtype) / n_samples,
        ]
    )


@torch.no_grad()
def cosine_gradients(module, x, target, over="sample", eps=1e-8):
    """Analytic gradients of the known-codes loss ``1 - mean cos(codes, target)`` for a
    ReLU or TopK (MLP) encoder; ``over`` is ``"sample"`` (cosine of each row) or
    ``"latent"`` (of each column), as in ``_training.cosine_loss``, whose autograd
    gradients ``tests/test_modules.py`` checks these against.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components)
    loss : Tensor of shape ()
    """
    dim = 1 if over == "sample" else 0
    inputs, _, codes = _encoder_forward(module, x)
    norm = torch.linalg.vector_norm(codes, dim=dim, keepdim=True)
    clamped = norm.clamp_min(eps)
    target_norm = torch.linalg.vector_norm(target, dim=dim, keepdim=True).clamp_min(eps)
    cos = (codes * target).sum(dim=dim, keepdim=True) / (clamped * target_norm)
    # d cos / d codes = target / (|c| |t|) - cos * codes / |c|^2 (the second term only
    # where |c| > eps, where the norm is not clamped).
    grad = torch.where(norm > eps, cos / clamped.square(), 0.0) * codes
    grad.sub_(target / (clamped * target_norm)).div_(cos.numel())
    _encoder_backward(module, inputs, _relu_backward(grad, codes))
    return codes, 1.0 - cos.mean()
