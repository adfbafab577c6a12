"""Analytic FLOP counts, after the paper's Appendix I.

Conventions (the paper's): a multiply-add counts as 2 FLOPs, so an ``(n, a) @ (a, b)``
product costs ``2 * n * a * b``; an element-wise operation on ``d`` values costs ``d``;
``M`` is ``n_features``, ``N`` is ``n_components``, ``H`` a hidden width.

Where the paper's Appendix I and the authors' code disagree this module gives the
corrected count and each docstring says what differs.
"""

from numbers import Integral

from ._solvers import ALGORITHMS, MAX_GRAM_COMPONENTS, gram_form
from ._solvers._common import greedy_gram_form

__all__ = [
    "encoder_inference_flops",
    "encoder_training_flops",
    "ito_adam_flops",
    "lars_dictionary_learning_flops",
    "sparse_coding_inference_flops",
    "sparse_coding_training_flops",
    "sparse_encode_flops",
]


def _layer_sizes(n_features, n_components, hidden_layer_sizes):
    return [int(n_features), *(int(h) for h in hidden_layer_sizes), int(n_components)]


def _check_count(value, name, minimum=0):
    if not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _encoder_forward_flops(layer_sizes):
    # Each layer: matmul (2 * d_in * d_out) + bias/activation (d_out).
    return sum(2 * a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))


def encoder_inference_flops(
    n_features, n_components, n_samples, *, hidden_layer_sizes=(), rescale=False
):
    """FLOPs of one amortised forward pass (encode then decode) over ``n_samples``.

    Appendix I.2 (SAE): ``(4*M*N + N) * n_samples``: the encoder matmul ``2MN``, its
    activation ``N`` and the decoder matmul ``2NM``. For an MLP encoder each layer adds
    ``2 * d_in * d_out + d_out`` (Appendix I.3). ``rescale`` adds the per-sample
    least-squares scale of known-codes encoders (``rescale_codes``): two length-``M`` dot
    products on the decoded sample and ``N`` multiplications, ``4M + N``.

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
    rescale : bool, default=False
        Whether the codes are rescaled per sample.

    Returns
    -------
    flops : int
        The FLOP count.

    Examples
    --------
    >>> from sklearn_sparsegap.flops import encoder_inference_flops
    >>> encoder_inference_flops(8, 16, 1)
    528
    >>> encoder_inference_flops(8, 16, 1, rescale=True)
    576
    """
    _check_count(n_samples, "n_samples")
    sizes = _layer_sizes(n_features, n_components, hidden_layer_sizes)
    per_sample = _encoder_forward_flops(sizes) + 2 * sizes[-1] * sizes[0]
    if rescale:
        per_sample += 4 * sizes[0] + sizes[-1]
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


# ---------------------------------------------------------------------- sparse_encode
# The solvers take their code path from ``gram_form`` and ``MAX_GRAM_COMPONENTS``, so the
# counts below follow the computation actually run.


def _eigvalsh_flops(size):
    # Householder reduction to tridiagonal form dominates the eigenvalues-only solver.
    return 4 * size**3 // 3


