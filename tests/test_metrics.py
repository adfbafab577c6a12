"""Tests for the ground-truth metrics and scorers."""

import functools
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA, SparseCoder
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    cross_val_score,
    cross_validate,
)

from sklearn_sparsegap import (
    dead_fraction,
    dictionary_mcc,
    make_dictionary_mcc_scorer,
    make_sparse_dictionary_data,
    mcc_scorer,
    mean_corr_coef,
    mean_l0,
    normalized_mse,
    paper_l1_to_alpha,
)

# ------------------------------------------------------------------ reference code


def _reference_abs_corr(a, b):
    """|Pearson| between every column pair, 0 for (near-)constant columns (authors' rule)."""
    a = _scaled_columns(a)
    b = _scaled_columns(b)
    corr = np.zeros((a.shape[1], b.shape[1]))
    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            x, y = a[:, i] - a[:, i].mean(), b[:, j] - b[:, j].mean()
            if x @ x <= 1e-12 * (a[:, i] @ a[:, i]) or y @ y <= 1e-12 * (b[:, j] @ b[:, j]):
                continue
            corr[i, j] = abs(x @ y) / (np.sqrt(x @ x) * np.sqrt(y @ y))
    return corr


def _scaled_columns(a):
    """Each column divided by its largest magnitude: correlations are scale-invariant, and
    the dot products of tiny columns (e.g. 1e-161) would otherwise underflow."""
    a = np.array(a, dtype=float)
    peak = np.abs(a).max(axis=0)
    return a / np.where(peak > 0, peak, 1.0)


def _reference_hungarian(a, b):
    corr = _reference_abs_corr(a, b)
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols].mean()


def _reference_greedy(a, b):
    """One pair at a time: take the largest remaining entry, drop its row and column."""
    corr = _reference_abs_corr(a, b)
    remaining = corr.copy()
    values = []
    for _ in range(min(corr.shape)):
        i, j = np.unravel_index(np.argmax(remaining), remaining.shape)
        values.append(corr[i, j])
        remaining[i, :] = -1.0
        remaining[:, j] = -1.0
    return float(np.mean(values))


def _greedy_values_under_ties(a, b, tol=1e-6):
    """Every mean a one-at-a-time greedy matching can give when correlations within
    ``tol`` of the largest remaining one count as tied (any of them may be taken first).

    Mathematically equal correlations computed two ways differ in their last bits, so an
    implementation may break such a tie either way; the greedy value, unlike the
    Hungarian one, depends on the choice.
    """
    corr = _reference_abs_corr(a, b)
    n_pairs = min(corr.shape)

    @functools.lru_cache(maxsize=None)
    def sums(rows, cols):
        if len(rows) == corr.shape[0] - n_pairs or len(cols) == corr.shape[1] - n_pairs:
            return frozenset([0.0])
        sub = corr[np.ix_(rows, cols)]
        out = set()
        for i, j in zip(*np.nonzero(sub >= sub.max() - tol)):
            rest = sums(rows[:i] + rows[i + 1 :], cols[:j] + cols[j + 1 :])
            out.update(round(sub[i, j] + value, 9) for value in rest)
        return frozenset(out)

    return sorted(value / n_pairs for value in sums(tuple(range(corr.shape[0])), tuple(range(corr.shape[1]))))


@st.composite
def code_pairs(draw, max_columns=8):
    """Two float arrays with the same number of rows (columns may differ)."""
    n_samples = draw(st.integers(2, 30))
    elements = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)
    shapes = [(n_samples, draw(st.integers(1, max_columns))) for _ in range(2)]
    first = draw(hnp.arrays(np.float64, shapes[0], elements=elements))
    second = draw(hnp.arrays(np.float64, shapes[1], elements=elements))
    return first, second


# --------------------------------------------------------------- MCC properties


@given(
    seed=st.integers(0, 2**32 - 1),
    n_samples=st.integers(3, 60),
    n_columns=st.integers(1, 12),
    matching=st.sampled_from(["hungarian", "greedy"]),
)
def test_mcc_is_one_for_permuted_rescaled_copy(seed, n_samples, n_columns, matching):
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((n_samples, n_columns))
    scales = rng.uniform(1e-3, 1e3, n_columns) * rng.choice([-1.0, 1.0], n_columns)
    shifts = rng.uniform(-10, 10, n_columns)
    permuted = codes[:, rng.permutation(n_columns)] * scales + shifts
    assert mean_corr_coef(codes, permuted, matching=matching) == pytest.approx(1.0, abs=1e-9)


