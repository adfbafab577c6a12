"""Tests for make_sparse_dictionary_data."""

import itertools
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from sklearn_sparsegap import make_sparse_dictionary_data

DISTRIBUTIONS = ["halfnormal", "normal", "zipf"]


@st.composite
def generator_params(draw):
    n_components = draw(st.integers(1, 40))
    return dict(
        n_samples=draw(st.integers(1, 60)),
        n_components=n_components,
        n_features=draw(st.integers(1, 12)),
        n_nonzero_coefs=draw(st.integers(1, n_components)),
        code_distribution=draw(st.sampled_from(DISTRIBUTIONS)),
        zipf_exponent=draw(st.floats(0.0, 3.0)),
        random_state=draw(st.integers(0, 2**31 - 1)),
    )


def _zipf_exact(n_components, n_nonzero_coefs, exponent):
    """Exact laws of sequential renormalised draws (numpy's choice(replace=False, p=w)),
    by enumerating every ordered draw: the weights, P(atom i in the support) and
    P(support == subset) keyed by the subset's bit mask."""
    weights = np.arange(1, n_components + 1, dtype=float) ** -exponent
    weights /= weights.sum()
    inclusion = np.zeros(n_components)
    subsets = {}
    for order in itertools.permutations(range(n_components), n_nonzero_coefs):
        probability, remaining = 1.0, 1.0
        for atom in order:
            probability *= weights[atom] / remaining
            remaining -= weights[atom]
        inclusion[list(order)] += probability
        mask = sum(1 << atom for atom in order)
        subsets[mask] = subsets.get(mask, 0.0) + probability
    return weights, inclusion, subsets


def _zipf_inclusion_probabilities(n_components, n_nonzero_coefs, exponent):
    weights, inclusion, _ = _zipf_exact(n_components, n_nonzero_coefs, exponent)
    return weights, inclusion


# --------------------------------------------------------------------------- invariants


@given(generator_params())
def test_generator_invariants(params):
    X, dictionary, codes = make_sparse_dictionary_data(**params)
    n, N, M, K = (
        params["n_samples"],
        params["n_components"],
        params["n_features"],
        params["n_nonzero_coefs"],
    )
    # Return order and shapes follow make_sparse_coded_signal: (X, dictionary, codes).
    assert X.shape == (n, M)
    assert dictionary.shape == (N, M)
    assert codes.shape == (n, N)
    assert X.dtype == dictionary.dtype == codes.dtype == np.float64
    # Exactly K non-zeros in every row.
    np.testing.assert_array_equal(np.count_nonzero(codes, axis=1), np.full(n, K))
    # Unit-norm atoms.
    np.testing.assert_allclose(np.linalg.norm(dictionary, axis=1), 1.0, rtol=1e-12)
    # Noise-free signals are exactly the codes times the dictionary.
    np.testing.assert_allclose(X, codes @ dictionary, rtol=1e-10, atol=1e-12)
    # Signs per distribution.
    if params["code_distribution"] != "normal":
        assert np.all(codes >= 0)
    assert np.all(np.isfinite(codes)) and np.all(np.isfinite(X))


