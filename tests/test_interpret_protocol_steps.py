"""The named steps of ``explain_and_score``."""

import threading
import time

import numpy as np
import pytest

from sklearn_sparsegap.interpret import (
    FeatureStatistics,
    NGramExplainer,
    TokenVocabulary,
)
from sklearn_sparsegap.interpret._protocols import (
    _COLUMNS,
    _as_columns,
    _check_protocol_arguments,
    _empty_row,
    _evaluate_latents,
    _negative_latents,
)


def _stats(example_rows, dead, n_top, vocabulary=("a", "b")):
    example_rows = np.asarray(example_rows)
    return FeatureStatistics(
        n_latents=len(example_rows), example_rows=example_rows, dead=np.asarray(dead),
        n_top=n_top, vocabulary=None if vocabulary is None else TokenVocabulary(vocabulary),
    )


@pytest.mark.parametrize("protocol, scorers, min_firing",
                         [("paper", ("detection",), 10),
                          ("delphi", ("detection", "fuzzing"), 200)])
def test_checked_arguments_take_the_protocols_defaults(protocol, scorers, min_firing):
    stats = _stats([[0], [1], [-1]], [False, False, True], 1)
    settings, got_scorers, latents, got_min, n_jobs = _check_protocol_arguments(
        stats, NGramExplainer(), protocol, None, None, None, None
    )
    assert settings["f1"] == ("macro" if protocol == "paper" else "positive")
    assert got_scorers == scorers and got_min == min_firing
    np.testing.assert_array_equal(latents, [0, 1, 2])
    assert n_jobs == 1  # NGramExplainer has no max_workers
    _, got_scorers, latents, got_min, n_jobs = _check_protocol_arguments(
        stats, NGramExplainer(), protocol, ["detection"], [2, 0], 3, 2
    )
    assert (got_scorers, got_min, n_jobs) == (("detection",), 3, 2)
    np.testing.assert_array_equal(latents, [2, 0])


def test_checked_arguments_take_n_jobs_from_the_backend_and_name_what_is_wrong():
    stats = _stats([[0], [1]], [False, False], 1)

    class Threaded(NGramExplainer):
        max_workers = 6

    assert _check_protocol_arguments(stats, Threaded(), "paper", None, None, None,
                                     None)[4] == 6
    cases = [
        (dict(protocol="other"), "protocol must be one of"),
        (dict(scorers=()), "non-empty subset"),
        (dict(latents=[2]), r"latents must be 1-D integers in \[0, 2\)"),
        (dict(latents=[0.0]), "latents must be 1-D integers"),
        (dict(n_jobs=0), "n_jobs must be an integer >= 1, got 0"),
    ]
    for change, message in cases:
        arguments = dict(stats=stats, backend=NGramExplainer(), protocol="paper",
                         scorers=None, latents=None, min_firing=None, n_jobs=None)
        arguments.update(change)
        with pytest.raises(ValueError, match=message):
            _check_protocol_arguments(**arguments)
    with pytest.raises(ValueError, match="no vocabulary"):
        _check_protocol_arguments(_stats([[0]], [False], 1, vocabulary=None),
                                  NGramExplainer(), "paper", None, None, None, None)

    class NoFuzz:
        def explain(self):
            pass

        def detect(self):
            pass

    with pytest.raises(ValueError, match=r"callable fuzz\(\)"):
        _check_protocol_arguments(stats, NoFuzz(), "paper", None, None, None, None)


def test_negative_latents_fire_and_have_enough_top_contexts():
    # Top contexts are the first n_top columns; the rest are quantile samples.
    example_rows = [
        [1, 2, 3, 4],  # full
        [1, 2, -1, 9],  # two top contexts, a quantile sample
        [-1, -1, -1, -1],  # dead
        [5, -1, -1, -1],  # one
    ]
    stats = _stats(example_rows, [False, False, True, False], n_top=3)
    np.testing.assert_array_equal(_negative_latents(stats, 3), [0])
    np.testing.assert_array_equal(_negative_latents(stats, 2), [0, 1])
    np.testing.assert_array_equal(_negative_latents(stats, 1), [0, 1, 3])


@pytest.mark.parametrize("n_jobs", [1, 3])
def test_evaluated_latents_come_back_in_the_order_asked(n_jobs):
    threads = set()

    def evaluate(latent):
        threads.add(threading.get_ident())
        time.sleep(0.02 * (5 - latent))  # later latents finish first
        return [latent * 10]

    assert _evaluate_latents(evaluate, [4, 0, 3, 1, 2], n_jobs) == [
        [40], [0], [30], [10], [20]
    ]
    if n_jobs == 1:
        assert threads == {threading.get_ident()}


def test_rows_become_one_list_per_column_in_order():
    first = _empty_row(3, "paper", "detection", "ngram", "dead: never fires")
    second = dict(_empty_row(1, "delphi", "fuzzing", "ngram", "scored", "x"), f1=0.5,
                  extra="dropped")
    results = _as_columns([[first], [], [second]])
    assert tuple(results) == _COLUMNS
    assert results["latent"] == [3, 1] and results["scorer"] == ["detection", "fuzzing"]
    assert np.isnan(results["f1"][0]) and results["f1"][1] == 0.5
    assert "extra" not in results
    assert _as_columns([]) == {column: [] for column in _COLUMNS}
