"""Feature statistics and the offline explain/score protocols on latents of known meaning."""

import numpy as np
import pytest

from sklearn_sparsegap.interpret import (
    NGramExplainer,
    TokenVocabulary,
    compute_feature_statistics,
    detection_metrics,
    explain_and_score,
)

from _interpret_data import (
    BIGRAM,
    BIGRAM_LATENT,
    DEAD_LATENT,
    FIRES_ON,
    RANDOM_LATENT,
    TIED_LATENT,
    TOKEN_LATENT,
    VOCAB,
    KnownLatents,
    make_activations,
    make_tokens,
)


@pytest.fixture(scope="module")
def data():
    metadata = make_tokens()
    X = make_activations(metadata)
    encoder = KnownLatents()
    stats = compute_feature_statistics(encoder, X, metadata, vocabulary=VOCAB,
                                       batch_size=1000)
    return X, metadata, encoder, stats


def test_scalar_statistics_match_the_full_code_matrix(data):
    X, _, encoder, stats = data
    codes = encoder.transform(X)
    np.testing.assert_array_equal(stats.n_firing, (codes > 0).sum(axis=0))
    np.testing.assert_allclose(stats.frequency, (codes > 0).mean(axis=0))
    np.testing.assert_allclose(stats.max_activation, codes.max(axis=0), rtol=1e-6)
    live = ~stats.dead
    expected_mean = codes.sum(axis=0)[live] / (codes > 0).sum(axis=0)[live]
    np.testing.assert_allclose(stats.mean_activation[live], expected_mean, rtol=1e-6)
    np.testing.assert_array_equal(np.flatnonzero(stats.dead), [DEAD_LATENT])
    assert np.isnan(stats.mean_activation[DEAD_LATENT])


def test_top_examples_are_the_largest_codes_with_ties_to_the_earliest_rows(data):
    X, _, encoder, stats = data
    codes = encoder.transform(X)
    for latent in range(5):
        column = codes[:, latent]
        firing = np.flatnonzero(column > 0)
        order = firing[np.argsort(-column[firing], kind="stable")][: stats.n_top]
        got = stats.example_rows[latent, : stats.n_top]
        np.testing.assert_array_equal(got[got >= 0], order)
    # Every activation of the tied latent is 1.0: the top rows are its first firing rows.
    tied = np.flatnonzero(codes[:, TIED_LATENT] > 0)[: stats.n_top]
    np.testing.assert_array_equal(stats.example_rows[TIED_LATENT, : stats.n_top], tied)


def test_statistics_do_not_depend_on_the_batch_size(data):
    X, metadata, encoder, stats = data
    other = compute_feature_statistics(encoder, X, metadata, vocabulary=VOCAB,
                                       batch_size=37)
    for name in ("n_firing", "example_rows", "example_quantile", "random_tokens",
                 "context_tokens"):
        np.testing.assert_array_equal(getattr(other, name), getattr(stats, name), name)
    np.testing.assert_allclose(other.context_activations, stats.context_activations)
    np.testing.assert_allclose(other.mean_activation, stats.mean_activation)


def test_contexts_stay_inside_their_document_and_carry_the_latents_codes(data):
    X, metadata, encoder, stats = data
    codes = encoder.transform(X)
    document, token = metadata["document"], metadata["token"]
    for latent in (TOKEN_LATENT, BIGRAM_LATENT, RANDOM_LATENT):
        for context in stats.top_contexts(latent) + stats.quantile_contexts(latent):
            row, centre = context["row"], context["centre"]
            rows = np.arange(row - centre, row - centre + len(context["token_ids"]))
            assert np.all(document[rows] == document[row])
            np.testing.assert_array_equal(context["token_ids"], token[rows])
            np.testing.assert_allclose(context["activations"], codes[rows, latent],
                                       rtol=1e-6)
            assert context["tokens"][centre] == VOCAB[token[row]]
            # Cut at the document's edges rather than spilling into the next one.
            start, stop = rows[0], rows[-1]
            assert start == row - stats.left or document[start - 1] != document[row]
            assert stop == row + stats.right or stop + 1 == len(document) or (
                document[stop + 1] != document[row]
            )
    top = stats.top_contexts(TOKEN_LATENT)
    assert all(c["tokens"][c["centre"]] == VOCAB[FIRES_ON] for c in top)


