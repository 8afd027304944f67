"""How the engine's cost grows: time per HVP, time to λmax and peak memory, against the number
of parameters (MLPs and CNNs, about 1M to 50M on a CPU) and against the number of samples at a
fixed model, with the log-log slopes.

Every point runs in a fresh process, so its peak resident memory (`ru_maxrss`, which
tracemalloc cannot see for torch's allocations) is its own: the interpreter and torch, the
model and data, the HVPs' graph and the Lanczos basis. For each point:

- gradient and HVP seconds, wall and CPU (all threads): the fastest of `--repeats` calls after
  one warm-up (which also builds the cached gradient graph when the engine keeps one);
- λmax: `run_measure(problem, "lambda_max", {})`, the path a job takes, with the service's
  defaults (tol 1e-6, basis budget 40 vectors); its seconds, HVPs and Lanczos restarts;
- peak RSS after the setup (model + data), after the HVPs, and after λmax.

Models: MLPs 256 → W → W → 10 (tanh) and CNNs on 3×16×16 images (three 3×3 convolutions of
C, 2C, 4C channels with pooling, then a linear layer), float32, random weights trained a few
SGD steps on random inputs of mean 1, as unnormalised data has, labelled by a random linear
teacher. (Centred inputs leave the top of the spectrum so flat that λmax needs 70 HVPs and
more at tol 1e-6: a property of that model, not of the engine, and it would hide the scaling.)
The data is split into batches (256 examples for the MLPs, 32 for the CNNs), as a job's
dataset is, and the engine's "auto" backend picks the HVP path as it would in the worker.

The slope of log(cost) against log(size), fitted by least squares over the points, says how
the cost scales: 1 is linear.

Run: `python -m bench.scaling [--quick]` (quick: fewer and smaller points, about 2 minutes on
2 cores; full: up to 50M parameters, about 10). Writes bench/results/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import bench

THREADS = 2
MiB = 2**20

CHILD = r"""
import json, resource, sys, time, warnings
import torch
from torch import nn

spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])


def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mlp(width):
    return nn.Sequential(
        nn.Linear(256, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
        nn.Linear(width, 10),
    )


def cnn(c):
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * c * 4, 10),
    )


base = rss()
torch.manual_seed(0)
if spec["kind"] == "mlp":
    model, shape = mlp(spec["size"]), (256,)
else:
    model, shape = cnn(spec["size"]), (3, 16, 16)
