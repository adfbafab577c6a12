"""One TopK SAE training step, dense against sparse, across the number of active latents.

``sae_gradients`` takes the sparse step (decoder, ``residual @ D^T`` and the decoder
and last encoder-layer gradients on the ``k`` active latents of each row only) when
``uses_sparse_topk_step``: ``k <= SPARSE_TOPK_MAX_DENSITY * n_components`` (1/16 on
the CPU). This measures both steps on the
same module and batch, checks they give the same gradients, and prints the ratio, so
the rule can be re-checked on another machine or device::

    python benchmarks/speed/bench_topk_step.py --n-features 576 --n-components 2304 \\
        --batch-size 1024 --ks 8,32,128,288,576
"""

import argparse
import time

import threadpoolctl
import torch

from sklearn_sparsegap._autoencoder import initialize_autoencoder
from sklearn_sparsegap._modules import SparseAutoencoderModule, sae_gradients


def step_seconds(module, x, sparse, repeats):
    sae_gradients(module, x, 0.0, sparse=sparse)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        sae_gradients(module, x, 0.0, with_stats=True, sparse=sparse)
    return (time.perf_counter() - start) / repeats


def gradients(module, x, sparse):
    sae_gradients(module, x, 0.0, sparse=sparse)
    return [p.grad.clone() for p in module.parameters() if p.requires_grad]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-features", type=int, default=576)
    parser.add_argument("--n-components", type=int, default=2304)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--ks", default="8,32,128,288,576")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    pools = [(p["internal_api"], p["version"], p["num_threads"])
             for p in threadpoolctl.threadpool_info()]  # fmt: skip
    print("threadpools:", pools, "| torch", torch.__version__, "threads",
          torch.get_num_threads(), "| device", args.device)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, args.n_features, generator=generator).to(args.device)
    print(f"{'k':>5} {'dense ms':>9} {'sparse ms':>10} {'speed-up':>9} {'max rel. diff':>14}")
    for k in (int(value) for value in args.ks.split(",")):
        torch.manual_seed(0)
        module = SparseAutoencoderModule(
            (args.n_features, args.n_components), activation="topk", k=k
        )
        initialize_autoencoder(module, x, torch.Generator().manual_seed(0))
        module.to(args.device)
        dense = step_seconds(module, x, False, args.repeats)
        sparse = step_seconds(module, x, True, args.repeats)
        difference = max(
            float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
            for a, b in zip(gradients(module, x, True), gradients(module, x, False))
        )
        print(f"{k:>5} {dense * 1e3:>9.2f} {sparse * 1e3:>10.2f} {dense / sparse:>8.2f}x "
              f"{difference:>14.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