def test_quantile_samples_span_the_activation_range_without_the_top_examples(data):
    _, _, _, stats = data
    latent = RANDOM_LATENT
    quantile = stats.quantile_contexts(latent)
    bins = [c["quantile"] for c in quantile]
    assert sorted(set(bins)) == list(range(10))
    assert len(quantile) == 50
    values = np.array([c["activations"][c["centre"]] for c in quantile])
    medians = [np.median(values[np.array(bins) == b]) for b in range(10)]
    assert np.all(np.diff(medians) > 0)
    top_rows = set(stats.example_rows[latent, : stats.n_top].tolist())
    assert not top_rows & {c["row"] for c in quantile}


def test_random_windows_never_fire_and_are_distinct(data):
    X, metadata, encoder, stats = data
    codes = encoder.transform(X)
    token = metadata["token"]
    for latent in (TOKEN_LATENT, RANDOM_LATENT):
        windows = stats.random_tokens[latent]
        assert (windows[:, 0] >= 0).sum() == 100
        # Locate each window by its tokens (documents are cut into 32-token windows).
        starts = np.arange(0, len(token), stats.window_length)
        for window in windows:
            ids = window[window >= 0]
            match = [s for s in starts if np.array_equal(token[s : s + len(ids)], ids)]
            assert match, "window tokens do not come from the activation set"
            assert np.all(codes[match[0] : match[0] + len(ids), latent] == 0)
        assert len({tuple(w) for w in windows.tolist()}) == len(windows)


def test_memmap_input_and_logit_effects(tmp_path, data):
    X, metadata, encoder, stats = data
    path = tmp_path / "acts.npy"
    np.save(path, X)
    mapped = np.load(path, mmap_mode="r")
    W_U = np.random.default_rng(1).normal(size=(len(VOCAB), X.shape[1]))
    from_disk = compute_feature_statistics(encoder, mapped, metadata, vocabulary=VOCAB,
                                           W_U=W_U, n_logits=4)
    np.testing.assert_array_equal(from_disk.example_rows, stats.example_rows)
    effects = W_U @ encoder.components_.T
    for latent in range(5):
        np.testing.assert_array_equal(
            from_disk.top_logit_tokens[latent], np.argsort(-effects[:, latent])[:4]
        )
        np.testing.assert_array_equal(
            from_disk.bottom_logit_tokens[latent], np.argsort(effects[:, latent])[:4]
        )
    promoted = from_disk.logit_effects(0)["top"]
    assert promoted[0][0] == VOCAB[np.argmax(effects[:, 0])]


def test_works_with_a_library_encoder_and_a_tokenizer_like_vocabulary(data):
    from sklearn_sparsegap import SAEEncoder

    X, metadata, _, _ = data
    X = X[:2000]
    metadata = {key: value[:2000] for key, value in metadata.items()}
    encoder = SAEEncoder(8, alpha=0.01, max_iter=3, random_state=0).fit(X)

    class Tokenizer:
        def __len__(self):
            return len(VOCAB)

        def decode(self, ids):
            return "".join(VOCAB[i] for i in ids)

    stats = compute_feature_statistics(encoder, X, metadata, vocabulary=Tokenizer(),
                                       batch_size=300)
    codes = encoder.transform(X)
    np.testing.assert_array_equal(stats.n_firing, (codes > 0).sum(axis=0))
    live = int(np.flatnonzero(~stats.dead)[0])
    context = stats.top_contexts(live)[0]
    assert context["tokens"] == [VOCAB[i] for i in context["token_ids"]]


