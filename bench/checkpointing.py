"""Activation checkpointing in the Hessian-vector product: peak memory with and without, on a
GPT-2 language model with long sequences.

Each configuration runs in a fresh process (so each peak is its own): a random GPT-2 (eager
attention, float32) over one batch of token sequences, its HessianProblem, and one product
H·v through the engine's HessianOperator (`per_batch`: the gradient graph is built and
dropped within the product, as for data that does not fit the cached graphs) for a fixed v,
after one plain gradient (first order, what checkpointing is made for).
With checkpointing every transformer block is wrapped by the worker's
`tasks.worker.loaders.huggingface.checkpoint_layers`. The process' peak resident memory is
read before (model, data, interpreter), after the gradient and after the product
(`ru_maxrss`); each figure is the growth over the first. The products of the two runs are
compared.

Run: `python -m bench.checkpointing [--layers 6] [--hidden 256] [--seq 1024] [--batch 2]`
(about three minutes on two busy cores at the defaults). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    """One configuration: print {before, peak, seconds} as JSON, save H·v to args.out."""
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # before torch, as the worker sets it
    import torch
    import transformers

    from tasks.engine.operator import HessianOperator
    from tasks.engine.problem import HessianProblem
    from tasks.worker.loaders.huggingface import checkpoint_layers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    cfg = transformers.GPT2Config(
        vocab_size=args.vocab,
        n_embd=args.hidden,
        n_layer=args.layers,
        n_head=args.heads,
        n_positions=args.seq,
        use_cache=False,
    )
    cfg._attn_implementation = "eager"
    model = transformers.GPT2LMHeadModel(cfg).eval()
    layers = checkpoint_layers(model) if args.checkpointing else 0
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    problem = HessianProblem(model, [({"input_ids": ids}, ids.clone())], class_dim=-1)
    op = HessianOperator(problem, backend="per_batch")
    v = torch.randn(problem.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    before = _peak_mib()
    start = time.perf_counter()
    problem.gradient()  # first order: what checkpointing is made for
    grad_s = time.perf_counter() - start
    grad_peak = _peak_mib()
    start = time.perf_counter()
    hv = op.matvec(v)
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    torch.save(hv, args.out)
    out = {"layers": layers, "dim": problem.dim, "before": before, "grad_peak": grad_peak}
    print(json.dumps({**out, "grad_s": grad_s, "peak": peak, "s": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.out:
        child(args)
        return
    import torch

    shape = [
        f"--layers={args.layers}",
        f"--hidden={args.hidden}",
        f"--heads={args.heads}",
        f"--vocab={args.vocab}",
        f"--seq={args.seq}",
        f"--batch={args.batch}",
    ]
    print(
        f"GPT-2, {args.layers} layers, hidden {args.hidden}, vocabulary {args.vocab}, "
        f"{args.batch} sequences of {args.seq} tokens, float32, one per_batch H·v"
    )
    results, products = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for on in (False, True):
            out = Path(tmp) / f"hv-{on}.pt"
            cmd = [sys.executable, "-m", "bench.checkpointing", *shape, f"--out={out}"]
            if on:
                cmd.append("--checkpointing")
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            results[on] = json.loads(done.stdout.strip().splitlines()[-1])
            products[on] = torch.load(out)
    for on in (False, True):
        r = results[on]
        print(
            f"checkpointing {'on ' if on else 'off'} ({r['layers']} layers, {r['dim']:,} "
            f"parameters): peak RSS {r['before']:.0f} MiB before; a gradient added "
            f"{r['grad_peak'] - r['before']:.0f} MiB in {r['grad_s']:.1f} s, one H·v "
            f"{r['peak'] - r['before']:.0f} MiB in {r['s']:.1f} s"
        )
    off, on_ = products[False], products[True]
    rel = float((on_ - off).norm() / off.norm())
    for what, key in (("a gradient", "grad_peak"), ("one H·v", "peak")):
        saved = (results[False][key] - results[False]["before"]) - (
            results[True][key] - results[True]["before"]
        )
        print(f"memory checkpointing saved on {what}: {saved:.0f} MiB")
    print(f"products: max |on - off| = {float((on_ - off).abs().max()):.3g}, relative {rel:.3g}")


if __name__ == "__main__":
    main()