def sparse_encode_flops(
    algorithm, n_features, n_components, n_samples, *, n_iter=None, n_nonzero_coefs=None,
    residual_tol=None,
):  # fmt: skip
    """Count the FLOPs of :func:`sklearn_sparsegap.sparse_encode` (Appendix I conventions).

    A multiply-add counts 2 FLOPs (``(n, a) @ (a, b)`` costs ``2nab``) and an element-wise
    operation on ``d`` values costs ``d``. ``M`` is ``n_features``, ``N`` ``n_components``,
    ``n`` ``n_samples``, ``T`` ``n_iter`` and ``K`` ``n_nonzero_coefs``. Convergence tests
    (run every few iterations) and the sign fix-ups of ``positive=True`` are not counted;
    the count describes one block of rows (set-up costs are paid once).

    ``"ista"`` / ``"fista"``
        When ``N <= 2M`` each iteration is one product with the Gram matrix:
        set-up ``2N^2M`` (Gram ``G = D D^T``) + ``4N^3/3`` (its largest eigenvalue, the
        Lipschitz constant) + ``2nNM`` (``X D^T``); per sample and iteration
        ``2N^2 + N + 2N`` (product, bias, soft-threshold shift and clamp).
        Otherwise each iteration multiplies by ``D`` and ``D^T``: set-up ``2M^2N + 4M^3/3``
        (Lipschitz constant from ``D^T D``); per sample and iteration
        ``4NM + M + N + 2N`` (two products, residual, gradient step, soft-threshold).
        FISTA adds ``6N`` per sample and iteration: the code difference ``N``, the
        restart test ``(y - s_new) . (s_new - s)`` ``3N`` and the momentum step ``2N``.
    ``"omp"``
        Set-up ``3NM`` (atom norms and normalisation). Two forms, chosen as the solver
        chooses them (``greedy_gram_form``: when ``N <= 4096`` and the Gram matrix saves
        FLOPs on the ``n`` samples, ``n (2NMK - 2NM - NK^2) > 2N^2M``):

        - Gram form (Batch-OMP): ``2N^2M`` (``G = D D^T``) + ``2nNM`` (``D x``); iteration
          ``k = 1..T`` costs, per sample, ``2N`` (absolute value, argmax) + ``4(k-1)^2``
          (overlaps with the basis and the new basis row, two ``(k-1, k-1)``
          products) + ``8k`` (other vector updates, rounded up) and, except after the
          K-th, ``2kN`` (correlations recomputed from ``k`` Gram rows). In float64 on
          the CPU the correlations are computed in float32 and checked in float64
          (counted once).
        - Residual form: iteration ``k`` costs, per sample, ``2NM`` (correlations with
          the residual) + ``2N`` (absolute value, argmax) + ``4(k-1)M`` (Gram-Schmidt
          against the ``k-1`` selected atoms) + ``6M`` (subtraction, norm and scaling of
          the new direction, residual update).

        The least-squares coefficients on the ``T`` selected atoms are one back
        substitution with the Gram-Schmidt triangle, ``T^2`` per sample.
    ``"mp"``
        With ``N <= 4096``: set-up ``3NM + 2N^2M`` (normalised atoms and their Gram
        matrix) + ``2nNM`` (initial correlations); per sample and iteration ``4N``
        (selection ``2N``, correlation update from a Gram row ``2N``). With larger ``N``
        the correlations are recomputed: set-up ``3NM + 2nNM``, per sample and iteration
        ``2NM + 2N + 2M``. With a ``residual_tol`` (SAELens's rule, the atoms as they
        are) the residual is kept and correlated with every atom at each iteration: no
        set-up, per sample and iteration ``2NM`` (correlations) + ``2N`` (selection) +
        ``6M`` (the step ``r . d``, the residual update and its norm).
    ``"gradient_pursuit"``
        Set-up ``3NM``; the same two forms as ``"omp"``. Gram form: ``2N^2M + 2nNM``,
        then at iteration ``k = 1..T`` (support size ``k``), per sample, ``2N``
        (selection) + ``4k^2`` (the gradient ``D_S x - G_SS s`` and ``G_SS g``) + ``10k``
        (step size and code update) and,
        except after the K-th iteration, ``2kN`` (correlations recomputed from the
        support's Gram rows). Residual form: per sample and iteration ``2NM``
        (correlations) + ``2N`` (selection) + ``2kM`` (direction times atoms) + ``4M + 5k``
        (exact step size, code and residual updates).
    ``"topk"``
        Set-up ``3NM``; per sample ``2NM + 2N + K`` (correlations, selection, scaling).
    ``"adam"``
        :func:`ito_adam_flops`.
    ``"lca"``
        As ``"ista"`` (same set-up and products), with ``5N`` per sample and iteration
        for the potentials' update and the threshold.
    ``"paper_lca"``
        Per sample ``2NM`` for the starting loss, then per iteration ``8NM`` (the
        gradient's two products and one reconstruction per candidate step) plus
        ``M + N`` (gradient), ``2(2N + 3M + 2N)`` (the candidates, their residuals and
        losses) and ``3N`` (the per-sample choice).

    Parameters
    ----------
    algorithm : {"ista", "fista", "lca", "omp", "mp", "gradient_pursuit", "topk", "adam", \
            "paper_lca"}
        The ``sparse_encode`` algorithm.
    n_features : int
        M.
    n_components : int
        N.
    n_samples : int
        Number of samples encoded.
    n_iter : int or None, default=None
        Iterations run (``sparse_encode(..., return_n_iter=True)`` reports them). None
        means ``n_nonzero_coefs`` for the greedy algorithms (``"omp"``, ``"mp"``,
        ``"gradient_pursuit"``), 1 for the others; ``"topk"`` always does one step.
    n_nonzero_coefs : int or None, default=None
        K; required for ``"omp"``, ``"mp"``, ``"gradient_pursuit"`` and ``"topk"``.
    residual_tol : float or None, default=None
        ``"mp"`` only: not None counts matching pursuit with a residual tolerance
        (:class:`~sklearn_sparsegap.GradientSparseCoder`'s ``transform_alpha``), whose
        ``n_iter`` is the most steps any sample took.

    Returns
    -------
    flops : int
        The FLOP count.

    Examples
    --------
    >>> from sklearn_sparsegap.flops import sparse_encode_flops
    >>> sparse_encode_flops("ista", 8, 16, 1, n_iter=1)
    10373
    >>> sparse_encode_flops("topk", 8, 16, 1, n_nonzero_coefs=3)
    675
    >>> sparse_encode_flops("adam", 8, 16, 1, n_iter=1)
    848
    """
    matmul, other = _sparse_encode_flop_terms(
        algorithm, n_features, n_components, n_samples, n_iter=n_iter,
        n_nonzero_coefs=n_nonzero_coefs, residual_tol=residual_tol,
    )  # fmt: skip
    return matmul + other