def test_bad_input_is_rejected_with_the_argument_named(data):
    X, metadata, encoder, _ = data
    with pytest.raises(ValueError, match="'position'"):
        compute_feature_statistics(encoder, X, {"document": metadata["document"],
                                                "token": metadata["token"]})
    short = {key: value[:-1] for key, value in metadata.items()}
    with pytest.raises(ValueError, match="one entry per row"):
        compute_feature_statistics(encoder, X, short)
    shuffled = dict(metadata, document=np.roll(metadata["document"], 10))
    with pytest.raises(ValueError, match="contiguous"):
        compute_feature_statistics(encoder, X, shuffled)
    with pytest.raises(ValueError, match="batch_size"):
        compute_feature_statistics(encoder, X, metadata, batch_size=0)

    class WrongWidth(KnownLatents):
        def transform(self, X):
            return super().transform(X)[:, :3]

    with pytest.raises(ValueError, match="expected"):
        compute_feature_statistics(WrongWidth(), X, metadata)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TokenVocabulary(["a"]).string(3)


def test_detection_metrics_agree_with_hand_counts():
    y_true = [1, 1, 1, 0, 0, 0, 0, 1]
    y_pred = [1, 0, 1, 0, 1, 0, 0, 1]
    m = detection_metrics(y_true, y_pred)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 3)
    assert m["precision"] == 0.75 and m["recall"] == 0.75 and m["f1"] == 0.75
    assert m["balanced_accuracy"] == 0.75
    macro = detection_metrics(y_true, [1] * 8, f1_average="macro")
    assert macro["f1"] == pytest.approx((2 / 3 + 0) / 2)


@pytest.mark.parametrize("protocol", ["paper", "delphi"])
def test_offline_explainer_recovers_planted_token_and_bigram(data, protocol):
    _, _, _, stats = data
    results = explain_and_score(stats, NGramExplainer(), protocol=protocol, min_firing=10)
    rows = {(lat, sc): i for i, (lat, sc) in
            enumerate(zip(results["latent"], results["scorer"]))}
    token_row = rows[(TOKEN_LATENT, "detection")]
    assert results["protocol"][token_row] == protocol
    assert results["status"][token_row] == "scored"
    assert f'"{VOCAB[FIRES_ON]}"' in results["explanation"][token_row]
    if protocol == "delphi":
        assert results["f1"][token_row] == 1.0
    else:
        # Every positive is found; a negative (another latent's top context) is
        # predicted positive exactly when the planted token happens to occur in it.
        assert results["tp"][token_row] == 5 and results["fn"][token_row] == 0
        assert results["f1"][token_row] >= 0.6
    assert results["f1_average"][token_row] == (
        "positive" if protocol == "delphi" else "macro"
    )
    if protocol == "delphi":
        bigram_row = rows[(BIGRAM_LATENT, "detection")]
        explanation = results["explanation"][bigram_row]
        assert f'["{VOCAB[BIGRAM[0]]}", "{VOCAB[BIGRAM[1]]}"]' in explanation
        assert f'["{VOCAB[BIGRAM[1]]}"]' not in explanation  # not precise alone
        assert results["f1"][bigram_row] >= 0.9
        fuzz_row = rows[(TOKEN_LATENT, "fuzzing")]
        assert results["f1"][fuzz_row] >= 0.9
        n = results["n_positive"][token_row]
        assert n == results["n_negative"][token_row] > 0


def test_random_latent_scores_near_chance_and_dead_latent_is_reported(data):
    _, _, _, stats = data
    results = explain_and_score(stats, NGramExplainer(), protocol="delphi",
                                min_firing=10, scorers=("detection",))
    random_row = results["latent"].index(RANDOM_LATENT)
    assert results["status"][random_row] == "scored"
    assert abs(results["balanced_accuracy"][random_row] - 0.5) <= 0.15
    assert results["f1"][random_row] < 0.5
    dead_row = results["latent"].index(DEAD_LATENT)
    assert results["status"][dead_row] == "dead: never fires"
    assert np.isnan(results["f1"][dead_row])
    skipped = explain_and_score(stats, NGramExplainer(), protocol="delphi",
                                latents=[TOKEN_LATENT], scorers=("detection",))
    assert skipped["status"][0].startswith("skipped: fires on")
    assert np.isnan(skipped["f1"][0])


