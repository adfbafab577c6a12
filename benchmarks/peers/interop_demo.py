"""SAEs trained by SAELens, sparsify and dictionary_learning, loaded with
``sklearn_sparsegap.interop.load_sae`` and refined by ITO on their own decoders.

For each library: train a small TopK SAE with the library's own model and loss, save it
with the library's own save function, load it as a fitted ``SAEEncoder``, check that our
codes equal the library's ``encode``, then wrap it as
``SAEPlusITO(FrozenEstimator(sae), transform_algorithm="omp",
transform_n_nonzero_coefs=k)``: the refined codes have the same L0 (k) as the SAE's,
so the FVU and the amortisation gap compare inference alone. The data are synthetic with
the structure of LM activations (Zipf-distributed latent frequencies, a large shared
mean, anisotropic scale, noise) and known ground-truth codes, so the latent MCC is
reported too. SAELens and sparsify start their decoder bias at the training mean
(dictionary_learning's TopKTrainer starts it at the geometric median by itself); all use
Adam at ``LR`` on full batches. With ``--activations`` the data are real LM activations
(an activation set written by ``extract_activations``), attention-sink rows left out
unless ``--keep-sinks``; no ground truth, so no MCC.

Needs the benchmark extra (``pip install -e ".[benchmark]"``; see docs/interop.rst for
the torchvision quirk). Run from the repository root::

    python benchmarks/peers/interop_demo.py [--quick] [--activations ACTIVATIONS_DIR]
"""

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import threadpoolctl
import torch
from sklearn.frozen import FrozenEstimator

from sklearn_sparsegap import SAEPlusITO, make_sparse_dictionary_data, mean_corr_coef  # noqa: E402
from sklearn_sparsegap.interop import load_sae  # noqa: E402


N_FEATURES, N_COMPONENTS, N_ACTIVE, K = 32, 128, 5, 8
LR = 3e-3


def make_data(n_samples, random_state):
    """Sparse codes on a random dictionary, Zipf latent frequencies, plus the large
    shared mean and anisotropic scale of residual-stream activations."""
    X, dictionary, codes = make_sparse_dictionary_data(
        n_samples, n_components=N_COMPONENTS, n_features=N_FEATURES, n_nonzero_coefs=N_ACTIVE,
        code_distribution="zipf", noise_std=0.05, random_state=random_state,
    )
    rng = np.random.default_rng(random_state)
    scale = np.exp(rng.normal(scale=0.5, size=N_FEATURES))
    offset = rng.normal(scale=3.0, size=N_FEATURES)
    return (X * scale + offset).astype(np.float32), codes


def fvu(X, X_hat):
    return float(((X - X_hat) ** 2).sum() / ((X - X.mean(axis=0)) ** 2).sum())


def train_saelens(X, steps, folder):
    """SAELens's TopKTrainingSAE trained by its SAETrainer on full batches, saved with
    save_inference_model (what its training runner writes at the end)."""
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    x = torch.as_tensor(X)
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=N_FEATURES, d_sae=N_COMPONENTS, k=K,
                                                dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * len(x), train_batch_size_samples=len(x), lr=LR,
        lr_end=LR / 10, device="cpu", logger=LoggingConfig(log_to_wandb=False),
    )

    def full_batch():
        while True:
            yield x

    with contextlib.redirect_stderr(io.StringIO()):
        sae = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=full_batch()).fit()
    sae.save_inference_model(folder)
    return lambda data: sae.encode(torch.as_tensor(data)).detach().numpy()