@given(seed=st.integers(0, 2**32 - 1), matching=st.sampled_from(["hungarian", "greedy"]))
def test_mcc_is_one_for_permuted_generator_codes(seed, matching):
    _, _, codes = make_sparse_dictionary_data(200, random_state=seed)
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], codes.shape[1])
    permuted = 3.0 * sign * codes[:, rng.permutation(codes.shape[1])]
    assert mean_corr_coef(codes, permuted, matching=matching) == pytest.approx(1.0, abs=1e-12)


@given(code_pairs())
def test_mcc_in_unit_interval_and_greedy_below_hungarian(pair):
    first, second = pair
    hungarian = mean_corr_coef(first, second)
    greedy = mean_corr_coef(first, second, matching="greedy")
    assert isinstance(hungarian, float) and isinstance(greedy, float)
    assert 0.0 <= greedy <= 1.0
    assert 0.0 <= hungarian <= 1.0
    assert greedy <= hungarian + 1e-6


@given(code_pairs())
def test_mcc_matches_reference_implementation(pair):
    first, second = pair
    # Hungarian: the optimal total does not depend on how ties are broken.
    assert mean_corr_coef(first, second) == pytest.approx(
        _reference_hungarian(first, second), abs=1e-6
    )
    # Greedy: on (near-)ties the value depends on which tied pair is taken first, so it
    # must equal the value of one of the greedy matchings.
    greedy = mean_corr_coef(first, second, matching="greedy")
    candidates = _greedy_values_under_ties(first, second)
    assert min(abs(greedy - value) for value in candidates) <= 1e-6, (greedy, candidates)


