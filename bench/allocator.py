"""One Hessian-vector product of a causal language model, stage by stage, with glibc's default
allocator and with the worker's setting (tasks.worker.allocator): the resident memory after
each stage and its peak so far.

The model is bench.large_lm's (LlamaForCausalLM, hidden 768, 12 layers, vocabulary 17,000,
111M parameters, float32, eager attention) on 8 sequences of 64 random tokens; the stages are
the model, the forward pass, the gradient with its graph (`create_graph=True`), a direction,
two products through the kept graph, and everything freed. Each mode runs in a fresh process.

Run: `python -m bench.allocator [--hidden 768 --layers 12 --vocab 17000]`; writes
bench/results/allocator.md. About two minutes per mode on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import bench

CHILD = r"""
import gc, json, sys
from tasks.worker.allocator import return_large_blocks  # the worker package before torch
import torch
from bench.llama import llama

spec = json.loads(sys.argv[1])
if spec["set"]:
    assert return_large_blocks()
torch.set_num_threads(1)
stages = []

def stage(name):
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    stages.append([name, fields["VmRSS"], fields["VmHWM"]])

vocab = spec["vocab"]
model = llama(spec["hidden"], spec["layers"], vocab, attn_implementation="eager")
params = list(model.parameters())
ids = torch.randint(0, vocab, (8, 65))
stage("model")
logits = model(input_ids=ids[:, :-1]).logits
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
stage("forward")
grads = torch.autograd.grad(loss, params, create_graph=True)
stage("gradient with its graph")
v = [torch.randn_like(p) for p in params]
stage("direction")
hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
stage("product 1")
del hv
hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
stage("product 2")
del hv, grads, loss, logits, v
gc.collect()
stage("all freed")
print(json.dumps({"params": sum(p.numel() for p in params), "stages": stages}))
"""

GiB = 2**30


def run(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"the measuring process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=17_000)
    args = parser.parse_args()
    spec = {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab}
    default = run({**spec, "set": False})
    worker = run({**spec, "set": True})
    lines = [
        "# One HVP, stage by stage: glibc's default allocator and the worker's setting",
        "",
        f"`python -m bench.allocator --hidden {args.hidden} --layers {args.layers} --vocab "
        f"{args.vocab}`: LlamaForCausalLM, {default['params']:,} parameters, float32, 8 "
        "sequences of 64 tokens; resident memory (VmRSS) after each stage, and its peak so far "
        "(VmHWM), GiB.",
        "",
        "| stage | default: resident | default: peak | worker's setting: resident | "
        "worker's setting: peak |",
        "|---|---|---|---|---|",
    ]
    for (name, r0, p0), (_, r1, p1) in zip(default["stages"], worker["stages"], strict=True):
        sizes = " | ".join(f"{x / GiB:.2f}" for x in (r0, p0, r1, p1))
        lines.append(f"| {name} | {sizes} |")
    bench.report("allocator", lines)


if __name__ == "__main__":
    main()