@given(generator_params())
def test_same_seed_same_data(params):
    first = make_sparse_dictionary_data(**params)
    second = make_sparse_dictionary_data(**params)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_differ_and_random_state_instances_work():
    X0, D0, S0 = make_sparse_dictionary_data(50, random_state=0)
    X1, D1, S1 = make_sparse_dictionary_data(50, random_state=1)
    assert not np.array_equal(D0, D1)
    assert not np.array_equal(S0, S1)
    X2, D2, S2 = make_sparse_dictionary_data(50, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(S0, S2)
    np.testing.assert_array_equal(D0, D2)
    np.testing.assert_array_equal(X0, X2)


def test_defaults():
    X, dictionary, codes = make_sparse_dictionary_data(random_state=0)
    assert X.shape == (1000, 8)
    assert dictionary.shape == (16, 8)
    np.testing.assert_array_equal(np.count_nonzero(codes, axis=1), 3)
    assert np.all(codes >= 0)  # halfnormal by default, as the authors' code


def test_k_equals_n_components_fills_every_entry():
    _, _, codes = make_sparse_dictionary_data(30, n_components=7, n_nonzero_coefs=7, random_state=0)
    assert np.all(codes != 0)


# ------------------------------------------------------------- value distributions


@pytest.mark.parametrize("distribution", ["halfnormal", "normal"])
def test_value_distribution(distribution):
    _, _, codes = make_sparse_dictionary_data(
        4000, n_components=16, n_nonzero_coefs=3, code_distribution=distribution, random_state=0
    )
    values = codes[codes != 0]
    reference = stats.halfnorm if distribution == "halfnormal" else stats.norm
    # Kolmogorov-Smirnov against |N(0,1)| resp. N(0,1) (12,000 values).
    assert stats.kstest(values, reference.cdf).pvalue > 1e-3
    if distribution == "normal":
        # Signed: both signs in roughly equal numbers.
        assert 0.45 < np.mean(values > 0) < 0.55


@pytest.mark.parametrize(
    "n_components, n_nonzero_coefs",
    [(5, 2), (20, 18)],  # (5, 2): Floyd's sampler; (20, 18): the dense-support sampler
)
def test_support_is_a_uniform_subset(n_components, n_nonzero_coefs):
    """Every K-subset of atoms is equally likely (chi-square over all subsets)."""
    n_samples = 30 * math.comb(n_components, n_nonzero_coefs)
    _, _, codes = make_sparse_dictionary_data(
        n_samples,
        n_components=n_components,
        n_nonzero_coefs=n_nonzero_coefs,
        random_state=0,
    )
    # Encode each support as an integer bit mask and count each subset.
    masks = (codes != 0) @ (1 << np.arange(n_components))
    _, counts = np.unique(masks, return_counts=True)
    assert counts.size == math.comb(n_components, n_nonzero_coefs)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_zipf_support_matches_sequential_weighted_draws():
    """Inclusion frequencies equal those of numpy's choice(replace=False, p=w)."""
    n_samples, n_components, n_nonzero_coefs = 20000, 8, 3
    _, inclusion = _zipf_inclusion_probabilities(n_components, n_nonzero_coefs, 1.0)
    _, _, codes = make_sparse_dictionary_data(
        n_samples,
        n_components=n_components,
        n_nonzero_coefs=n_nonzero_coefs,
        code_distribution="zipf",
        random_state=0,
    )
    frequency = np.mean(codes != 0, axis=0)
    standard_error = np.sqrt(inclusion * (1 - inclusion) / n_samples)
    assert np.all(np.abs(frequency - inclusion) < 5 * standard_error)
    # Frequencies decrease with rank (the exact gaps are > 8 standard errors here).
    assert np.all(np.diff(frequency) < 0)


@pytest.mark.parametrize(
    "n_components, n_nonzero_coefs, exponent",
    # (6, 5, 4.0): the atoms drawn first hold almost all the weight, so later draws are
    # rejected many times and reach the explicit-renormalisation path.
    [(6, 2, 1.0), (7, 3, 0.5), (6, 5, 4.0)],
)
def test_zipf_support_law_is_exact(n_components, n_nonzero_coefs, exponent):
    """The joint law of the support (which K-subset) matches sequential weighted draws."""
    n_samples = 30000
    _, _, subsets = _zipf_exact(n_components, n_nonzero_coefs, exponent)
    _, _, codes = make_sparse_dictionary_data(
        n_samples,
        n_components=n_components,
        n_nonzero_coefs=n_nonzero_coefs,
        code_distribution="zipf",
        zipf_exponent=exponent,
        random_state=0,
    )
    masks = (codes != 0) @ (1 << np.arange(n_components))
    keys = sorted(subsets)
    observed = np.array([np.count_nonzero(masks == key) for key in keys])
    assert observed.sum() == n_samples  # no support outside the enumerated subsets
    expected = n_samples * np.array([subsets[key] for key in keys])
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_zipf_frequencies_decrease_with_rank_at_scale():
    _, _, codes = make_sparse_dictionary_data(
        20000, n_components=64, n_nonzero_coefs=5, code_distribution="zipf", random_state=0
    )
    frequency = np.mean(codes != 0, axis=0)
    # Monotone overall (rank correlation), and the head clearly above the tail.
    assert stats.spearmanr(np.arange(64), frequency).statistic < -0.95
    assert frequency[:8].mean() > 3 * frequency[-8:].mean()


def test_zipf_magnitudes_scale_with_weight():
    """Active values are |N(0,1)| * (w_i + 0.1)."""
    n_components = 6
    weights, _ = _zipf_inclusion_probabilities(n_components, 1, 1.0)
    _, _, codes = make_sparse_dictionary_data(
        20000,
        n_components=n_components,
        n_nonzero_coefs=2,
        code_distribution="zipf",
        random_state=0,
    )
    for atom in range(n_components):
        values = codes[codes[:, atom] != 0, atom] / (weights[atom] + 0.1)
        assert stats.kstest(values, stats.halfnorm.cdf).pvalue > 1e-3


def test_zipf_exponent_zero_is_uniform():
    _, _, codes = make_sparse_dictionary_data(
        20000,
        n_components=8,
        n_nonzero_coefs=2,
        code_distribution="zipf",
        zipf_exponent=0.0,
        random_state=0,
    )
    counts = np.count_nonzero(codes, axis=0)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_zipf_steep_exponent_still_gives_exact_k():
    # Weights down to 16 ** -60 ~ 1e-72: later draws almost always hit taken atoms and go
    # through the explicit renormalisation; the support is still K distinct atoms.
    _, _, codes = make_sparse_dictionary_data(
        2000,
        n_components=16,
        n_nonzero_coefs=8,
        code_distribution="zipf",
        zipf_exponent=60.0,
        random_state=0,
    )
    np.testing.assert_array_equal(np.count_nonzero(codes, axis=1), 8)
    # The heaviest atoms are (almost surely) always in the support.
    assert np.all(codes[:, :7] != 0)


def test_zipf_exponent_is_ignored_for_other_distributions():
    a = make_sparse_dictionary_data(100, zipf_exponent=1.0, random_state=3)
    b = make_sparse_dictionary_data(100, zipf_exponent=2.5, random_state=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# -------------------------------------------------------------------------- noise


def test_noise_is_added_to_X_only():
    clean = make_sparse_dictionary_data(5000, noise_std=0.0, random_state=0)
    X, dictionary, codes = make_sparse_dictionary_data(5000, noise_std=0.3, random_state=0)
    # Same seed: the same dictionary and codes, only X changes.
    np.testing.assert_array_equal(dictionary, clean[1])
    np.testing.assert_array_equal(codes, clean[2])
    residual = X - codes @ dictionary
    assert residual.std() == pytest.approx(0.3, rel=0.03)
    assert abs(residual.mean()) < 0.01


# ------------------------------------------------------------------------- memory


def test_memory_stays_near_the_output_size():
    tracemalloc.start()
    try:
        X, dictionary, codes = make_sparse_dictionary_data(
            20000, n_components=500, n_features=50, n_nonzero_coefs=10, random_state=0
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output = X.nbytes + dictionary.nbytes + codes.nbytes
    assert peak < 1.25 * output


# --------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kwargs, argname",
    [
        (dict(n_samples=0), "n_samples"),
        (dict(n_samples=-5), "n_samples"),
        (dict(n_samples=2.5), "n_samples"),
        (dict(n_components=0), "n_components"),
        (dict(n_features=0), "n_features"),
        (dict(n_nonzero_coefs=0), "n_nonzero_coefs"),
        (dict(n_nonzero_coefs=17, n_components=16), "n_nonzero_coefs"),
        (dict(code_distribution="laplace"), "code_distribution"),
        (dict(zipf_exponent=-1.0), "zipf_exponent"),
        # 3 ** -2000 underflows: fewer than K atoms could ever be drawn.
        (dict(code_distribution="zipf", zipf_exponent=2000.0), "zipf_exponent"),
        (dict(noise_std=-0.1), "noise_std"),
        (dict(noise_std=float("nan")), "noise_std"),
        (dict(noise_std=float("inf")), "noise_std"),
        (dict(random_state="seed"), "random_state"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_argument(kwargs, argname):
    with pytest.raises(ValueError, match=argname):
        make_sparse_dictionary_data(**{"n_samples": 10, **kwargs})


# ------------------------------------------- the named steps of make_sparse_dictionary_data
def test_sparse_code_entries_have_k_distinct_atoms_per_row():
    from sklearn_sparsegap._datasets import _sparse_code_entries

    for distribution in ("halfnormal", "normal", "zipf"):
        rng = np.random.RandomState(0)
        support, values = _sparse_code_entries(rng, 500, 12, 4, distribution, 1.0)
        assert support.shape == values.shape == (500, 4)
        assert all(len(set(row)) == 4 for row in support.tolist())
        assert (support >= 0).all() and (support < 12).all()
        assert (values >= 0).all() == (distribution != "normal")
    # Zipf: rank 1 is chosen more often than rank 12.
    counts = np.bincount(support.ravel(), minlength=12)
    assert counts[0] > counts[-1]
    with pytest.raises(ValueError, match="zipf_exponent=1000000.0 is so large"):
        _sparse_code_entries(np.random.RandomState(0), 5, 30, 4, "zipf", 1e6)


def test_noisy_signals_are_the_codes_times_the_dictionary_plus_noise():
    from sklearn_sparsegap._datasets import _noisy_signals

    rng = np.random.RandomState(0)
    dictionary = rng.standard_normal((6, 3))
    support = np.array([[0, 5], [2, 3]])
    values = np.array([[1.0, 2.0], [-1.0, 0.5]])
    codes = np.zeros((2, 6))
    np.put_along_axis(codes, support, values, axis=1)
    X = _noisy_signals(rng, support, values, dictionary, 0.0)
    np.testing.assert_allclose(X, codes @ dictionary, rtol=1e-14)
    noisy = _noisy_signals(np.random.RandomState(1), support, values, dictionary, 0.1)
    assert 0 < np.abs(noisy - X).max() < 1.0
