"""``sparsegap gap`` and ``amortisation_gap_report``: end to end on our own saved SAE and on
tiny SAEs saved by SAELens, sparsify and dictionary_learning code, the numbers checked
against independent computations, the bad inputs, and the report in headless Chromium."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch

from sklearn_sparsegap import SAEEncoder, SAEPlusITO, make_sparse_dictionary_data
from sklearn_sparsegap.activations import (
    extract_activations,
    fraction_variance_unexplained,
    load_activations,
)
from sklearn_sparsegap.activations._rows import row_norms, usable_rows
from sklearn_sparsegap.cli import main
from sklearn_sparsegap.experiments import amortisation_gap_report
from sklearn_sparsegap.experiments._gap import format_table, loss_note, parse_budget
from sklearn_sparsegap.interop import load_sae, save_sae

VOCAB, WIDTH, LATENTS, K = 24, 12, 32, 3


class TinyLM(torch.nn.Module):
    """Embedding, two residual blocks, unembedding: a causal-LM-shaped model."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH) for _ in range(2))
        self.head = torch.nn.Linear(WIDTH, VOCAB)

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids)
        for block in self.blocks:
            hidden = hidden + torch.tanh(block(hidden))
        return self.head(hidden)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of 32 sequences of 12 tokens (384 rows, 32 of them at position 0)."""
    model = TinyLM()
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(1, VOCAB, (8, 12), generator=generator) for _ in range(4)]
    path = tmp_path_factory.mktemp("store") / "acts"
    extract_activations(model, batches, module="blocks.0", path=path, progress=False)
    return model, path


@pytest.fixture(scope="module")
def our_sae(store, tmp_path_factory):
    _, path = store
    X, _ = load_activations(path)
    sae = SAEEncoder(n_components=LATENTS, activation="topk", n_nonzero_coefs=K, alpha=0.0,
                     max_iter=40, random_state=0, device="cpu").fit(np.asarray(X))
    folder = tmp_path_factory.mktemp("sae") / "ours"
    save_sae(sae, folder, format="saelens")
    return folder


def _used_rows(path):
    X, metadata = load_activations(path)
    X = np.asarray(X, dtype=np.float32)
    mask = usable_rows(metadata, len(X), norms=row_norms(X, len(X)))
    return X[mask], mask


def test_store_end_to_end_numbers_and_files(store, our_sae, tmp_path):
    model, path = store
    out = tmp_path / "run"
    record = amortisation_gap_report(our_sae, path, out=out, block_rows=50, model=model,
                                     module="blocks.0", n_loss_sequences=4, progress=False)
    table = record["table"]
    assert table["method"][0].startswith("SAE (topk k=3")
    assert [m.split()[-1] for m in table["method"][1:]] == ["omp-l0", "omp-2x", "fista-l0"]
    assert len({len(column) for column in table.values()}) == 1
    # ITO at the same L0 never worse than the SAE, never denser.
    assert table["fvu"][1] <= table["fvu"][0] + 1e-7
    assert table["mean_l0"][1] <= table["mean_l0"][0] + 1e-9
    assert table["fvu"][2] <= table["fvu"][0] + 1e-7  # the larger budget keeps the better
    assert record["answer"].startswith(
        f"ITO at the same L0 recovers {100 * table['fvu_reduction'][1]:.1f}% of the variance")
    # Position 0 left out, said so, and the FVU is the independent computation's.
    X_used, mask = _used_rows(path)
    assert record["settings"]["n_rows"] == len(X_used) == int(mask.sum()) <= 384 - 32
    assert "32 position-0 rows" in record["settings"]["rows_note"]
    sae = load_sae(our_sae)
    expected = fraction_variance_unexplained(X_used, sae.inverse_transform(sae.transform(X_used)))
    assert table["fvu"][0] == pytest.approx(expected, rel=1e-5)
    ito = SAEPlusITO(sae, prefit=True).fit(X_used)
    expected_ito = fraction_variance_unexplained(X_used, ito.inverse_transform(ito.transform(X_used)))
    assert table["fvu"][1] == pytest.approx(expected_ito, rel=1e-4)
    assert table["flops_per_row"][0] == pytest.approx(sae.inference_flops(len(X_used)) / len(X_used))
    assert table["flops_ratio"][1] > 1
    # Loss recovered from the spliced forward pass, every method on the same tokens.
    assert all(np.isfinite(score) for score in table["loss_recovered"])
    # Predicted tokens counted: 4 sequences of 12, none from position 0 (the sink, kept
    # true in every run) nor from the last token.
    assert record["settings"]["loss_recovered_tokens"] == 4 * (12 - 2)
    assert record["settings"]["loss_recovered_sequences"] == 4
    # each score with its bootstrap interval over the 4 sequences, said under the table
    for score, low, high in zip(table["loss_recovered"], table["loss_recovered_low"],
                                table["loss_recovered_high"]):
        assert low <= score <= high
    assert "40 predicted tokens of 4 sequences" in loss_note(table, record["settings"])
    # The files.
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"]["fvu"] == pytest.approx(table["fvu"])
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["fvu"]) for r in rows] == pytest.approx(table["fvu"])
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Latents whose codes ITO changes most" in page
    assert record["changed_latents"]["latent"], "ITO changed no latent"
    # Each listed latent names the rows where ITO changed its code most, as the codes of
    # the SAE and ITO there say; the contexts are in the report.
    codes, refined = sae.transform(X_used), ito.transform(X_used)
    used_rows = np.flatnonzero(mask)
    for latent, contexts in zip(record["changed_latents"]["latent"],
                                record["changed_latents"]["contexts"]):
        assert 1 <= len(contexts) <= 3
        for context in contexts:
            i = np.searchsorted(used_rows, context["row"])
            assert used_rows[i] == context["row"]
            assert context["sae"] == pytest.approx(codes[i, latent], abs=1e-5)
            assert context["ito"] == pytest.approx(refined[i, latent], abs=1e-4)
        assert "row " in page
    # Bounded-memory streaming: the block size does not change the numbers.
    again = amortisation_gap_report(our_sae, path, budgets=["omp-l0"], block_rows=1000,
                                    progress=False)
    assert again["table"]["fvu"] == pytest.approx(table["fvu"][:2], rel=1e-6)
    assert "FVU" in format_table(table)


def test_latent_changes_keep_the_rows_of_largest_change_across_blocks():
    from sklearn_sparsegap.experiments._gap import _LatentChanges

    rng = np.random.default_rng(0)
    codes = np.where(rng.random((50, 4)) < 0.5, rng.random((50, 4)), 0.0)
    refined = np.where(rng.random((50, 4)) < 0.5, rng.random((50, 4)), 0.0)
    refined[:, 3] = codes[:, 3]  # latent 3: ITO never changes it
    rows = np.arange(50) * 2 + 7  # rows of the activations (some left out)
    changes = _LatentChanges(4)
    for block in (slice(0, 20), slice(20, 21), slice(21, 50)):
        changes.update(rows[block], codes[block], refined[block])
    change = np.abs(refined - codes)
    np.testing.assert_allclose(changes.abs_change, change.sum(axis=0))
    assert changes.added.tolist() == ((refined != 0) & (codes == 0)).sum(axis=0).tolist()
    assert changes.rows_changed == int(np.any(refined != codes, axis=1).sum())
    for latent in range(3):
        best = np.argsort(-change[:, latent], kind="stable")[:3]
        assert [c[0] for c in changes.contexts(latent)] == rows[best].tolist()
        assert [c[1:] for c in changes.contexts(latent)] == [
            (codes[i, latent], refined[i, latent]) for i in best]
    assert changes.contexts(3) == []


def test_cli_on_npy(our_sae, store, tmp_path, capsys):
    X_used, _ = _used_rows(store[1])
    np.save(tmp_path / "x.npy", X_used)
    code = main(["gap", str(our_sae), "--activations", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "out"), "--budgets", "omp-l0,omp-k6", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.startswith("ITO at the same L0 recovers")
    assert "no token positions" in printed and "omp-k6" in printed
    assert (tmp_path / "out" / "report.html").exists()
    # The same --out again: refused, nothing overwritten.
    before = (tmp_path / "out" / "results.json").read_text()
    code = main(["gap", str(our_sae), "--activations", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "already holds files" in error and len(error.splitlines()) == 1
    assert (tmp_path / "out" / "results.json").read_text() == before


def _random_state_dict(model, rng):
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.as_tensor(rng.normal(size=param.shape) * 0.3, dtype=torch.float32))


def _peer_checkpoint(peer, folder, rng):
    """A tiny SAE built and saved by the peer library's own code (skips if missing)."""
    if peer == "saelens":
        pytest.importorskip("sae_lens", reason="SAELens is not installed")
        from sae_lens import TopKSAE, TopKSAEConfig

        model = TopKSAE(TopKSAEConfig(d_in=WIDTH, d_sae=LATENTS, k=K, dtype="float32",
                                      device="cpu"))
        _random_state_dict(model, rng)
        model.save_model(folder)
    elif peer == "sparsify":
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
        pytest.importorskip("sparsify", reason="sparsify is not installed")
        from sparsify import SparseCoder, SparseCoderConfig

        model = SparseCoder(WIDTH, SparseCoderConfig(num_latents=LATENTS, k=K))
        _random_state_dict(model, rng)
        model.save_to_disk(folder)
    else:
        pytest.importorskip("dictionary_learning", reason="dictionary_learning is not installed")
        from dictionary_learning.dictionary import AutoEncoder

        model = AutoEncoder(WIDTH, LATENTS)
        _random_state_dict(model, rng)
        folder.mkdir()
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, folder / "ae.pt")
        trainer = {"dict_class": "AutoEncoder", "activation_dim": WIDTH, "dict_size": LATENTS}
        (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {}}))
    return folder