def _sparse_encode_flop_terms(
    algorithm, n_features, n_components, n_samples, *, n_iter=None, n_nonzero_coefs=None,
    residual_tol=None,
):  # fmt: skip
    """:func:`sparse_encode_flops` split into matrix products and the rest.

    The first term is what torch's ``FlopCounterMode`` counts (``mm``, ``bmm``,
    ``baddbmm``), so tests can compare it with the solvers' actual products.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}."
        )
    _check_count(n_features, "n_features", 1)
    _check_count(n_components, "n_components", 1)
    _check_count(n_samples, "n_samples")
    greedy = algorithm in ("omp", "mp", "gradient_pursuit", "topk")
    if greedy:
        if n_nonzero_coefs is None:
            raise ValueError(f"n_nonzero_coefs is required for algorithm={algorithm!r}.")
        _check_count(n_nonzero_coefs, "n_nonzero_coefs", 1)
    if n_iter is None:
        n_iter = n_nonzero_coefs if algorithm in ("omp", "mp", "gradient_pursuit") else 1
    _check_count(n_iter, "n_iter")
    M, N, n, T, K = int(n_features), int(n_components), int(n_samples), int(n_iter), n_nonzero_coefs

    if algorithm == "adam":
        return 0, ito_adam_flops(M, N, n, T)
    if algorithm == "lca":
        if gram_form(M, N):
            setup = (2 * N * N * M + 2 * n * N * M, _eigvalsh_flops(N))
            per_iter = (2 * N * N, 5 * N)
        else:
            setup = (2 * M * M * N, _eigvalsh_flops(M))
            per_iter = (4 * N * M, M + 5 * N)
        return setup[0] + n * T * per_iter[0], setup[1] + n * T * per_iter[1]
    if algorithm == "paper_lca":
        # Per iteration: the gradient (two products), then the two candidates' losses
        # (one product each); the first loss is one more product.
        matmul = n * (2 * N * M + T * 8 * N * M)
        return matmul, n * T * (M + N + 2 * (2 * N + 3 * M + 2 * N) + 3 * N)
    if algorithm in ("ista", "fista"):
        if gram_form(M, N):
            setup = (2 * N * N * M + 2 * n * N * M, _eigvalsh_flops(N))
            per_iter = (2 * N * N, N + 2 * N)
        else:
            setup = (2 * M * M * N, _eigvalsh_flops(M))
            per_iter = (4 * N * M, M + N + 2 * N)
        extra = 6 * N if algorithm == "fista" else 0
        return setup[0] + n * T * per_iter[0], setup[1] + n * T * (per_iter[1] + extra)
    setup = 3 * N * M
    if algorithm == "topk":
        return 2 * n * N * M, setup + n * (2 * N + K)
    if algorithm == "mp":
        if residual_tol is not None:
            return n * T * 2 * N * M, n * T * (2 * N + 6 * M)
        if N <= MAX_GRAM_COMPONENTS:
            return 2 * N * N * M + 2 * n * N * M, setup + n * T * 4 * N
        return n * (T + 1) * 2 * N * M, setup + n * T * (2 * N + 2 * M)
    gram = greedy_gram_form(n, M, N, K)
    if algorithm == "omp":
        refit = n * T * T
        if gram:
            # Two (k, k) products per sample at iterations k = 1..T-1: sum of 4 k^2.
            matmul = 2 * N * N * M + 2 * n * N * M + n * 2 * (T - 1) * T * (2 * T - 1) // 3
            updates = min(T, K - 1)
            other = n * (2 * N * T + N * updates * (updates + 1) + 4 * T * (T + 1))
            return matmul, setup + refit + other
        matmul = n * (T * 2 * N * M + 2 * M * T * (T - 1))
        return matmul, setup + refit + n * T * (2 * N + 6 * M)
    # gradient_pursuit
    if gram:
        updates = min(T, K - 1)
        matmul = (
            2 * N * N * M + 2 * n * N * M
            + n * 2 * T * (T + 1) * (2 * T + 1) // 3  # two (k, k) products: sum of 4 k^2
        )  # fmt: skip
        other = n * (2 * N * T + N * updates * (updates + 1) + 5 * T * (T + 1))
        return matmul, setup + other
    matmul = n * (T * 2 * N * M + M * T * (T + 1))
    return matmul, setup + n * (T * (2 * N + 4 * M) + 5 * T * (T + 1) // 2)


def lars_dictionary_learning_flops(
    n_features,
    n_components,
    n_samples,
    n_iter=1,
    *,
    n_active=None,
    learn_dictionary=True,
):
    """Estimated FLOPs of LARS-Lasso dictionary learning (or LARS coding) over ``n_samples``.

    An analytic estimate for scikit-learn's ``DictionaryLearning(fit_algorithm="lars")``
    as wrapped by :class:`~sklearn_sparsegap.LarsDictionaryLearning` (no counterpart in
    Appendix I). The LARS path of each sample is assumed to take ``K = n_active`` steps,
    its final number of non-zero codes.

    Coding, per sample: the correlations ``D x`` (``2MN``), the first argmax (``N``) and,
    at step ``k = 1..K`` (``k`` active atoms, Gram matrix precomputed), the Cholesky
    update and direction solve (``3k^2``), the equiangular correlations of the inactive
    atoms (``2Nk``) and the step length, coefficient and correlation updates (``8N``):
    ``2MN + N + N K (K + 1) + K (K + 1) (2K + 1) / 2 + 8NK`` in all.

    With ``learn_dictionary=True``, per iteration on ``n`` samples: the Gram matrix
    ``D D^T`` (``2 N^2 M``), the coding of every sample, the dictionary update (the
    statistics ``S^T S`` and ``X^T S``, ``2nN^2 + 2nMN``, and the block-coordinate pass
    over the atoms, ``N (2NM + 5M)``) and the objective (``2nMN + 3nM + 2nN``). The same
    count per step applies to the minibatch variant with ``n`` the batch size.

    With ``learn_dictionary=False`` (inference), per sample: the coding and the decoding
    ``2MN``, as :func:`encoder_inference_flops` counts encode and decode. The Gram
    matrix depends only on the fitted dictionary (a one-off ``2 N^2 M``) and is not
    counted, so the count is linear in ``n_samples``.

    Parameters
    ----------
    n_features : int
        M.
    n_components : int
        N.
    n_samples : int
        Number of samples coded per iteration (the batch size for minibatches).
    n_iter : int, default=1
        Number of iterations (minibatch steps).
    n_active : float, default=None
        Mean LARS path length K (mean number of non-zero codes per sample). None
        means ``min(n_features, n_components)``, the most atoms a LARS path can hold
        (an upper estimate).
    learn_dictionary : bool, default=True
        Count dictionary learning iterations (True) or inference (False).

    Returns
    -------
    flops : int
        The estimated FLOP count.

    Examples
    --------
    >>> from sklearn_sparsegap.flops import lars_dictionary_learning_flops
    >>> lars_dictionary_learning_flops(8, 16, 1, n_active=3, learn_dictionary=False)
    1146
    >>> lars_dictionary_learning_flops(8, 16, 1024, 20, n_active=3)
    40522240
    """
    _check_count(n_samples, "n_samples")
    _check_count(n_iter, "n_iter")
    M, N = int(n_features), int(n_components)
    if n_active is None:
        K = float(min(M, N))
    elif isinstance(n_active, (Integral, float)) and n_active >= 0:
        K = float(n_active)
    else:
        raise ValueError(f"n_active must be a number >= 0 or None, got {n_active!r}.")
    coding = 2 * M * N + N + N * K * (K + 1) + K * (K + 1) * (2 * K + 1) / 2 + 8 * N * K
    # Rounded per sample, so the count is exactly linear in n_samples and n_iter.
    coding = int(round(coding))
    if not learn_dictionary:
        return n_iter * n_samples * (coding + 2 * M * N)
    n = n_samples
    dictionary_update = 2 * n * N * N + 2 * n * M * N + N * (2 * N * M + 5 * M)
    objective = 2 * n * M * N + 3 * n * M + 2 * n * N
    return n_iter * (2 * N * N * M + n * coding + dictionary_update + objective)