n = spec["samples"]
g = torch.Generator().manual_seed(1)
x = torch.randn(n, *shape, generator=g) + 1.0  # inputs with a mean, as unnormalised data has
teacher = torch.randn(x[0].numel(), 10, generator=g)
y = (x.flatten(1) @ teacher).argmax(1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(spec["train_steps"]):
    i = (step * spec["batch"]) % n
    xb, yb = x[i : i + spec["batch"]], y[i : i + spec["batch"]]
    opt.zero_grad()
    nn.functional.cross_entropy(model(xb), yb).backward()
    opt.step()
model.eval()
opt = None
for p in model.parameters():
    p.grad = None

from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure

b = spec["batch"]
batches = [(x[i : i + b], y[i : i + b]) for i in range(0, n, b)]
problem = HessianProblem(model, batches, loss="cross_entropy")
after_setup = rss()


def timed(fn, repeats):
    # fastest wall and CPU seconds (all threads) of `repeats` calls: other processes only
    # ever add time, so the minimum is the least disturbed figure
    fn()  # warm-up: one-time costs (the cached graph, allocator growth)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


grad_s, grad_cpu = timed(problem.gradient, spec["repeats"])
op = HessianOperator(problem)
v = torch.randn(problem.dim, dtype=torch.float64, generator=g)
hvp_s, hvp_cpu = timed(lambda: op.matvec(v), spec["repeats"])
backend = op.backend
op = None
after_hvp = rss()
out = {"params": problem.dim, "samples": n, "batches": len(batches), "backend": backend,
       "grad_s": grad_s, "hvp_s": hvp_s, "grad_cpu": grad_cpu, "hvp_cpu": hvp_cpu,
       "rss_base": base, "rss_setup": after_setup, "rss_hvp": after_hvp}
if spec["lambda_max"]:
    problem = HessianProblem(model, batches, loss="cross_entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_measure(problem, "lambda_max", spec.get("params") or {})
        lam_s, lam_cpu = time.perf_counter() - t0, time.process_time() - c0
    out.update({
        "lambda_s": lam_s, "lambda_cpu": lam_cpu, "lambda": res["value"],
        "lambda_hvps": res["hvps"],
        "converged": res["converged"], "restarts": res["diagnostics"]["restarts"],
        "basis_peak": res["diagnostics"]["basis_vectors_peak"], "rss_lambda": rss(),
    })
print(json.dumps(out))
"""


@dataclass
class Point:
    kind: str  # "mlp" or "cnn"
    size: int  # MLP width or CNN base channels
    samples: int
    batch: int
    lambda_max: bool = True


def mlp_width(params: float) -> int:
    """Width W with 256·W + W² + 10·W (+ biases) ≈ params."""
    return int((-267 + math.sqrt(267**2 + 4 * params)) / 2)


def cnn_channels(params: float) -> int:
    """Base channels C with 27C + 18C² + 72C² + 640C (+ biases) ≈ params."""
    return int((-667 + math.sqrt(667**2 + 4 * 90 * params)) / (2 * 90))


def run_point(point: Point, repeats: int, train_steps: int) -> dict:
    spec = {
        "kind": point.kind,
        "size": point.size,
        "samples": point.samples,
        "batch": point.batch,
        "lambda_max": point.lambda_max,
        "repeats": repeats,
        "train_steps": train_steps,
        "threads": THREADS,
    }
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{point}: exit {out.returncode}\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - t0
    result["kind"] = point.kind
    return result


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    if len(xs) < 2:
        return math.nan
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def sweeps(quick: bool) -> list[tuple[str, str, list[Point]]]:
    if quick:
        mlp_params = [1e6, 2e6, 4e6, 8e6]
        cnn_params = [0.5e6, 1e6, 2e6]
        samples = [256, 512, 1024, 2048]
    else:
        mlp_params = [1e6, 2e6, 5e6, 10e6, 20e6, 50e6]
        cnn_params = [1e6, 2e6, 4e6, 8e6]
        samples = [256, 512, 1024, 2048, 4096, 8192]
    return [
        ("MLP, 256 samples", "params", [Point("mlp", mlp_width(p), 256, 256) for p in mlp_params]),
        (
            "CNN on 3×16×16 images, 32 samples",
            "params",
            [Point("cnn", cnn_channels(p), 32, 32) for p in cnn_params],
        ),
        (
            "MLP of 1M parameters, batches of 256",
            "samples",
            [Point("mlp", mlp_width(1e6), n, 256) for n in samples],
        ),
    ]


def log(message: str) -> None:
    print(f"[scaling] {message}", file=sys.stderr, flush=True)


def table(name: str, rows: list[dict], against: str) -> list[str]:
    """One sweep's rows and slopes. Times are wall seconds, with CPU seconds (all threads)
    after the slash; on a shared machine other processes stretch some points and not others,
    which the two figures and the λmax HVP counts let a reader see."""
    lines = [
        f"### {name}",
        "",
        "| parameters | samples | backend | gradient s | HVP s (wall / CPU) | HVP / gradient "
        "| λmax s (wall / CPU) | λmax HVPs | restarts | peak RSS MiB (setup / HVPs / λmax) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lam = (
            f"{r['lambda_s']:.2f} / {r['lambda_cpu']:.2f} "
            f"| {r['lambda_hvps']}{'' if r['converged'] else ' (not converged)'} "
            f"| {r['restarts']}"
            if "lambda_s" in r
            else "— | — | —"
        )
        peaks = f"{r['rss_setup'] / MiB:,.0f} / {r['rss_hvp'] / MiB:,.0f} / " + (
            f"{r['rss_lambda'] / MiB:,.0f}" if "rss_lambda" in r else "—"
        )
        lines.append(
            f"| {r['params']:,} | {r['samples']:,} | {r['backend']} | {r['grad_s']:.4f} "
            f"| {r['hvp_s']:.4f} / {r['hvp_cpu']:.4f} | {r['hvp_cpu'] / r['grad_cpu']:.2f} "
            f"| {lam} | {peaks} |"
        )
    xs = [r[against] for r in rows]
    lam = [r for r in rows if "lambda_s" in r]
    lx = [r[against] for r in lam]
    slopes = {
        "HVP CPU time": slope(xs, [r["hvp_cpu"] for r in rows]),
        "HVP wall time": slope(xs, [r["hvp_s"] for r in rows]),
        "λmax CPU time": slope(lx, [r["lambda_cpu"] for r in lam]),
        "λmax wall time": slope(lx, [r["lambda_s"] for r in lam]),
        "peak RSS": slope(lx, [r["rss_lambda"] for r in lam]),
        # what the run added to a process that had imported torch: model, data, graph, basis
        "peak RSS above torch's": slope(lx, [max(r["rss_lambda"] - r["rss_base"], 1) for r in lam]),
    }
    lines += [
        "",
        f"Log-log slopes against {'parameters' if against == 'params' else 'samples'}: "
        + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items())
        + ". (HVP / gradient is the ratio of CPU times.)",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, smaller points")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per point")
    parser.add_argument("--train-steps", type=int, default=5, help="SGD steps before measuring")
    args = parser.parse_args()
    import torch

    start = time.perf_counter()
    lines = [
        "# Scaling",
        "",
        f"torch {torch.__version__}, CPU, {THREADS} threads, float32 models, one fresh process "
        f"per point; `python -m bench.scaling{' --quick' if args.quick else ''}`.",
        "",
    ]
    for name, against, points in sweeps(args.quick):
        rows = []
        for point in points:
            log(f"{name}: {point.kind} size {point.size}, {point.samples} samples")
            r = run_point(point, args.repeats, args.train_steps)
            log(
                f"  {r['params']:,} params: HVP {r['hvp_s']:.3f} s, λmax "
                f"{r.get('lambda_s', math.nan):.2f} s ({r.get('lambda_hvps')} HVPs), peak "
                f"{r.get('rss_lambda', r['rss_hvp']) / MiB:,.0f} MiB, wall {r['wall']:.0f} s"
            )
            rows.append(r)
        lines += table(name, rows, against)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines.append(
        f"Total wall time {time.perf_counter() - start:.0f} s; load average at the end {load} "
        f"({os.cpu_count()} cores): on a shared machine every time is an upper bound."
    )
    bench.report("scaling", lines)


if __name__ == "__main__":
    main()
