"""The named steps of ``compute_feature_statistics``, each on a small hand-made input."""

import numpy as np
import pytest
import torch

from sklearn_sparsegap.interpret._features import (
    _activation_histograms,
    _batch_cuts,
    _check_encoder_and_X,
    _check_metadata,
    _context_rows,
    _document_layout,
    _KeptPerColumn,
    _offer_firing_tokens,
    _offer_quiet_windows,
    _quantile_examples,
    _quiet_window_tokens,
    _reencode_context_activations,
    _stream_latent_statistics,
)


def _layout(document, window_length):
    document = np.asarray(document)
    n = len(document)
    metadata = {"document": document, "position": np.arange(n), "token": np.arange(n)}
    arrays, starts = _check_metadata(metadata, n)
    return _document_layout(arrays["document"], starts, n, window_length)


class Relu:
    def __init__(self, n_latents=3, seed=0):
        self.components_ = np.eye(n_latents)
        self.requests = []

    def transform(self, X):
        self.requests.append(np.asarray(X).copy())
        return np.maximum(np.asarray(X), 0)


def test_document_layout_restarts_windows_at_every_document():
    document = [0] * 5 + [1] * 2 + [2] * 6
    layout = _layout(document, window_length=2)
    np.testing.assert_array_equal(layout.run_start, [0] * 5 + [5] * 2 + [7] * 6)
    np.testing.assert_array_equal(layout.run_stop, [5] * 5 + [7] * 2 + [13] * 6)
    np.testing.assert_array_equal(layout.window_starts, [0, 2, 4, 5, 7, 9, 11])
    np.testing.assert_array_equal(layout.window_id, [0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6])
    # No window spans two documents.
    for window in range(len(layout.window_starts)):
        assert len(set(np.asarray(document)[layout.window_id == window])) == 1


@pytest.mark.parametrize("batch_size", [1, 5, 16, 37, 10_000])
def test_batch_cuts_are_whole_windows_covering_every_row(batch_size):
    rng = np.random.default_rng(0)
    document = np.repeat(np.arange(30), rng.integers(1, 40, size=30))
    window_length = 8
    layout = _layout(document, window_length)
    cuts = _batch_cuts(layout.window_starts, len(document), batch_size)
    assert cuts[0] == 0 and cuts[-1] == len(document)
    assert np.all(np.diff(cuts) > 0)
    assert set(cuts[:-1].tolist()) <= set(layout.window_starts.tolist())
    # "Rounded to whole windows": a batch exceeds batch_size by less than a window.
    assert np.diff(cuts).max() < batch_size + window_length


def _stream(encoder, X, document, batch_size, **kwargs):
    layout = _layout(document, kwargs.pop("window_length", 4))
    cuts = _batch_cuts(layout.window_starts, len(X), batch_size)
    settings = dict(n_top=3, sample_size=5, n_random=4, threshold=0.0, seed=11)
    settings.update(kwargs)
    return _stream_latent_statistics(encoder, X, cuts, layout.window_id, X.shape[1],
                                     **settings)


def test_streamed_statistics_match_the_code_matrix_whatever_the_batching():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    X[:, 2] = -1.0  # a latent that never fires
    document = np.arange(120) // 30
    one = _stream(Relu(), X, document, batch_size=1000, threshold=0.25)
    codes = np.maximum(X, 0)
    firing = codes > 0.25
    np.testing.assert_array_equal(one.count, firing.sum(axis=0))
    np.testing.assert_allclose(one.total, np.where(firing, codes, 0).sum(axis=0),
                               rtol=1e-6)
    np.testing.assert_array_equal(one.maximum, np.where(firing, codes, 0).max(axis=0))
    assert one.count[2] == 0 and one.maximum[2] == 0
    for batch_size in (4, 9, 50):
        other = _stream(Relu(), X, document, batch_size=batch_size, threshold=0.25)
        np.testing.assert_array_equal(other.count, one.count)
        for kept in ("top", "sample", "quiet"):
            fill = [np.inf, -1, 0.0] if kept != "quiet" else [np.inf, -1]
            for got, expected in zip(getattr(other, kept).dense(fill),
                                     getattr(one, kept).dense(fill)):
                np.testing.assert_array_equal(got, expected, kept)


