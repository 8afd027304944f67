"""Frobenius norm: ‖H‖²_F = E‖Hv‖² over Rademacher v; report √mean with the delta-method
standard error se/(2√mean). Same probe loop as Hutchinson (rtol, converged and limited_by
alike). The interval adds the rounding level ROUNDING_FACTOR·eps·√dim·‖H‖_F (derived in
tasks.engine.trace.rounding)."""

from __future__ import annotations

import math

from torch import Tensor

from tasks.engine.trace.common import Summary, summary, t_quantile
from tasks.engine.trace.hutchinson import probe_estimator
from tasks.engine.trace.rounding import frobenius_rounding


def _norm_summary(samples: list[float]) -> Summary:
    """√(mean ‖Hv‖²), its delta-method standard error and 95% interval (clipped at 0)."""
    mean, se, _ = summary(samples)
    fro = math.sqrt(max(mean, 0.0))
    if se is None or fro == 0.0:
        return fro, None, None
    fse = se / (2 * fro)
    half = t_quantile(len(samples)) * fse
    return fro, fse, (max(fro - half, 0.0), fro + half)


def _squared_norm(V: Tensor, HV: Tensor) -> Tensor:
    """‖Hv‖² for each column v of V."""
    return (HV * HV).sum(dim=0)


def _norm_rounding(estimate: float, mass: float, dim: int, eps: float) -> float:
    """ROUNDING_FACTOR·eps·√dim·‖H‖_F with the estimate for ‖H‖_F."""
    return frobenius_rounding(eps, dim, estimate)


_DOC = (
    "‖H‖_F ≈ √(mean ‖Hv‖²); std_error and ci95 refer to ‖H‖_F (delta method); ci95 includes "
    "the rounding level ROUNDING_FACTOR·eps·√dim·‖H‖_F."
)
frobenius = probe_estimator(_squared_norm, _norm_summary, "frobenius", _DOC, _norm_rounding)