def test_greedy_breaks_ties_by_lowest_column_index():
    # |corr| = [[0.526, 1/sqrt(3)], [0.225, 1/sqrt(3)]]: the two 1/sqrt(3) are equal (they
    # differ in the last bit when computed in float64). The documented rule takes the
    # one in the lowest codes_true column, (0, 1), which leaves (1, 0); taking (1, 1)
    # first would leave (0, 0) and score 0.552.
    true = np.array([[3.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    pred = np.array([[0.0, 0.0], [5.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    corr = _reference_abs_corr(true, pred)
    assert corr[0, 1] == pytest.approx(corr[1, 1], abs=1e-15)
    expected = (corr[0, 1] + corr[1, 0]) / 2
    for _ in range(3):  # deterministic
        assert mean_corr_coef(true, pred, matching="greedy") == pytest.approx(expected, abs=1e-6)
    # Swapping the true columns moves the tie to the other pair.
    swapped = (corr[1, 1] + corr[0, 0]) / 2
    assert mean_corr_coef(true[:, ::-1], pred, matching="greedy") == pytest.approx(swapped, abs=1e-6)
    # Hungarian takes the best total whichever way the tie goes.
    assert mean_corr_coef(true, pred) == pytest.approx(swapped, abs=1e-6)


@given(
    correlation=hnp.arrays(
        np.float32, st.tuples(st.integers(1, 7), st.integers(1, 7)),
        elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # many exact ties
    )
)
def test_greedy_rounds_equal_the_one_at_a_time_rule_on_ties(correlation):
    from sklearn_sparsegap._metrics import _greedy_pairs

    remaining = correlation.astype(np.float64)
    expected = []
    for _ in range(min(correlation.shape)):
        i, j = np.unravel_index(np.argmax(remaining), remaining.shape)  # first maximum
        expected.append((int(i), int(j)))
        remaining[i, :] = -1.0
        remaining[:, j] = -1.0
    rows, cols = _greedy_pairs(correlation)
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(expected)


def test_mcc_of_tiny_columns_is_exact():
    # Centred products of 1e-161 underflow in float64; the library is still exact.
    assert mean_corr_coef([[0.0], [1.0]], [[0.0], [1.8254173062801806e-161]]) == 1.0


@given(code_pairs())
def test_mcc_is_symmetric(pair):
    first, second = pair
    assert mean_corr_coef(first, second) == pytest.approx(mean_corr_coef(second, first), abs=1e-9)


def test_greedy_can_be_strictly_below_hungarian():
    # |corr| ~ [[0.87, 0.8], [0.5, 0]]: greedy takes 0.87 first and is left with 0; the
    # assignment takes 0.8 + 0.5.
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5000, 3))
    true = z[:, :2]
    pred = np.column_stack([0.866 * z[:, 0] + 0.5 * z[:, 1], 0.8 * z[:, 0] + 0.6 * z[:, 2]])
    hungarian = mean_corr_coef(true, pred)
    greedy = mean_corr_coef(true, pred, matching="greedy")
    assert greedy < hungarian - 0.05
    assert hungarian == pytest.approx(_reference_hungarian(true, pred), abs=1e-6)
    assert greedy == pytest.approx(_reference_greedy(true, pred), abs=1e-6)


def test_constant_columns_score_zero():
    rng = np.random.default_rng(0)
    true = rng.standard_normal((100, 2))
    # One perfect column and one constant column: only the perfect one counts.
    pred = np.column_stack([true[:, 0], np.full(100, 7.0)])
    assert mean_corr_coef(true, pred) == pytest.approx(0.5)
    assert mean_corr_coef(true, np.zeros((100, 2))) == 0.0
    assert mean_corr_coef(np.zeros((100, 3)), np.zeros((100, 3)), matching="greedy") == 0.0
    # A single sample has no variance: nothing correlates.
    assert mean_corr_coef([[1.0, 2.0]], [[3.0, 4.0]]) == 0.0


def test_more_or_fewer_predicted_columns():
    rng = np.random.default_rng(0)
    true = rng.standard_normal((500, 4))
    noise = rng.standard_normal((500, 6))
    superset = np.column_stack([noise[:, :3], true[:, ::-1], noise[:, 3:]])
    # Every true column is found among the predicted ones: min(4, 10) pairs, all perfect.
    for matching in ["hungarian", "greedy"]:
        assert mean_corr_coef(true, superset, matching=matching) == pytest.approx(1.0)
        assert mean_corr_coef(true, true[:, [2]], matching=matching) == pytest.approx(1.0)
        # Fewer predicted columns: the mean is over the matched pairs, not over all true.
        assert mean_corr_coef(true, true[:, [1, 3]] * -2, matching=matching) == pytest.approx(1.0)


def test_independent_codes_score_low():
    _, _, codes = make_sparse_dictionary_data(4000, random_state=0)
    _, _, other = make_sparse_dictionary_data(4000, random_state=1)
    assert mean_corr_coef(codes, other) < 0.1


def test_dtypes_and_containers():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((50, 5))
    noisy = codes + 0.1 * rng.standard_normal((50, 5))
    expected = mean_corr_coef(codes, noisy)
    as_float32 = mean_corr_coef(codes.astype(np.float32), noisy.astype(np.float32))
    assert as_float32 == pytest.approx(expected, abs=1e-6)
    assert mean_corr_coef(codes.tolist(), noisy.tolist()) == expected
    assert mean_corr_coef(pd.DataFrame(codes), pd.DataFrame(noisy)) == expected
    assert mean_corr_coef(np.asfortranarray(codes), noisy[::-1][::-1]) == expected
    ints = rng.integers(0, 5, (50, 3))
    assert mean_corr_coef(ints, ints[:, ::-1]) == pytest.approx(1.0)


def test_extreme_magnitudes_stay_finite():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((40, 3))
    assert mean_corr_coef(codes * 1e100, codes * 1e-100) == pytest.approx(1.0)
    assert mean_corr_coef(codes + 1e4, codes) == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------- dictionary MCC


def test_dictionary_mcc_permutation_sign_and_pearson():
    _, dictionary, _ = make_sparse_dictionary_data(5, n_components=12, n_features=6, random_state=0)
    rng = np.random.default_rng(0)
    flipped = dictionary[rng.permutation(12)] * rng.choice([-1.0, 1.0], (12, 1))
    assert dictionary_mcc(dictionary, flipped) == pytest.approx(1.0)
    # Pearson across coordinates, not cosine: shifting every coordinate of an atom by a
    # constant leaves the score at 1.
    assert dictionary_mcc(dictionary, dictionary + 5.0) == pytest.approx(1.0)
    noisy = dictionary + 0.3 * rng.standard_normal(dictionary.shape)
    expected = _reference_hungarian(dictionary.T, noisy.T)
    assert dictionary_mcc(dictionary, noisy) == pytest.approx(expected, abs=1e-6)
    assert dictionary_mcc(dictionary, noisy, matching="greedy") == pytest.approx(
        _reference_greedy(dictionary.T, noisy.T), abs=1e-6
    )
    # Different numbers of atoms are fine (min of the two are matched).
    assert dictionary_mcc(dictionary, dictionary[:5]) == pytest.approx(1.0)


def test_dictionary_mcc_feature_mismatch():
    with pytest.raises(ValueError, match="dictionary_pred"):
        dictionary_mcc(np.ones((3, 4)), np.ones((3, 5)))


# -------------------------------------------------------------------- scorers


@pytest.fixture(scope="module")
def coded_data():
    X, dictionary, codes = make_sparse_dictionary_data(240, random_state=0)
    return X, dictionary, codes


def _coder(dictionary, alpha=0.01):
    return SparseCoder(
        dictionary,
        transform_algorithm="lasso_lars",
        transform_alpha=alpha,
        positive_code=True,
    )


def test_mcc_scorer_scores_the_transform_against_y(coded_data):
    X, dictionary, codes = coded_data
    coder = _coder(dictionary).fit(X)
    assert mcc_scorer(coder, X, codes) == mean_corr_coef(codes, coder.transform(X))
    with pytest.raises(ValueError, match="y"):
        mcc_scorer(coder, X, None)


def test_mcc_scorer_in_cross_val_score(coded_data):
    X, dictionary, codes = coded_data
    cv = KFold(3)
    scores = cross_val_score(_coder(dictionary), X, codes, scoring=mcc_scorer, cv=cv)
    expected = [
        mean_corr_coef(codes[test], _coder(dictionary).fit(X[train]).transform(X[test]))
        for train, test in cv.split(X)
    ]
    np.testing.assert_allclose(scores, expected)
    assert np.all(scores > 0.9)


def test_mcc_scorer_in_grid_search(coded_data):
    X, dictionary, codes = coded_data
    search = GridSearchCV(
        _coder(dictionary), {"transform_alpha": [0.01, 3.0]}, scoring=mcc_scorer, cv=3
    ).fit(X, codes)
    # A huge penalty zeroes most codes, so MCC picks the small one.
    assert search.best_params_ == {"transform_alpha": 0.01}
    means = search.cv_results_["mean_test_score"]
    assert means[0] > means[1]
    assert search.best_score_ == pytest.approx(means[0])


def test_scorers_in_multimetric_cross_validate(coded_data):
    X, dictionary, codes = coded_data
    scoring = {
        "mcc": mcc_scorer,
        "dictionary_mcc": make_dictionary_mcc_scorer(dictionary),
        "log_likelihood": lambda estimator, X, y: estimator.score(X),
    }
    cv = KFold(3)
    result = cross_validate(PCA(n_components=4), X, codes, scoring=scoring, cv=cv)
    for (train, test), mcc, dmcc in zip(
        cv.split(X), result["test_mcc"], result["test_dictionary_mcc"]
    ):
        pca = PCA(n_components=4).fit(X[train])
        assert mcc == pytest.approx(mean_corr_coef(codes[test], pca.transform(X[test])))
        assert dmcc == pytest.approx(dictionary_mcc(dictionary, pca.components_))
    assert np.all(np.isfinite(result["test_log_likelihood"]))


def test_dictionary_scorer_in_grid_search(coded_data):
    X, dictionary, codes = coded_data
    cv = KFold(2)
    search = GridSearchCV(
        PCA(), {"n_components": [2, 8]}, scoring=make_dictionary_mcc_scorer(dictionary), cv=cv
    ).fit(X)
    for n_components, score in zip([2, 8], search.cv_results_["mean_test_score"]):
        expected = np.mean(
            [
                dictionary_mcc(dictionary, PCA(n_components).fit(X[train]).components_)
                for train, _ in cv.split(X)
            ]
        )
        assert score == pytest.approx(expected)


def test_dictionary_scorer_ignores_X_and_y_and_snapshots_the_dictionary(coded_data):
    X, dictionary, codes = coded_data
    pca = PCA(n_components=4).fit(X)
    truth = dictionary.copy()
    scorer = make_dictionary_mcc_scorer(truth)
    expected = dictionary_mcc(dictionary, pca.components_)
    assert scorer(pca, X, codes) == expected
    assert scorer(pca, X[:3], None) == expected
    truth[:] = 0.0  # later edits of the caller's array do not change the scorer
    assert scorer(pca, X, codes) == expected
    greedy = make_dictionary_mcc_scorer(dictionary, matching="greedy")
    assert greedy(pca, X) == dictionary_mcc(dictionary, pca.components_, matching="greedy")


def test_scorers_pickle():
    # GridSearchCV(n_jobs=...) sends scorers to worker processes.
    restored = pickle.loads(pickle.dumps(mcc_scorer))
    X, dictionary, codes = make_sparse_dictionary_data(60, random_state=0)
    coder = _coder(dictionary).fit(X)
    assert restored(coder, X, codes) == mcc_scorer(coder, X, codes)
    scorer = pickle.loads(pickle.dumps(make_dictionary_mcc_scorer(dictionary)))
    assert scorer(PCA(3).fit(X), X) == dictionary_mcc(dictionary, PCA(3).fit(X).components_)


def test_mcc_scorer_is_documented():
    assert "mean_corr_coef" in mcc_scorer.__doc__
    assert "y" in mcc_scorer.__doc__


# ------------------------------------------------------------- NMSE, L0, dead


def test_normalized_mse():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4)) + 3.0
    assert normalized_mse(X, X) == 0.0
    assert normalized_mse(X, np.tile(X.mean(axis=0), (30, 1))) == pytest.approx(1.0)
    X_pred = X + 0.1 * rng.standard_normal(X.shape)
    expected = np.sum((X - X_pred) ** 2) / np.sum((X - X.mean(axis=0)) ** 2)
    assert normalized_mse(X, X_pred) == pytest.approx(expected)
    with pytest.raises(ValueError, match="X_pred"):
        normalized_mse(X, X[:, :3])
    with pytest.raises(ValueError, match="X"):
        normalized_mse(np.ones((5, 2)), np.zeros((5, 2)))


def test_mean_l0_and_dead_fraction():
    codes = np.array([[0.0, 1.0, 1e-5, 0.0], [0.0, -2.0, 3.0, 0.0]])
    assert mean_l0(codes) == 2.0
    assert mean_l0(codes, threshold=1e-4) == 1.5
    assert mean_l0(codes, threshold=10.0) == 0.0
    assert dead_fraction(codes) == 0.5
    assert dead_fraction(codes, threshold=2.5) == 0.75
    _, _, generated = make_sparse_dictionary_data(100, n_nonzero_coefs=5, random_state=0)
    assert mean_l0(generated) == 5.0
    assert dead_fraction(generated) == 0.0
    for func in (mean_l0, dead_fraction):
        with pytest.raises(ValueError, match="threshold"):
            func(codes, threshold=-1.0)


def test_paper_l1_to_alpha_matches_the_objectives():
    """paper loss * n_features / 2 == library loss when alpha = paper_l1_to_alpha(...)."""
    rng = np.random.default_rng(0)
    n_samples, n_features, n_components, l1 = 50, 8, 16, 0.01
    X = rng.standard_normal((n_samples, n_features))
    codes = np.abs(rng.standard_normal((n_samples, n_components)))
    dictionary = rng.standard_normal((n_components, n_features))
    residual = X - codes @ dictionary
    paper = np.mean(residual**2) + l1 * np.mean(np.abs(codes))
    alpha = paper_l1_to_alpha(l1, n_features, n_components)
    library = np.mean(0.5 * np.sum(residual**2, axis=1) + alpha * np.sum(np.abs(codes), axis=1))
    assert library == pytest.approx(paper * n_features / 2)
    assert paper_l1_to_alpha(0.01, 8, 16) == pytest.approx(0.0025)
    assert isinstance(paper_l1_to_alpha(1, 8, 16), float)


@pytest.mark.parametrize(
    "kwargs, argname",
    [
        (dict(l1_penalty=-1.0), "l1_penalty"),
        (dict(n_features=0), "n_features"),
        (dict(n_components=0), "n_components"),
    ],
)
def test_paper_l1_to_alpha_bad_input(kwargs, argname):
    with pytest.raises(ValueError, match=argname):
        paper_l1_to_alpha(**{"l1_penalty": 0.01, "n_features": 8, "n_components": 16, **kwargs})


# ----------------------------------------------------------------- bad inputs

_GOOD = np.arange(12.0).reshape(4, 3) ** 1.5

_BAD_ARRAYS = {
    "nan": np.where(np.eye(4, 3) > 0, np.nan, _GOOD),
    "inf": np.where(np.eye(4, 3) > 0, np.inf, _GOOD),
    "1-D": np.arange(4.0),
    "3-D": np.ones((4, 3, 2)),
    "no rows": np.ones((0, 3)),
    "no columns": np.ones((4, 0)),
    "None": None,
    "strings": np.array([["a", "b", "c"]] * 4),
}

# (function, name of its first argument, name of its second argument)
_PAIRED = [
    (mean_corr_coef, "codes_true", "codes_pred"),
    (dictionary_mcc, "dictionary_true", "dictionary_pred"),
    (normalized_mse, "X", "X_pred"),
]


@pytest.mark.parametrize("bad", list(_BAD_ARRAYS), ids=list(_BAD_ARRAYS))
@pytest.mark.parametrize("func, first, second", _PAIRED, ids=lambda x: getattr(x, "__name__", x))
@pytest.mark.parametrize("position", [0, 1])
def test_bad_arrays_raise_value_error_naming_the_argument(func, first, second, bad, position):
    args = [_GOOD, _GOOD]
    args[position] = _BAD_ARRAYS[bad]
    name = (first, second)[position]
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        func(*args)


@pytest.mark.parametrize("bad", list(_BAD_ARRAYS), ids=list(_BAD_ARRAYS))
@pytest.mark.parametrize("func", [mean_l0, dead_fraction])
def test_bad_codes_raise_value_error_naming_the_argument(func, bad):
    with pytest.raises(ValueError, match="codes"):
        func(_BAD_ARRAYS[bad])


@pytest.mark.parametrize("bad", list(_BAD_ARRAYS), ids=list(_BAD_ARRAYS))
def test_bad_dictionary_for_scorer(bad):
    with pytest.raises(ValueError, match="dictionary_true"):
        make_dictionary_mcc_scorer(_BAD_ARRAYS[bad])


def test_row_count_mismatch():
    with pytest.raises(ValueError, match="codes_pred"):
        mean_corr_coef(np.ones((5, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="X_pred"):
        normalized_mse(np.ones((5, 2)), np.ones((4, 2)))


@pytest.mark.parametrize("func", [mean_corr_coef, dictionary_mcc])
def test_bad_matching(func):
    with pytest.raises(ValueError, match="matching"):
        func(_GOOD, _GOOD, matching="optimal")
    with pytest.raises(ValueError, match="matching"):
        make_dictionary_mcc_scorer(_GOOD, matching="optimal")


# ------------------------------------------- inputs not modified, read-only inputs


def _calls(first, second):
    return [
        lambda: mean_corr_coef(first, second),
        lambda: mean_corr_coef(first, second, matching="greedy"),
        lambda: dictionary_mcc(first, second),
        lambda: normalized_mse(first, second),
        lambda: mean_l0(first, threshold=0.5),
        lambda: dead_fraction(first, threshold=0.5),
        lambda: make_dictionary_mcc_scorer(first),
    ]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inputs_not_modified_and_read_only_accepted(dtype):
    rng = np.random.default_rng(0)
    first = (rng.standard_normal((20, 6)) + 2.0).astype(dtype)
    second = (rng.standard_normal((20, 6)) - 1.0).astype(dtype)
    originals = first.copy(), second.copy()
    writable_results = [call() for call in _calls(first, second)]
    np.testing.assert_array_equal(first, originals[0])
    np.testing.assert_array_equal(second, originals[1])
    first.setflags(write=False)
    second.setflags(write=False)
    read_only_results = [call() for call in _calls(first, second)]
    for a, b in zip(writable_results[:-1], read_only_results[:-1]):
        assert a == b


@pytest.mark.parametrize("magnitude", [1e-320, 1e-184, 1.0, 1e200])
def test_mcc_does_not_depend_on_the_magnitude_of_the_codes(magnitude):
    # Squares of entries near 1e-184 underflow and near 1e200 overflow in float64: a
    # column of such codes is neither "constant" nor infinite.
    first = np.array([[0.0], [1.0], [3.0]])
    second = np.array([[1.0], [3.0], [-1.0]]) * magnitude
    expected = abs(np.corrcoef(first[:, 0], np.array([1.0, 3.0, -1.0]))[0, 1])
    assert mean_corr_coef(first, second) == pytest.approx(expected, abs=1e-6)
    assert mean_corr_coef(np.array([[0.0], [1.0]]), np.array([[3.8e-184], [0.0]])) == pytest.approx(1.0)
