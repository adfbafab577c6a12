"""Tests of ``LarsDictionaryLearning``: it is scikit-learn's estimator, in the library's terms."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import DictionaryLearning, MiniBatchDictionaryLearning
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from sklearn_sparsegap import (
    LarsDictionaryLearning,
    dictionary_mcc,
    make_sparse_dictionary_data,
    mcc_scorer,
    mean_corr_coef,
)
from sklearn_sparsegap.flops import lars_dictionary_learning_flops


@pytest.fixture(scope="module")
def data():
    X, dictionary, codes = make_sparse_dictionary_data(64, random_state=0)
    return X, dictionary, codes


# ------------------------------------------------------------ equality with scikit-learn
@pytest.mark.parametrize("transform_alpha", [None, 0.05])
def test_equals_dictionary_learning(data, transform_alpha):
    X = data[0]
    ours = LarsDictionaryLearning(
        n_components=16, alpha=0.1, transform_alpha=transform_alpha, max_iter=4,
        random_state=0,
    ).fit(X)
    theirs = DictionaryLearning(
        n_components=16,
        alpha=0.1,
        fit_algorithm="lars",
        transform_algorithm="lasso_lars",
        transform_alpha=transform_alpha,
        max_iter=4,
        random_state=0,
    ).fit(X)
    np.testing.assert_array_equal(ours.components_, theirs.components_)
    np.testing.assert_array_equal(ours.transform(X), theirs.transform(X))
    np.testing.assert_array_equal(
        ours.inverse_transform(ours.transform(X)), theirs.inverse_transform(theirs.transform(X))
    )
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.history_["loss"] * X.shape[0], theirs.error_, rtol=1e-14)


def test_equals_minibatch_dictionary_learning(data):
    X = data[0]
    ours = LarsDictionaryLearning(
        n_components=16, alpha=0.1, transform_alpha=0.05, max_iter=2, batch_size=16,
        random_state=0,
    ).fit(X)
    theirs = MiniBatchDictionaryLearning(
        n_components=16,
        alpha=0.1,
        fit_algorithm="lars",
        transform_algorithm="lasso_lars",
        transform_alpha=0.05,
        max_iter=2,
        batch_size=16,
        tol=1e-8,
        random_state=0,
    ).fit(X)
    assert isinstance(ours.estimator_, MiniBatchDictionaryLearning)
    assert ours.estimator_.callback is None  # the logging hook is removed after fit
    np.testing.assert_array_equal(ours.components_, theirs.components_)
    np.testing.assert_array_equal(ours.transform(X), theirs.transform(X))
    assert ours.n_steps_ == theirs.n_steps_ == len(ours.history_["loss"])
    assert ours.n_iter_ == theirs.n_iter_ == 2


def test_positive_code_uses_cd_fit_and_positive_lars_transform(data):
    X = data[0]
    with warnings.catch_warnings():
        # coordinate descent may stop at its iteration cap on the coding sub-problem
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = LarsDictionaryLearning(
            n_components=16, alpha=0.1, max_iter=3, positive_code=True, random_state=0
        ).fit(X)
        theirs = DictionaryLearning(
            n_components=16,
            alpha=0.1,
            fit_algorithm="cd",
            transform_algorithm="lasso_lars",
            positive_code=True,
            max_iter=3,
            random_state=0,
        ).fit(X)
    np.testing.assert_array_equal(ours.components_, theirs.components_)
    codes = ours.transform(X)
    np.testing.assert_array_equal(codes, theirs.transform(X))
    assert codes.min() >= 0
    assert ours.estimator_.fit_algorithm == "cd"
    assert ours.estimator_.transform_algorithm == "lasso_lars"


# ------------------------------------------------------------------- fitted state
def test_fitted_attributes(data):
    X = data[0]
    lars = LarsDictionaryLearning(n_components=12, max_iter=3, random_state=0).fit(X)
    assert isinstance(lars.estimator_, DictionaryLearning)
    assert lars.estimator_.fit_algorithm == "lars"
    assert lars.estimator_.transform_algorithm == "lasso_lars"
    assert lars.estimator_.transform_alpha == lars.alpha
    assert lars.components_.shape == (12, 8)
    assert lars.intercept_.shape == (8,) and not lars.intercept_.any()
    assert lars.n_features_in_ == 8
    assert lars.n_iter_ == lars.n_steps_ == 3
    assert 0 < lars.n_active_ <= 8
    assert set(lars.history_) == {"step", "loss", "flops"}
    assert {len(values) for values in lars.history_.values()} == {3}
    assert lars.history_["flops"][-1] == lars.training_flops_
    assert np.all(np.diff(lars.history_["loss"]) <= 1e-12)  # alternating minimisation
    norms = np.linalg.norm(lars.components_, axis=1)
    assert np.all(norms <= 1 + 1e-12)
    assert lars.transform(X).shape == (X.shape[0], 12)
    assert list(lars.get_feature_names_out())[:2] == [
        "larsdictionarylearning0",
        "larsdictionarylearning1",
    ]


def test_n_components_defaults_to_n_features(data):
    lars = LarsDictionaryLearning(max_iter=2, random_state=0).fit(data[0])
    assert lars.components_.shape == (8, 8)


def test_inverse_transform(data):
    X = data[0]
    lars = LarsDictionaryLearning(n_components=16, max_iter=3, random_state=0).fit(X)
    codes = lars.transform(X)
    np.testing.assert_allclose(lars.inverse_transform(codes), codes @ lars.components_)
    with pytest.raises(ValueError, match="components"):
        lars.inverse_transform(codes[:, :5])


def test_score_is_negative_objective_and_prefers_better_fits(data):
    X = data[0]
    short = LarsDictionaryLearning(n_components=16, alpha=0.1, max_iter=1, random_state=0)
    long = clone(short).set_params(max_iter=5)
    short.fit(X)
    long.fit(X)
    for lars in (short, long):
        codes = lars.transform(X)
        objective = 0.5 * np.sum((X - codes @ lars.components_) ** 2, axis=1) + 0.1 * np.sum(
            np.abs(codes), axis=1
        )
        assert np.isfinite(lars.score(X))
        np.testing.assert_allclose(lars.score(X), -objective.mean(), rtol=1e-12)
    assert long.score(X) > short.score(X)


def test_score_uses_transform_alpha(data):
    X = data[0]
    lars = LarsDictionaryLearning(
        n_components=16, alpha=0.1, transform_alpha=0.5, max_iter=2, random_state=0
    ).fit(X)
    codes = lars.transform(X)
    objective = 0.5 * np.sum((X - codes @ lars.components_) ** 2, axis=1) + 0.5 * np.sum(
        np.abs(codes), axis=1
    )
    np.testing.assert_allclose(lars.score(X), -objective.mean(), rtol=1e-12)


def test_grid_search_with_mcc_scorer(data):
    X, _, codes = data
    search = GridSearchCV(
        LarsDictionaryLearning(n_components=16, max_iter=3, random_state=0),
        {"alpha": [0.05, 0.2]},
        scoring=mcc_scorer,
        cv=2,
    ).fit(X, codes)
    # The same search over scikit-learn's estimator scores every candidate identically.
    reference = GridSearchCV(
        DictionaryLearning(
            n_components=16, max_iter=3, random_state=0, fit_algorithm="lars",
            transform_algorithm="lasso_lars",
        ),
        {"alpha": [0.05, 0.2]},
        scoring=mcc_scorer,
        cv=2,
    ).fit(X, codes)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"],
        rtol=1e-12,
    )
    assert search.best_params_ == reference.best_params_


def test_y_is_ignored(data):
    X, _, codes = data
    with_y = LarsDictionaryLearning(n_components=16, max_iter=2, random_state=0).fit(X, codes)
    without = LarsDictionaryLearning(n_components=16, max_iter=2, random_state=0).fit(X)
    np.testing.assert_array_equal(with_y.components_, without.components_)


def test_clone_and_pickle(data):
    X = data[0]
    lars = LarsDictionaryLearning(n_components=16, alpha=0.1, max_iter=3, random_state=0)
    cloned = clone(lars)
    assert cloned.get_params() == lars.get_params()
    lars.fit(X)
    assert not hasattr(clone(lars), "components_")
    restored = pickle.loads(pickle.dumps(lars))
    np.testing.assert_array_equal(restored.transform(X), lars.transform(X))
    np.testing.assert_array_equal(restored.components_, lars.components_)


@pytest.mark.parametrize("batch_size", [None, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(data, dtype, batch_size):
    X = data[0].astype(dtype)
    lars = LarsDictionaryLearning(
        n_components=16, max_iter=2, batch_size=batch_size, random_state=0
    ).fit(X)
    assert lars.components_.dtype == dtype
    assert lars.transform(X).dtype == dtype
    assert lars.fit_transform(X).dtype == dtype
    assert lars.inverse_transform(lars.transform(X)).dtype == dtype
    # codes of other-dtype data follow that data
    other = np.float64 if dtype == np.float32 else np.float32
    assert lars.transform(X.astype(other)).dtype == other


def test_float32_and_float64_agree(data):
    X = data[0]
    fit64 = LarsDictionaryLearning(n_components=16, max_iter=2, random_state=0).fit(X)
    fit32 = LarsDictionaryLearning(n_components=16, max_iter=2, random_state=0).fit(
        X.astype(np.float32)
    )
    np.testing.assert_allclose(fit32.components_, fit64.components_, atol=1e-3)


# -------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "params, name",
    [
        ({"alpha": -0.1}, "alpha"),
        ({"transform_alpha": -1.0}, "transform_alpha"),
        ({"n_components": 0}, "n_components"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
        ({"batch_size": 0}, "batch_size"),
        ({"positive_code": "yes"}, "positive_code"),
    ],
)
def test_bad_parameters_raise(data, params, name):
    with pytest.raises(ValueError, match=name):
        LarsDictionaryLearning(**params).fit(data[0])


def test_nan_input_raises(data):
    X = data[0].copy()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LarsDictionaryLearning(max_iter=2).fit(X)
    lars = LarsDictionaryLearning(max_iter=2, random_state=0).fit(data[0])
    with pytest.raises(ValueError, match="NaN"):
        lars.transform(X)


def test_wrong_feature_count_raises(data):
    X = data[0]
    lars = LarsDictionaryLearning(n_components=16, max_iter=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="features"):
        lars.transform(X[:, :5])


def test_transform_before_fit_raises(data):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        LarsDictionaryLearning().transform(data[0])


@pytest.mark.parametrize("batch_size", [None, 16])
def test_input_is_not_modified(data, batch_size):
    X = data[0].copy()
    before = X.copy()
    lars = LarsDictionaryLearning(
        n_components=16, max_iter=2, batch_size=batch_size, random_state=0
    ).fit(X)
    lars.transform(X)
    lars.score(X)
    np.testing.assert_array_equal(X, before)


# -------------------------------------------------------------------------- FLOPs
def test_training_flops_grow_with_max_iter(data):
    X = data[0]
    flops = []
    for max_iter in (1, 3, 6):
        lars = LarsDictionaryLearning(
            n_components=16, max_iter=max_iter, tol=0.0, random_state=0
        ).fit(X)
        assert lars.n_iter_ == max_iter
        flops.append(lars.training_flops_)
        assert lars.training_flops_ == lars_dictionary_learning_flops(
            8, 16, X.shape[0], lars.n_iter_, n_active=lars.n_active_
        )
    assert 0 < flops[0] < flops[1] < flops[2]


def test_minibatch_flops_count_steps(data):
    X = data[0]
    lars = LarsDictionaryLearning(
        n_components=16, max_iter=2, batch_size=16, random_state=0
    ).fit(X)
    assert lars.training_flops_ == lars_dictionary_learning_flops(
        8, 16, 16, lars.n_steps_, n_active=lars.n_active_
    )


def test_inference_flops_are_linear_in_n_samples(data):
    lars = LarsDictionaryLearning(n_components=16, max_iter=2, random_state=0).fit(data[0])
    one = lars.inference_flops(1)
    assert one > 0
    assert lars.inference_flops(0) == 0
    for n_samples in (2, 10, 1000):
        assert lars.inference_flops(n_samples) == pytest.approx(n_samples * one, rel=1e-9)


def test_lars_flops_formula():
    M, N, K = 8, 16, 3
    coding = 2 * M * N + N + sum(2 * N * k + 3 * k**2 + 8 * N for k in range(1, K + 1))
    assert lars_dictionary_learning_flops(M, N, 5, n_active=K, learn_dictionary=False) == (
        5 * (coding + 2 * M * N)
    )
    n = 100
    per_iteration = (
        2 * N * N * M
        + n * coding
        + 2 * n * N * N
        + 2 * n * M * N
        + N * (2 * N * M + 5 * M)
        + 2 * n * M * N
        + 3 * n * M
        + 2 * n * N
    )
    assert lars_dictionary_learning_flops(M, N, n, 7, n_active=K) == 7 * per_iteration
    # None: the longest path, min(M, N) steps
    assert lars_dictionary_learning_flops(M, N, n, n_active=None) == (
        lars_dictionary_learning_flops(M, N, n, n_active=min(M, N))
    )
    with pytest.raises(ValueError, match="n_active"):
        lars_dictionary_learning_flops(M, N, n, n_active=-1)
    with pytest.raises(ValueError, match="n_samples"):
        lars_dictionary_learning_flops(M, N, -1)


def test_recovers_ground_truth_with_enough_iterations():
    # The paper's task, small: 8 alternating steps on 96 samples recover most of the
    # dictionary (measured 0.81 dictionary MCC, 0.60 code MCC; random codes score 0.16).
    X, dictionary, codes = make_sparse_dictionary_data(96, random_state=1)
    lars = LarsDictionaryLearning(n_components=16, max_iter=8, random_state=0).fit(X)
    chance = mean_corr_coef(codes, np.random.default_rng(0).standard_normal(codes.shape))
    assert chance < 0.2
    assert mean_corr_coef(codes, lars.transform(X)) > 0.55
    assert dictionary_mcc(dictionary, lars.components_) > 0.75


def test_full_batch_step_reports_the_mean_objective_per_iteration(data):
    from sklearn_sparsegap._baselines import _fit_dictionary_learning

    X = data[0]
    estimator = DictionaryLearning(n_components=16, alpha=0.2, max_iter=3, fit_algorithm="lars",
                                   transform_algorithm="lasso_lars", random_state=0)  # fmt: skip
    codes, n_iter, n_steps, losses = _fit_dictionary_learning(estimator, X)
    assert codes.shape == (X.shape[0], 16) and n_iter == n_steps == estimator.n_iter_
    np.testing.assert_allclose(losses * X.shape[0], estimator.error_)


def test_minibatch_step_records_each_minibatch_and_leaves_no_callback(data):
    from sklearn_sparsegap._baselines import _fit_minibatch_dictionary_learning

    X = data[0]
    estimator = MiniBatchDictionaryLearning(n_components=16, alpha=0.2, max_iter=2,
                                            batch_size=16, random_state=0)  # fmt: skip
    codes, n_iter, n_steps, losses = _fit_minibatch_dictionary_learning(
        estimator, X, algorithm="lasso_lars", alpha=0.2, positive=False
    )
    assert codes.shape == (16, 16)
    assert (n_iter, n_steps) == (estimator.n_iter_, estimator.n_steps_)
    assert 0 < losses.shape[0] <= n_steps and np.isfinite(losses).all()
    # The recording callback is removed: the fitted estimator pickles and clones.
    assert estimator.callback is None
    pickle.loads(pickle.dumps(estimator))