def test_offer_firing_tokens_keeps_the_largest_values_with_ties_to_the_earliest_row():
    codes = torch.tensor([[1.0, 0.0], [3.0, 2.0], [3.0, 0.0], [0.5, 2.0], [3.0, 2.0]])
    fires = codes > 0

    def offered(batches):
        top = _KeptPerColumn(2, 2, [np.float32])
        sample = _KeptPerColumn(2, 3, [np.float32])
        for start, stop in batches:
            _offer_firing_tokens(top, sample, codes[start:stop], fires[start:stop],
                                 start, seed=5)
        return top.dense([np.inf, -1, 0.0]), sample.dense([np.inf, -1, 0.0])

    (_, top_rows, top_values), (_, sample_rows, _) = offered([(0, 5)])
    np.testing.assert_array_equal(top_rows, [[1, 2], [1, 3]])
    np.testing.assert_array_equal(top_values, [[3.0, 3.0], [2.0, 2.0]])
    # The uniform sample holds only firing rows and does not depend on the batching,
    # not even on the order in which the batches come.
    assert set(sample_rows[1].tolist()) == {1, 3, 4}
    (_, rows2, _), (_, sample2, _) = offered([(3, 5), (0, 1), (1, 3)])
    np.testing.assert_array_equal(rows2, top_rows)
    np.testing.assert_array_equal(sample2, sample_rows)


def test_offer_quiet_windows_offers_exactly_the_windows_where_a_latent_is_silent():
    # A batch of three whole windows (ids 3, 4, 5) in the middle of a stream.
    fires = torch.tensor([[1, 0], [0, 0], [0, 0], [0, 0], [0, 1], [0, 0]], dtype=torch.bool)
    batch_window_id = np.array([3, 3, 4, 4, 5, 5])
    quiet = _KeptPerColumn(2, 10, [])
    _offer_quiet_windows(quiet, fires, batch_window_id, seed=1)
    _, windows = quiet.dense([np.inf, -1])
    assert set(windows[0][windows[0] >= 0].tolist()) == {4, 5}
    assert set(windows[1][windows[1] >= 0].tolist()) == {3, 4}


