"""Memory and time of Lanczos' basis on a large, cheap operator: unbounded against a budget.

Full reorthogonalisation keeps every Lanczos vector unless a budget bounds it, so for a large
network the basis, not the HVPs' graph, sets the memory. This runs Lanczos for a fixed number
of steps (tol = 0, so it never stops early) on a diagonal operator (a product costs almost
nothing, so the basis' own cost shows), once per setting, each in a fresh process, and
reports the peak resident memory the run added against the size of one float64 vector:

- unbounded: max_basis = steps, the whole basis is kept (dim × steps float64);
- max_basis 40: thick restart keeps at most 40 vectors;
- max_basis 40, float32: the same basis in half the bytes.

Run: `python -m bench.lanczos_basis [--dim N] [--steps K] [--budget B]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, warnings
import torch
from tasks.engine.lanczos import lanczos
from tasks.engine.linear_operator import DiagonalOperator

dim, steps, budget, dtype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(2)
op = DiagonalOperator(torch.linspace(0.0, 1.0, dim, dtype=torch.float64))
op.matvec(torch.ones(dim, dtype=torch.float64))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tol=0 never converges: the step count is the point
    res = lanczos(op, k=1, tol=0.0, max_iter=steps, max_basis=budget,
                  basis_dtype=getattr(torch, dtype))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "added": peak - before, "restarts": res.restarts,
                  "basis_peak": res.basis_peak, "basis_bytes": res.basis_bytes_peak,
                  "lambda_max": res.eigenvalues[0]}))
"""


def run(dim: int, steps: int, budget: int, dtype: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(dim), str(steps), str(budget), dtype],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--budget", type=int, default=40)
    args = parser.parse_args()
    vector = args.dim * 8 / 2**20
    print(f"Lanczos, dim {args.dim:,}, {args.steps} steps, one float64 vector = {vector:.1f} MiB")
    settings = [
        ("unbounded", args.steps, "float64"),
        (f"max_basis {args.budget}", args.budget, "float64"),
        (f"max_basis {args.budget}, float32", args.budget, "float32"),
    ]
    for label, budget, dtype in settings:
        r = run(args.dim, args.steps, budget, dtype)
        added = r["added"] / 2**20
        print(
            f"  {label:24s} {r['seconds']:6.1f} s  restarts {r['restarts']:3d}  basis "
            f"{r['basis_bytes'] / 2**20:7,.0f} MiB  peak memory added {added:7,.0f} MiB "
            f"({added / vector:5.1f} vectors)"
        )


if __name__ == "__main__":
    main()