def test_a_latent_firing_everywhere_is_skipped_by_delphi_with_the_reason():
    class Dense:
        components_ = np.eye(1)

        def transform(self, X):
            return 1.0 + X[:, :1]

    n = 640
    rng = np.random.default_rng(0)
    metadata = {"document": np.arange(n) // 64, "position": np.arange(n) % 64,
                "token": rng.integers(0, 20, n)}
    stats = compute_feature_statistics(Dense(), rng.uniform(size=(n, 1)), metadata,
                                       vocabulary=[f"t{i}" for i in range(20)])
    results = explain_and_score(stats, NGramExplainer(), protocol="delphi", min_firing=1)
    assert results["status"][0] == (
        "skipped: 0 windows of 32 tokens where it never fires (too dense for "
        "non-activating negatives)"
    )
    # The paper's protocol needs no non-activating windows (its negatives come from
    # another latent), so only the lack of another latent stops it here.
    paper = explain_and_score(stats, NGramExplainer(), protocol="paper", min_firing=1)
    assert paper["status"][0].startswith("skipped: 5 positive and 0 negative")


def test_protocol_arguments_are_validated(data):
    _, _, _, stats = data
    with pytest.raises(ValueError, match="protocol"):
        explain_and_score(stats, NGramExplainer(), protocol="mine")
    with pytest.raises(ValueError, match="scorers"):
        explain_and_score(stats, NGramExplainer(), protocol="paper", scorers=("fuzzing",))
    with pytest.raises(ValueError, match="latents"):
        explain_and_score(stats, NGramExplainer(), latents=[99])


class RecordingBackend(NGramExplainer):
    """The offline back end, remembering what the protocol showed it."""

    def __init__(self):
        super().__init__()
        self.explained, self.detected = [], []

    def explain(self, examples, *, logits=None, background=None):
        self.explained.append((examples, logits, background))
        return super().explain(examples, logits=logits, background=background)

    def detect(self, explanation, windows):
        self.detected.append(windows)
        return super().detect(explanation, windows)


def test_paper_protocol_shows_the_documented_examples(data):
    X, metadata, encoder, _ = data
    W_U = np.random.default_rng(2).normal(size=(len(VOCAB), X.shape[1]))
    stats = compute_feature_statistics(encoder, X, metadata, vocabulary=VOCAB, W_U=W_U)
    backend = RecordingBackend()
    explain_and_score(stats, backend, protocol="paper", latents=[TOKEN_LATENT])
    (examples, logits, _), = backend.explained
    top = stats.top_contexts(TOKEN_LATENT, left=30, right=5)
    assert [e["tokens"] for e in examples] == [c["tokens"] for c in top[:5]]
    for example, context in zip(examples, top):
        assert np.flatnonzero(example["marked"]).tolist() == [context["centre"]]
        assert context["centre"] <= 30 and len(example["tokens"]) - context["centre"] <= 6
    assert logits == stats.logit_effects(TOKEN_LATENT)
    (windows,) = backend.detected  # one batch of 10
    positives = [c["tokens"] for c in top[5:10]]
    assert len(windows) == 10 and all(p in windows for p in positives)
    others = [w for w in windows if w not in positives]
    assert len(others) == 5
    assert any(
        all(w in [c["tokens"] for c in stats.top_contexts(o, left=30, right=5)[:5]]
            for w in others)
        for o in range(5) if o != TOKEN_LATENT
    )


def test_delphi_protocol_batches_quantile_positives_and_quiet_negatives(data):
    _, _, _, stats = data
    backend = RecordingBackend()
    explain_and_score(stats, backend, protocol="delphi", latents=[BIGRAM_LATENT],
                      scorers=("detection",), min_firing=10)
    assert [len(batch) for batch in backend.detected] == [5] * 20
    shown = [w for batch in backend.detected for w in batch]
    positives = [c["tokens"] for c in stats.quantile_contexts(BIGRAM_LATENT, left=15,
                                                              right=16)]
    negatives = [c["tokens"] for c in stats.random_contexts(BIGRAM_LATENT)]
    assert sorted(map(tuple, shown)) == sorted(map(tuple, positives + negatives[50:100]))
    (_, logits, background), = backend.explained
    assert logits is None and background == negatives[:50]
    # Shuffled: the positives are not all shown first.
    labels = [w in positives for w in shown]
    assert labels != sorted(labels, reverse=True)
