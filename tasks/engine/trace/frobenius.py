"""Frobenius norm: ‖H‖²_F = E‖Hv‖² over Rademacher v; report √mean with the delta-method
standard error se/(2√mean). Same probe loop as Hutchinson."""

from __future__ import annotations

import math

from torch import Tensor

from tasks.engine.trace.common import Summary, summary, t_quantile
from tasks.engine.trace.hutchinson import probe_estimator


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


_DOC = "‖H‖_F ≈ √(mean ‖Hv‖²); std_error and ci95 refer to ‖H‖_F (delta method)."
frobenius = probe_estimator(_squared_norm, _norm_summary, "frobenius", _DOC)
