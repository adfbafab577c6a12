"""Analytic FLOP counts, after the paper's Appendix I.

Conventions (the paper's): a multiply-add counts as 2 FLOPs, so an ``(n, a) @ (a, b)``
product costs ``2 * n * a * b``; an element-wise operation on ``d`` values costs ``d``;
``M`` is ``n_features``, ``N`` is ``n_components``, ``H`` a hidden width.

Where the paper and the authors' code disagree (``reference/protocol.md`` §9) this module
gives the corrected count and each docstring says what differs.
"""

from numbers import Integral

__all__ = [
    "encoder_inference_flops",
    "encoder_training_flops",
    "ito_adam_flops",
    "sparse_coding_inference_flops",
    "sparse_coding_training_flops",
]


def _layer_sizes(n_features, n_components, hidden_layer_sizes):
    return [int(n_features), *(int(h) for h in hidden_layer_sizes), int(n_components)]


def _check_count(value, name, minimum=0):
    if not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _encoder_forward_flops(layer_sizes):
    # Each layer: matmul (2 * d_in * d_out) + bias/activation (d_out).
    return sum(2 * a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))


def encoder_inference_flops(n_features, n_components, n_samples, *, hidden_layer_sizes=()):
    """FLOPs of one amortised forward pass (encode then decode) over ``n_samples``.

    Appendix I.2 (SAE): ``(4*M*N + N) * n_samples``: the encoder matmul ``2MN``, its
    activation ``N`` and the decoder matmul ``2NM``. For an MLP encoder each layer adds
    ``2 * d_in * d_out + d_out`` (Appendix I.3).

    Parameters
    ----------
    n_features : int
        M.
    n_components : int
        N.
    n_samples : int
        Number of samples encoded.
    hidden_layer_sizes : tuple of int, default=()
        Hidden widths of an MLP encoder; empty for the SAE.

    Returns
    -------
    flops : int
        The FLOP count.

    Examples
    --------
    >>> from sklearn_sparsegap.flops import encoder_inference_flops
    >>> encoder_inference_flops(8, 16, 1)
    528
    """
    _check_count(n_samples, "n_samples")
    sizes = _layer_sizes(n_features, n_components, hidden_layer_sizes)
    per_sample = _encoder_forward_flops(sizes) + 2 * sizes[-1] * sizes[0]
    return per_sample * n_samples


def encoder_training_flops(
    n_features,
    n_components,
    n_samples,
    n_steps=1,
    *,
    hidden_layer_sizes=(),
    learn_dictionary=True,
):
    """FLOPs of ``n_steps`` gradient steps on batches of ``n_samples`` (Appendix I.2-I.3).

    Per sample and step, forward = encoder layers ``sum(2 d_in d_out + d_out)`` + decoder
    ``2NM`` (+ ``MN`` to renormalise a learned decoder); backward = for each layer the
    activation gradient ``d_out`` and the weight/bias gradient ``2 d_in d_out + d_out``,
    the decoder gradient ``2NM`` (+ ``2NM`` more for a learned decoder), and the update
    ``2 * (number of encoder parameters)``. For the SAE at N=16, M=8 this is 1360 per
    sample-step with a fixed dictionary and 1744 with a learned one, as in the paper.

    Parameters
    ----------
    n_features : int
        M.
    n_components : int
        N.
    n_samples : int
        Batch size of each step.
    n_steps : int, default=1
        Number of steps.
    hidden_layer_sizes : tuple of int, default=()
        Hidden widths of an MLP encoder; empty for the SAE.
    learn_dictionary : bool, default=True
        Whether the decoder is trained (unknown-dictionary scenario).

    Returns
    -------
    flops : int
        The FLOP count.

    Examples
    --------
    >>> from sklearn_sparsegap.flops import encoder_training_flops
    >>> encoder_training_flops(8, 16, 1, learn_dictionary=False)
    1360
    >>> encoder_training_flops(8, 16, 1, learn_dictionary=True)
    1744
    """
    _check_count(n_samples, "n_samples")
    _check_count(n_steps, "n_steps")
    sizes = _layer_sizes(n_features, n_components, hidden_layer_sizes)
    M, N = sizes[0], sizes[-1]
    pairs = list(zip(sizes[:-1], sizes[1:]))
    n_encoder_params = sum(a * b + b for a, b in pairs)
    forward = _encoder_forward_flops(sizes) + 2 * N * M
    backward = sum(b + 2 * a * b + b for a, b in pairs) + 2 * N * M + 2 * n_encoder_params
    if learn_dictionary:
        forward += M * N
        backward += 2 * N * M
    return (forward + backward) * n_samples * n_steps


