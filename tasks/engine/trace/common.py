"""What the trace estimators share: the result type and the clock and HVP count behind it
(`Tally`), probes, the t interval and the deflated Hutchinson remainder.

The mean of n samples has standard error s/√n; the 95% interval uses the t quantile with n−1
degrees of freedom, widened on both sides by the estimate's rounding level (see `rounding`).
An exact trace (the basis spans the space) has standard error 0 and the interval
[v − level, v + level]; it is converged, limited by its dtype's rounding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.engine.basis import Basis
from tasks.engine.cancel import checkpoint
from tasks.engine.convergence import rounding
from tasks.engine.linear_operator import LinearOperator, as_operator
from tasks.engine.precision import operator_dtype, unit_roundoff
from tasks.engine.trace.rounding import abs_mass, quadratic_rounding, widen


@dataclass
class TraceEstimate:
    estimate: float
    std_error: float | None
    ci95: tuple[float, float] | None
    probes: int
    hvps: int
    seconds: float
    method: str
    converged: bool | None = None  # rtol met or exact (None when no rtol was asked)
    rounding_level: float = 0.0  # absolute; included in ci95 (see tasks.engine.trace.rounding)
    limited_by: str | None = None  # convergence vocabulary; None when converged is None
    bytes_peak: int = 0  # most bytes of probes, products and bases held at once (`Tally.hold`)


Summary = tuple[float, float | None, tuple[float, float] | None]


class Tally:
    """One estimator call: its operator (a dense tensor wrapped), a generator seeded with
    `seed`, and the clock and HVP count from the start, which `result` turns into the
    `TraceEstimate` of `method`."""

    def __init__(self, operator: LinearOperator | Tensor, seed: int, method: str) -> None:
        self.operator = as_operator(operator)
        self.start, self.before = time.perf_counter(), self.operator.hvps
        self.gen = torch.Generator().manual_seed(seed)
        self.method = method
        self.dtype = operator_dtype(self.operator)
        self.eps = unit_roundoff(self.dtype)
        self.bytes_peak = 0

    def hold(self, *held: Tensor | Basis) -> None:
        """Note the dim-sized blocks alive together at an estimator's peak (probes, their
        products, a basis): the result's `bytes_peak` is the most ever noted."""
        total = sum(
            h.nbytes if isinstance(h, Basis) else h.numel() * h.element_size() for h in held
        )
        self.bytes_peak = max(self.bytes_peak, total)

    @property
    def hvps(self) -> int:
        """Products computed since the start."""
        return self.operator.hvps - self.before

    def result(
        self,
        estimate: float,
        se: float | None,
        ci: tuple[float, float] | None,
        probes: int,
        converged: bool | None = None,
        rounding_level: float = 0.0,
        limited_by: str | None = None,
    ) -> TraceEstimate:
        """The estimate; `ci` is the statistical interval, widened here by the rounding."""
        seconds = time.perf_counter() - self.start
        return TraceEstimate(
            estimate,
            se,
            widen(ci, rounding_level),
            probes,
            self.hvps,
            seconds,
            self.method,
            converged,
            rounding_level,
            limited_by,
            self.bytes_peak,
        )

    def exact(self, trace: float, mass: float) -> TraceEstimate:
        """The trace computed exactly (the basis spans the space) from forms of absolute mass
        `mass`: standard error 0, the interval its rounding, converged (limited by it)."""
        level = quadratic_rounding(self.eps, mass)
        return self.result(
            trace, 0.0, (trace, trace), 0, True, level, limited_by=rounding(self.dtype)
        )


def t_quantile(n: int, level: float = 0.975) -> float:
    """Two-sided 95% quantile: Student t with n−1 degrees of freedom (normal for large n)."""
    if n >= 200:
        return 1.959963984540054
    try:
        from scipy.stats import t

        return float(t.ppf(level, n - 1))
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn here
        return 1.959963984540054


#: Random signs drawn per call of torch.randint: drawing them is one thread's work (seconds
#: for a block of probes of a model with millions of parameters), so a cancel is checked
#: between chunks. Row chunks draw the same stream as one call.
SIGNS_PER_DRAW = 1 << 22


def rademacher(dim: int, k: int, gen: torch.Generator, device: torch.device | str) -> Tensor:
    """k vectors of random signs (dim×k, float64)."""
    rows = max(1, SIGNS_PER_DRAW // max(k, 1))
    out = torch.empty(dim, k, dtype=torch.float64)
    for start in range(0, dim, rows):
        checkpoint()
        signs = torch.randint(0, 2, (min(rows, dim - start), k), generator=gen, dtype=torch.int8)
        out[start : start + rows] = signs.to(torch.float64) * 2 - 1
    return out.to(device)


def sphere_probes(dim: int, k: int, gen: torch.Generator, device: torch.device | str) -> Tensor:
    """k vectors uniform on the sphere of radius √dim (so E vvᵀ = I)."""
    g = torch.randn(dim, k, generator=gen, dtype=torch.float64)
    return (g * (math.sqrt(dim) / g.norm(dim=0, keepdim=True))).to(device)


def summary(samples: list[float]) -> Summary:
    """Mean, its standard error and 95% t interval (no error bar from fewer than 2 samples)."""
    n = len(samples)
    x = torch.tensor(samples, dtype=torch.float64)
    mean = float(x.mean())
    if n < 2:
        return mean, None, None
    se = float(x.std(unbiased=True)) / math.sqrt(n)
    half = t_quantile(n) * se
    return mean, se, (mean - half, mean + half)


def plus_deflated_hutchinson(
    tally: Tally, Q: Basis, exact: float, g: int, alive: tuple[Tensor, ...] = ()
) -> tuple[float, float | None, tuple[float, float] | None, float]:
    """exact + Hutchinson on (I − QQᵀ)H(I − QQᵀ) with g Rademacher probes projected off Q;
    also the probes' mean absolute mass (for the rounding level). `alive`: the caller's
    blocks still held meanwhile (noted with the probes in `tally.hold`).

    Given Q the probes are independent of it, so their standard error is the estimate's."""
    operator = tally.operator
    G = Q.project_out(rademacher(operator.dim, g, tally.gen, Q.device))
    HG = operator.matmat(G)
    tally.hold(Q, G, HG, *alive)
    rest, se, _ = summary((G * HG).sum(dim=0).tolist())
    mass = float(abs_mass(G, HG).mean())
    estimate = exact + rest
    ci = None if se is None else (estimate - t_quantile(g) * se, estimate + t_quantile(g) * se)
    return estimate, se, ci, mass
