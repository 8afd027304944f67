"""Memory and time of Lanczos' kept basis on a large, cheap operator.

Full reorthogonalisation keeps every Lanczos vector, so for a large network the basis, not
the HVPs' graph, sets the memory. This runs Lanczos for a fixed number of steps on a diagonal
operator (a product costs almost nothing, so the basis' own cost shows) and reports the peak
resident memory of the process against the basis' size (dim × steps float64).

Run: `python -m bench.lanczos_basis [--dim N] [--steps K]`.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import torch

from tasks.engine.lanczos import lanczos


class Diagonal:
    def __init__(self, d: torch.Tensor) -> None:
        self.d, self.dim, self.hvps = d, d.shape[0], 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.hvps += 1
        return self.d * v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    d = torch.linspace(0.0, 1.0, args.dim, dtype=torch.float64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 never converges: the step count is the point
        lanczos(Diagonal(d), k=1, tol=0.0, max_iter=args.steps)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    basis = args.dim * args.steps * 8 / 2**20
    print(
        f"Lanczos, dim {args.dim:,}, {args.steps} steps: {seconds:.1f} s; basis {basis:,.0f} MiB, "
        f"peak memory added {peak - before:,.0f} MiB ({(peak - before) / basis:.2f}× the basis)"
    )


if __name__ == "__main__":
    main()
