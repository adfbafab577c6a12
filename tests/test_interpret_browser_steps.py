"""The named steps of ``write_feature_browser`` (no browser needed)."""

import json
import re

import numpy as np
import pytest

from sklearn_sparsegap.interpret import compute_feature_statistics
from sklearn_sparsegap.interpret._browser import (
    _append_list_row,
    _browser_data,
    _encode_contexts,
    _feature_page,
    _list_label,
    _render_page,
    _score_cells,
    _StringTable,
)

VOCABULARY = [" a", " b", " c", " d"]


class Relu:
    components_ = np.eye(2)

    def transform(self, X):
        return np.maximum(X, 0)


@pytest.fixture(scope="module")
def stats():
    X = np.array([[1.0, -1], [0, -1], [2.0, -1], [0, -1], [3.0, -1], [0.5, -1]])
    metadata = {"document": [0, 0, 0, 1, 1, 1], "position": [0, 1, 2, 0, 1, 2],
                "token": [0, 1, 2, 3, 0, 1]}
    W_U = np.array([[1.0, 0], [0, 1], [-1, 0], [0, 0]])
    return compute_feature_statistics(Relu(), X, metadata, vocabulary=VOCABULARY,
                                      W_U=W_U, n_logits=2, n_top=2, left=1, right=1)


def _row(**values):
    row = dict(protocol="paper", scorer="detection", backend="ngram", status="scored",
               explanation="", precision=np.nan, recall=np.nan, f1=np.nan,
               f1_average="macro", accuracy=np.nan)
    row.update(values)
    return row


def test_string_table_stores_each_string_once_in_first_seen_order():
    table = _StringTable()
    assert [table.index(t) for t in ["x", "y", "x", "z", "y"]] == [0, 1, 0, 2, 1]
    assert table.strings == ["x", "y", "z"]


def test_encoded_contexts_decode_back_to_their_tokens(stats):
    table = _StringTable()
    top = stats.top_contexts(0)
    encoded = _encode_contexts(top, table, None)
    assert len(encoded) == len(top) == 2
    for (ids, activations, centre), context in zip(encoded, top):
        assert [table.strings[i] for i in ids] == context["tokens"]
        assert centre == context["centre"]
        np.testing.assert_allclose(activations, context["activations"], atol=5e-5)
    assert len(_encode_contexts(top, table, 1)) == 1  # max_contexts


def test_list_label_has_the_explanation_then_the_distinct_top_tokens():
    top = [{"tokens": [" x", " the "], "centre": 1}, {"tokens": [" the"], "centre": 0},
           {"tokens": ["a", "b"], "centre": 0}]
    assert _list_label("articles", False, top) == "articles · top: the a"
    assert _list_label("", True, []) == "never fires"
    assert _list_label("", False, top) == "top: the a"
    assert _list_label("", False, []) == ""
    many = [{"tokens": [f"t{i}"], "centre": 0} for i in range(8)]
    assert _list_label("", False, many) == "top: t0 t1 t2 t3 t4"  # the first five


def test_list_row_shows_the_first_scored_f1_and_the_first_explanation(stats):
    index = {key: [] for key in ("id", "freq", "mean", "max", "f1", "dead", "text")}
    rows = [_row(status="unscored: timeout", explanation=""),
            _row(explanation="the token a", f1=0.5), _row(f1=0.9)]
    _append_list_row(index, stats, 0, rows, stats.top_contexts(0))
    _append_list_row(index, stats, 1, [], stats.top_contexts(1))
    assert index["id"] == [0, 1]
    assert index["f1"] == [0.5, None]
    assert index["text"][0].startswith("the token a · top:")
    assert index["dead"] == [False, True] and index["text"][1] == "never fires"
    assert index["mean"][1] is None  # NaN mean of a latent that never fires
    json.dumps(index, allow_nan=False)


def test_score_cells_are_plain_json_values():
    cells = _score_cells(_row(precision=np.float32(0.123456), recall=np.int64(1),
                              f1=float("nan"), accuracy=0.5))
    assert cells["precision"] == 0.1235 and type(cells["recall"]) is int
    assert cells["f1"] is None and cells["accuracy"] == 0.5
    assert set(cells) == {"protocol", "scorer", "backend", "status", "explanation",
                          "precision", "recall", "f1", "f1_average", "accuracy"}
    json.dumps(cells, allow_nan=False)


def test_feature_page_holds_histogram_contexts_scores_and_logits(stats):
    table = _StringTable()
    page = _feature_page(stats, 0, [_row(f1=1.0)], stats.top_contexts(0), table, None)
    assert page["n"] == 4 and page["peak"] == 3.0
    assert len(page["h"]) == stats.histogram_counts.shape[1]
    assert page["e"] == [0.0, 3.0]
    assert len(page["top"]) == 2 and page["scores"][0]["f1"] == 1.0
    # Atom 0 promotes " a" and suppresses " c" through W_U.
    assert table.strings[page["lt"][0][0]] == " a" and page["lt"][0][1] == 1.0
    assert table.strings[page["lb"][0][0]] == " c" and page["lb"][0][1] == -1.0


def test_browser_data_has_one_list_row_and_one_lazy_page_per_latent(stats):
    index, features = _browser_data(stats, {0: [_row(f1=0.75)]}, max_contexts=1)
    assert index["id"] == [0, 1] and index["f1"] == [0.75, None]
    assert index["meta"] == "2 latents · 6 tokens · 1 never fire"
    assert all(isinstance(f, str) for f in features)
    page = json.loads(features[0])
    assert len(page["top"]) == 1
    ids = page["top"][0][0]
    assert [index["strings"][i] for i in ids] == stats.top_contexts(0)[0]["tokens"]


def test_rendered_page_escapes_the_title_and_fills_each_placeholder_once():
    index = {"strings": ["</script>", "__SPARSEGAP_FEATURES__"]}
    page = _render_page("<b>&", index, ["{}"])
    assert "<title>&lt;b&gt;&amp;</title>" in page
    assert "__SPARSEGAP_TITLE__" not in page and "__SPARSEGAP_INDEX__" not in page
    embedded = re.search(r'id="sg-index">(.*?)</script>', page, flags=re.S).group(1)
    assert json.loads(embedded) == index
