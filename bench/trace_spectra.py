"""The trace estimators on synthetic spectra: error at 100 products and interval coverage.

Network Hessians decay fast (Granziol's rank bound), but not every one does: this shows where
each estimator wins, and how often its nominal 95% interval holds, on 1000×1000 matrices
Q diag(λ) Qᵀ with Q random orthogonal and λ flat (1 + 0.1·U(0, 1)), 1/i, 1/i² or e^(−i/20).

Run: `python -m bench.trace_spectra [--seeds N]`. Writes bench/results/trace_spectra.md.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

import bench
from tasks.engine.linear_operator import MatrixOperator
from tasks.engine.trace import TraceEstimate, block_krylov, hutchinson, hutchpp, xtrace

DIM = 1000
BUDGET = 100
ESTIMATORS: dict[str, Callable[..., TraceEstimate]] = {
    "block Krylov": block_krylov,
    "XTrace": xtrace,
    "Hutch++": hutchpp,
    "Hutchinson": hutchinson,
}


def spectrum(kind: str, gen: torch.Generator) -> torch.Tensor:
    i = torch.arange(1, DIM + 1, dtype=torch.float64)
    if kind == "flat":
        return 1 + 0.1 * torch.rand(DIM, generator=gen, dtype=torch.float64)
    return {"1/i": 1 / i, "1/i²": 1 / i**2, "e^(−i/20)": torch.exp(-i / 20)}[kind]


def matrix(kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=gen, dtype=torch.float64))
    return (Q * spectrum(kind, gen)) @ Q.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    lines = [
        f"# Trace estimators on synthetic spectra ({DIM}×{DIM}, {BUDGET} products, "
        f"{args.seeds} seeds)",
        "",
        "| spectrum | "
        + " | ".join(f"{name}: mean rel. error, 95% coverage" for name in ESTIMATORS)
        + " |",
        "|---|" + "---|" * len(ESTIMATORS),
    ]
    for kind in ("flat", "1/i", "1/i²", "e^(−i/20)"):
        A = matrix(kind)
        exact = float(torch.trace(A))
        op = MatrixOperator(A)
        cells = []
        for estimator in ESTIMATORS.values():
            runs = [estimator(op, BUDGET, seed=s) for s in range(args.seeds)]
            error = statistics.mean(abs(r.estimate - exact) / abs(exact) for r in runs)
            cover = statistics.mean(float(r.ci95[0] <= exact <= r.ci95[1]) for r in runs)
            cells.append(f"{error:.2e}, {cover:.0%}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    bench.report("trace_spectra", lines)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