def test_activation_histograms_count_every_firing_token_on_zero_to_max():
    values = np.array([[0.5, 0.9, 1.5, 4.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    rows = np.array([[0, 1, 2, 3], [-1, -1, -1, -1]])
    maximum = np.array([4.0, 0.0], dtype=np.float32)
    counts, edges = _activation_histograms(rows, values, maximum, np.array([4, 0]), 4)
    np.testing.assert_array_equal(counts[0], [2, 1, 0, 1])
    np.testing.assert_array_equal(edges[0], [0, 1, 2, 3, 4])
    assert not counts[1].any() and not edges[1].any()  # never fires
    # A sample of 4 tokens out of 40 firing ones is scaled up to the 40.
    scaled, _ = _activation_histograms(rows, values, maximum, np.array([40, 0]), 4)
    assert scaled[0].sum() == 40


def test_quantile_examples_span_bins_in_order_and_leave_out_the_top_rows():
    n = 40
    rows = np.arange(n)[None, :]
    values = np.linspace(0.1, 4.0, n, dtype=np.float32)[None, :]
    top_rows = np.array([[39, 38, -1]])
    got_rows, bins = _quantile_examples(rows, values, top_rows, np.array([False]),
                                        n_quantiles=4, n_per_quantile=3, seed=7)
    assert not {38, 39} & set(got_rows[0].tolist())
    np.testing.assert_array_equal(bins[0], np.repeat(np.arange(4), 3))
    chosen = values[0, got_rows[0]]
    for b in range(4):  # strongest first inside a bin, and every bin above the last
        in_bin = chosen[bins[0] == b]
        assert np.all(np.diff(in_bin) < 0)
        if b:
            assert in_bin.min() > chosen[bins[0] == b - 1].max()
    again = _quantile_examples(rows, values, top_rows, np.array([False]), 4, 3, seed=7)
    np.testing.assert_array_equal(again[0], got_rows)
    # Bins no larger than n_per_quantile: every sampled row but the top ones, once.
    every, every_bins = _quantile_examples(rows, values, top_rows, np.array([False]),
                                           n_quantiles=4, n_per_quantile=10, seed=7)
    assert sorted(every[0][every[0] >= 0].tolist()) == list(range(38))
    np.testing.assert_array_equal(every_bins[0][every[0] >= 0],
                                  np.repeat(np.arange(4), [10, 10, 9, 9]))
    none, none_bins = _quantile_examples(rows, values, top_rows, np.array([False]), 4, 0, 7)
    assert none.shape == (1, 0) and none_bins.shape == (1, 0)
    dead, _ = _quantile_examples(rows, values, top_rows, np.array([True]), 4, 3, seed=7)
    assert np.all(dead == -1)


def test_context_rows_stop_at_the_document_edges():
    layout = _layout([0] * 4 + [1] * 6, window_length=3)
    example_rows = np.array([[5, 3], [-1, 9]])
    rows, inside = _context_rows(example_rows, layout, left=2, right=1)
    np.testing.assert_array_equal(rows[0, 0][inside[0, 0]], [4, 5, 6])  # row 3 is doc 0
    np.testing.assert_array_equal(rows[0, 1][inside[0, 1]], [1, 2, 3])  # row 4 is doc 1
    assert not inside[1, 0].any()  # no example
    np.testing.assert_array_equal(rows[1, 1][inside[1, 1]], [7, 8, 9])


def test_reencoded_context_activations_are_each_latents_codes_on_each_row():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2))
    encoder = Relu(2)
    context_rows = np.array([[[0, 1, 2], [5, 6, 7]], [[1, 2, 3], [9, 10, 11]]])
    inside = np.ones(context_rows.shape, dtype=bool)
    inside[1, 1, 2] = False
    got = _reencode_context_activations(encoder, X, context_rows, inside, batch_size=4)
    codes = np.maximum(X, 0).astype(np.float32)
    expected = np.where(inside, codes[context_rows, np.arange(2)[:, None, None]], 0)
    np.testing.assert_array_equal(got, expected)
    # Each needed row is encoded once, at most batch_size rows at a time.
    asked = np.concatenate(encoder.requests)
    assert len(asked) == len(np.unique(context_rows[inside]))
    assert max(len(r) for r in encoder.requests) <= 4


def test_quiet_window_tokens_are_the_chosen_windows_cut_at_their_document_end():
    layout = _layout([0] * 5 + [1] * 3, window_length=3)  # windows at 0, 3, 5
    token = np.arange(100, 108)
    quiet = _KeptPerColumn(2, 4, [])
    quiet.offer(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]), np.array([1, 2, 0]), [])
    got = _quiet_window_tokens(quiet, layout, token, n_random=3, window_length=3)
    np.testing.assert_array_equal(got[0], [[103, 104, -1], [105, 106, 107], [-1] * 3])
    np.testing.assert_array_equal(got[1], [[100, 101, 102], [-1] * 3, [-1] * 3])
    assert got.dtype == np.int32
    assert _quiet_window_tokens(quiet, layout, token, 0, 3).shape == (2, 0, 3)


def test_check_encoder_and_X_accepts_frames_lists_and_memmaps(tmp_path):
    pd = pytest.importorskip("pandas")
    encoder = Relu(2)
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}, index=[10, 20])
    components, X = _check_encoder_and_X(encoder, frame)
    np.testing.assert_array_equal(X, [[1, 3], [2, 4]])
    np.testing.assert_array_equal(components, np.eye(2))
    assert isinstance(_check_encoder_and_X(encoder, [[1.0, 2.0]])[1], np.ndarray)
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert _check_encoder_and_X(encoder, mapped)[1] is mapped  # never read whole
    with pytest.raises(ValueError, match="2-D"):
        _check_encoder_and_X(encoder, [1.0, 2.0])
    with pytest.raises(ValueError, match="no rows"):
        _check_encoder_and_X(encoder, np.zeros((0, 2)))
    with pytest.raises(ValueError, match="components_"):
        _check_encoder_and_X(object(), np.ones((1, 2)))