@pytest.mark.parametrize("peer", ["saelens", "sparsify", "dictionary_learning"])
def test_peer_checkpoints_end_to_end(peer, store, tmp_path, capsys):
    folder = _peer_checkpoint(peer, tmp_path / peer, np.random.default_rng(0))
    code = main(["gap", str(folder), "--activations", str(store[1]), "--out",
                 str(tmp_path / "out"), "--budgets", "omp-l0,omp-2x", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, capsys.readouterr().err
    assert f"({peer})" in printed
    table = json.loads((tmp_path / "out" / "results.json").read_text())["table"]
    assert table["fvu"][1] <= table["fvu"][0] + 1e-7
    assert table["mean_l0"][1] <= table["mean_l0"][0] + 1e-9


def test_bad_inputs_one_line_exit_2(our_sae, store, tmp_path, capsys):
    def run(*argv):
        try:
            code = main(["gap", *map(str, argv), "--out", str(tmp_path / "o"), "--quiet"])
        except SystemExit as exc:  # argparse's own errors (one line, exit 2 too)
            code = exc.code
        error = capsys.readouterr().err
        assert code == 2 and len(error.strip().splitlines()) == 1, error
        return error

    X_used, _ = _used_rows(store[1])
    np.save(tmp_path / "wide.npy", np.ones((10, WIDTH + 3), dtype=np.float32))
    error = run(our_sae, "--activations", tmp_path / "wide.npy")
    assert f"reads {WIDTH}-dimensional" in error and f"{WIDTH + 3} columns" in error
    bad = X_used.copy()
    bad[37, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert "row 37 is not finite" in run(our_sae, "--activations", tmp_path / "nan.npy")
    unsupported = tmp_path / "transcoder"
    shutil.copytree(our_sae, unsupported)
    config = json.loads((unsupported / "cfg.json").read_text())
    config["architecture"] = "jumprelu_skip_transcoder"
    (unsupported / "cfg.json").write_text(json.dumps(config))
    error = run(unsupported, "--activations", store[1])
    assert "jumprelu_skip_transcoder" in error and "not supported" in error
    assert "unknown ITO budget" in run(our_sae, "--activations", store[1], "--budgets", "lars")
    assert "needs --model" in run(our_sae, "--activations", store[1], "--module", "x")
    assert "does not exist" in run(tmp_path / "nowhere", "--activations", store[1])
    assert not (tmp_path / "o").exists()


def test_missing_module_lists_close_names(store, our_sae):
    model, path = store
    with pytest.raises(ValueError, match=r"'blocks\.7' is not a submodule.*blocks\.0"):
        amortisation_gap_report(our_sae, path, model=model, module="blocks.7", progress=False)


def test_parse_budget():
    assert parse_budget("omp-k32") == {"name": "omp-k32", "algorithm": "omp", "kind": "k",
                                       "value": 32}
    assert parse_budget("fista-l0")["kind"] == "l0"
    for name in ("fista-2x", "omp-0x", "lars-l0"):
        with pytest.raises(ValueError):
            parse_budget(name)


def test_fvu_of_a_synthetic_sae_independent(tmp_path):
    """On a .npy every row is used (no massive rows): the table equals the library's FVU."""
    X, _, _ = make_sparse_dictionary_data(300, n_components=LATENTS, n_features=WIDTH,
                                          n_nonzero_coefs=K, random_state=0)
    X = X.astype(np.float32)
    sae = SAEEncoder(n_components=LATENTS, activation="topk", n_nonzero_coefs=K, alpha=0.0,
                     max_iter=30, random_state=0, device="cpu").fit(X)
    save_sae(sae, tmp_path / "sae", format="sparsify")
    np.save(tmp_path / "x.npy", X)
    record = amortisation_gap_report(tmp_path / "sae", tmp_path / "x.npy", budgets=["omp-l0"],
                                     max_norm_ratio=None, block_rows=64, progress=False)
    loaded = load_sae(tmp_path / "sae")
    codes = loaded.transform(X)
    assert record["table"]["fvu"][0] == pytest.approx(
        fraction_variance_unexplained(X, loaded.inverse_transform(codes)), rel=1e-5)
    assert record["table"]["mean_l0"][0] == pytest.approx(np.count_nonzero(codes) / len(X))
    assert record["table"]["fvu"][1] < record["table"]["fvu"][0]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def test_report_opens_in_headless_chromium(store, our_sae, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    record = amortisation_gap_report(our_sae, store[1], budgets=["omp-l0", "omp-2x"],
                                     out=tmp_path / "run", progress=False)
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"request {r.url}")
                    if not r.url.startswith(("file:", "data:")) else None)
            page.goto((tmp_path / "run" / "report.html").as_uri())
            assert page.text_content("#answer") == record["answer"]
            assert page.locator("#results tbody tr").count() == 3
            assert page.evaluate("document.querySelector('img').naturalWidth") > 0
        finally:
            browser.close()
    assert errors == []
