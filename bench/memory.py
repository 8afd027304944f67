"""Memory per parameter of the measures, on transformers language models and on an MLP.

For each model and measure, a fresh process builds the model and its data, measures, and
reports its peak resident memory (`ru_maxrss`); the figures per parameter are

- bytes/param (all): the peak over the number of parameters, the interpreter and torch
  included (what a worker needs for the model);
- bytes/param (above model): the peak less the memory after the model and data were built,
  over the number of parameters: what the measure itself costs (gradient graph, vectors);
- and the result's own `diagnostics.bytes_per_parameter` (its basis and working vectors, or
  its probes: docs/numerics.md says what it counts).

and the time of one Hessian-vector product over the time of one gradient (CPU seconds, all
threads), the fastest of three after a warm-up.

Models: Llama-shaped causal language models (`transformers.LlamaForCausalLM`, float32, random
weights, untied embeddings) of about 10M, 50M and 150M parameters, on 8 sequences of 64 random
tokens with next-token labels; and the 9.2M-parameter MLP 256 → 2800 → 2800 → 10 of the issue
that asked for these figures, on 256 samples. Measures: λmax and top-20 eigenvalues (Lanczos,
the service's defaults) and the trace (Hutchinson, 50 products), through
`tasks.engine.runner.run_measure`, as a job runs them.

The parent watches each child's resident memory and stops it above `--rss-cap` (default
16 GiB), so a point that would exhaust the machine is reported as over the cap instead.

Run: `python -m bench.memory [--quick]` (quick: the 10M model and the MLP only). Writes
bench/results/memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import bench
from bench.procfs import rss

GiB = 2**30
THREADS = 2

CHILD = r"""
import json, resource, sys, time, warnings
from tasks.worker.allocator import return_large_blocks  # the worker package before torch
import torch
from torch import nn


spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
return_large_blocks()  # as a worker does


def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


base = rss()
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
if spec["kind"] == "llama":
    from bench.llama import llama

    vocab = spec["vocab"]
    model = llama(spec["hidden"], spec["layers"], vocab)
    tokens = torch.randint(0, vocab, (8, 65), generator=g)
    batches = [(tokens[i : i + 4, :-1], tokens[i : i + 4, 1:]) for i in (0, 4)]
    kw = {"output_key": "logits", "class_dim": -1}
else:
    w = spec["hidden"]
    layers_ = [nn.Linear(256, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, 10)]
    model = nn.Sequential(*layers_)
    x = torch.randn(256, 256, generator=g) + 1.0
    y = (x @ torch.randn(256, 10, generator=g)).argmax(1)
    batches = [(x, y)]
    kw = {}

from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure

problem = HessianProblem(model, batches, loss="cross_entropy", **kw)
setup = rss()
out = {"params": problem.dim, "rss_base": base, "rss_setup": setup}
if spec["measure"] == "hvp":
    from tasks.engine.operator import HessianOperator

    def timed(fn):
        fn()
        best = float("inf")
        for _ in range(3):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        return best

    out["grad_cpu"] = timed(problem.gradient)
    op = HessianOperator(problem)
    v = torch.randn(problem.dim, generator=g)
    out["hvp_cpu"] = timed(lambda: op.matvec(v))
else:
    params = {"top_eigenvalues": {"k": 20}, "trace": {"method": "hutchinson", "num_hvps": 50}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = run_measure(problem, spec["measure"], params.get(spec["measure"], {}))
    out.update({
        "seconds": time.perf_counter() - t0, "hvps": res["hvps"],
        "converged": res["converged"],
        "limited_by": (res.get("diagnostics") or {}).get("limited_by"),
        "bytes_per_parameter": (res.get("diagnostics") or {}).get("bytes_per_parameter"),
    })
out["rss_peak"] = rss()
print(json.dumps(out))
"""

MODELS = {  # name: (kind, hidden, layers, vocab)
    "Llama ~10M": ("llama", 256, 6, 8_000),
    "Llama ~50M": ("llama", 512, 10, 16_000),
    "Llama ~110M": ("llama", 768, 12, 17_000),
    "Llama ~150M": ("llama", 768, 16, 32_000),
    "MLP 9.2M": ("mlp", 2_800, 0, 0),
}
MEASURES = ("hvp", "lambda_max", "top_eigenvalues", "trace")


def run_point(model: str, measure: str, cap: int) -> dict:
    kind, hidden, layers, vocab = MODELS[model]
    spec = {"kind": kind, "hidden": hidden, "layers": layers, "vocab": vocab}
    spec |= {"measure": measure, "threads": THREADS}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    peak = 0
    while child.poll() is None:
        peak = max(peak, rss(child.pid))
        if peak > cap:
            child.kill()
            child.wait()
            return {"over_cap": peak}
        time.sleep(0.05)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        return {"error": stderr.strip().splitlines()[-1] if stderr.strip() else "no output"}
    return json.loads(stdout.strip().splitlines()[-1])


def row(model: str, measure: str, r: dict) -> str:
    if "over_cap" in r:
        return f"| {model} | {measure} | — | over the cap ({r['over_cap'] / GiB:.1f} GiB) | | | |"
    if "error" in r:
        return f"| {model} | {measure} | — | failed: {r['error'][:80]} | | | |"
    p = r["params"]
    every = f"{r['rss_peak'] / p:.1f}"
    above = f"{(r['rss_peak'] - r['rss_setup']) / p:.1f}"
    if measure == "hvp":
        what = f"HVP / gradient {r['hvp_cpu'] / r['grad_cpu']:.2f}"
    else:
        verdict = "converged" if r["converged"] else f"NOT converged ({r['limited_by']})"
        what = f"{r['hvps']} HVPs, {r['seconds']:.1f} s, {verdict}"
        if r.get("bytes_per_parameter") is not None:
            what += f"; diagnostics.bytes_per_parameter {r['bytes_per_parameter']:.0f}"
    return (
        f"| {model} | {measure} | {p:,} | {r['rss_peak'] / GiB:.2f} GiB | {every} | {above} "
        f"| {what} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the 10M model and the MLP only")
    parser.add_argument("--rss-cap", type=float, default=16.0, help="GiB per point")
    args = parser.parse_args()
    import torch

    models = ["Llama ~10M", "MLP 9.2M"] if args.quick else list(MODELS)
    lines = [
        "# Memory per parameter",
        "",
        f"torch {torch.__version__}, CPU, {THREADS} threads, float32 models, one fresh process "
        f"per point; `python -m bench.memory{' --quick' if args.quick else ''}`.",
        "",
        "| model | measure | parameters | peak RSS | bytes/param (all) | bytes/param (above "
        "model) | |",
        "|---|---|---|---|---|---|---|",
    ]
    start = time.perf_counter()
    for model in models:
        for measure in MEASURES:
            print(f"[memory] {model}: {measure}", file=sys.stderr, flush=True)
            lines.append(row(model, measure, run_point(model, measure, int(args.rss_cap * GiB))))
            print(lines[-1], file=sys.stderr, flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        "",
        f"Total wall time {time.perf_counter() - start:.0f} s; load average at the end {load}.",
    ]
    bench.report("memory", lines)


if __name__ == "__main__":
    main()