def ito_adam_flops(n_features, n_components, n_samples, n_iter):
    """FLOPs of the paper's Adam inference-time optimisation (Appendix I.4).

    ``n_samples * (M*N + N + n_iter * (4*M*N + 2*M + 11*N))``: a one-off setup and, per
    iteration, the reconstruction and its gradient (``4MN + 2M``) plus the exp
    parametrisation and the Adam update (``11N``).

    Parameters
    ----------
    n_features : int
        M.
    n_components : int
        N.
    n_samples : int
        Number of samples whose codes are optimised.
    n_iter : int
        Number of Adam iterations.

    Returns
    -------
    flops : int
        The FLOP count.

    Examples
    --------
    >>> from sklearn_sparsegap.flops import ito_adam_flops
    >>> ito_adam_flops(8, 16, 1, 1)
    848
    """
    _check_count(n_samples, "n_samples")
    _check_count(n_iter, "n_iter")
    M, N = int(n_features), int(n_components)
    return n_samples * (M * N + N + n_iter * (4 * M * N + 2 * M + 11 * N))


def sparse_coding_inference_flops(n_features, n_components, n_samples, n_iter):
    """FLOPs of ``n_iter`` Adam iterations of the paper's sparse-coding inference.

    Identical to :func:`ito_adam_flops`: the paper's sparse coding infers test codes with
    the same exp-parametrised Adam procedure as its ITO. Appendix I prints
    ``3MN + N * n_s`` for this, dropping the sample factor on the matrix products; the
    count here keeps it, as every other formula does.

    Parameters
    ----------
    n_features : int
        M.
    n_components : int
        N.
    n_samples : int
        Number of samples.
    n_iter : int
        Number of iterations.

    Returns
    -------
    flops : int
        The FLOP count.

    Examples
    --------
    >>> from sklearn_sparsegap.flops import sparse_coding_inference_flops
    >>> sparse_coding_inference_flops(8, 16, 1024, 10_000)
    7209107456
    """
    return ito_adam_flops(n_features, n_components, n_samples, n_iter)


def sparse_coding_training_flops(
    n_features, n_components, n_samples, n_steps=1, *, learn_dictionary=True
):
    """FLOPs of ``n_steps`` joint Adam steps on codes and dictionary over ``n_samples``.

    Per step: the code update costs, per sample, what one ITO iteration costs
    (``4MN + 2M + 11N``); a learned dictionary adds its gradient ``2NM`` per sample and,
    once per step, its Adam update and renormalisation (``4MN``). The authors' code
    multiplies a per-step total that already contains the batch by the batch size again
    (so its loss and update terms grow with the square of the batch), and Appendix I omits
    the sample factor; both are corrected here.

    Parameters
    ----------
    n_features : int
        M.
    n_components : int
        N.
    n_samples : int
        Number of training samples (full batch).
    n_steps : int, default=1
        Number of steps.
    learn_dictionary : bool, default=True
        Whether the dictionary is trained alongside the codes.

    Returns
    -------
    flops : int
        The FLOP count.

    Examples
    --------
    >>> from sklearn_sparsegap.flops import sparse_coding_training_flops
    >>> sparse_coding_training_flops(8, 16, 1, learn_dictionary=False)
    704
    """
    _check_count(n_samples, "n_samples")
    _check_count(n_steps, "n_steps")
    M, N = int(n_features), int(n_components)
    per_sample = 4 * M * N + 2 * M + 11 * N
    per_step = 0
    if learn_dictionary:
        per_sample += 2 * N * M
        per_step = 4 * M * N
    return (per_sample * n_samples + per_step) * n_steps