def train_sparsify(X, steps, folder):
    """sparsify's SparseCoder and its loss (FVU of forward) with its decoder constraint,
    in a plain full-batch Adam loop (its Trainer needs a Hugging Face model)."""
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    model = SparseCoder(N_FEATURES, SparseCoderConfig(num_latents=N_COMPONENTS, k=K))
    x = torch.as_tensor(X)
    with torch.no_grad():
        model.b_dec.copy_(x.mean(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).fvu.backward()
        model.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        model.set_decoder_norm_to_unit_norm()
    model.save_to_disk(folder)

    def encode(data):
        with torch.no_grad():
            acts, indices, _ = model.encode(torch.as_tensor(data))
            return torch.zeros(len(data), N_COMPONENTS).scatter_(1, indices, acts).numpy()

    return encode


def train_dictionary_learning(X, steps, folder):
    """dictionary_learning's TopKTrainer.update on full batches; saved as its training
    loop saves (state dict to ae.pt, trainer.config to config.json)."""
    from dictionary_learning.trainers.top_k import TopKTrainer

    trainer = TopKTrainer(
        steps=steps, activation_dim=N_FEATURES, dict_size=N_COMPONENTS, k=K, layer=0,
        lm_name="synthetic", lr=LR, warmup_steps=min(100, steps // 10), seed=0, device="cpu",
        threshold_start_step=steps + 1,
    )
    x = torch.as_tensor(X)
    with contextlib.redirect_stdout(io.StringIO()):
        for step in range(steps):
            trainer.update(step, x)
    Path(folder).mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in trainer.ae.state_dict().items()}, Path(folder) / "ae.pt")
    (Path(folder) / "config.json").write_text(json.dumps({"trainer": trainer.config, "buffer": {}}))
    return lambda data: trainer.ae.encode(torch.as_tensor(data)).detach().numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the table to this JSON file")
    parser.add_argument("--quick", action="store_true", help="few steps and samples (a smoke run)")
    parser.add_argument("--activations", help="an activation set written by "
                        "sklearn_sparsegap.activations.extract_activations (real LM activations, "
                        "no ground truth: MCC is not reported)")
    parser.add_argument("--expansion", type=int, default=4,
                        help="latents per feature with --activations")
    parser.add_argument("--keep-sinks", action="store_true",
                        help="with --activations, keep the attention-sink rows (position 0 and "
                             "rows of norm above 10x the median), which sparsegap activations "
                             "leaves out")
    args = parser.parse_args(argv)
    steps, n_train, n_test = (100, 1024, 512) if args.quick else (1000, 2048, 2048)
    torch.set_num_threads(1)
    print("threadpools:", [(p["internal_api"], p["num_threads"]) for p in threadpoolctl.threadpool_info()])
    if args.activations:
        global N_FEATURES, N_COMPONENTS
        from sklearn_sparsegap.activations import load_activations
        from sklearn_sparsegap.activations._rows import row_norms, usable_rows

        activations, metadata = load_activations(args.activations)
        candidates = np.arange(len(activations))
        if not args.keep_sinks:
            # The attention sinks carry most of the variance of a causal LM's residual
            # stream: with them in, the variance-weighted FVU measures those few rows.
            n_rows = len(activations)
            candidates = np.flatnonzero(
                usable_rows(metadata, n_rows, norms=row_norms(activations, n_rows))
            )
        # A fixed random subset of rows: neighbouring tokens are correlated.
        rows_taken = np.random.default_rng(0).permutation(candidates)[: n_train + n_test]
        X = np.asarray(activations[np.sort(rows_taken)], dtype=np.float32)
        X = X[np.random.default_rng(1).permutation(len(X))]
        N_FEATURES, N_COMPONENTS = X.shape[1], args.expansion * X.shape[1]
        codes = None
        print(f"data: {Path(args.activations).name}: {len(activations)} rows "
              f"({len(candidates)} {'with' if args.keep_sinks else 'without'} the attention "
              f"sinks), M={N_FEATURES}; "
              f"{len(X) - n_test} train / {n_test} test rows, N={N_COMPONENTS}, SAE k={K}; "
              f"{steps} full-batch steps")
        n_train = len(X) - n_test
    else:
        print(f"data: {n_train} train / {n_test} test samples, M={N_FEATURES}, N={N_COMPONENTS}, "
              f"{N_ACTIVE} true active latents (Zipf), SAE k={K}; {steps} full-batch steps")
        X, codes = make_data(n_train + n_test, random_state=0)
    X_train, X_test = X[:n_train], X[n_train:]
    codes_test = None if codes is None else codes[n_train:]
    rows = []
    for name, train in (("SAELens", train_saelens), ("sparsify", train_sparsify),
                        ("dictionary_learning", train_dictionary_learning)):
        folder = tempfile.mkdtemp(prefix=f"interop_{name}_")
        start = time.perf_counter()
        library_encode = train(X_train, steps, folder)
        train_seconds = time.perf_counter() - start
        sae = load_sae(folder)
        agreement = float(np.abs(sae.transform(X_test) - library_encode(X_test)).max())
        ito = SAEPlusITO(FrozenEstimator(sae), transform_algorithm="omp", transform_n_nonzero_coefs=K,
                         transform_alpha=0.0, refit_intercept=False).fit(X_train)
        start = time.perf_counter()
        sae_codes = sae.transform(X_test)
        sae_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ito_codes = ito.transform(X_test)
        ito_seconds = time.perf_counter() - start
        row = {
            "library": name,
            "max |ours - library encode|": agreement,
            "SAE L0": float((sae_codes != 0).sum(1).mean()),
            "ITO L0": float((ito_codes != 0).sum(1).mean()),
            "SAE FVU": fvu(X_test, sae.inverse_transform(sae_codes)),
            "ITO FVU": fvu(X_test, ito.inverse_transform(ito_codes)),
            "gap (0.5 MSE)": ito.amortisation_gap(X_test),
            "train s": train_seconds,
            "ITO/SAE time": ito_seconds / sae_seconds,
        }
        if codes_test is not None:
            row["SAE MCC"] = mean_corr_coef(codes_test, sae_codes)
            row["ITO MCC"] = mean_corr_coef(codes_test, ito_codes)
        rows.append(row)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k])
                                for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print("(machine shared with other jobs: times are indicative; the ratio is measured in one run)")
    return rows


if __name__ == "__main__":
    main()
