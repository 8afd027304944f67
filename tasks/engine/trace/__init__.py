"""Trace and Frobenius norm of a curvature operator from matrix-free products.

One module per estimator: `hutchinson` (plain Monte Carlo), `hutchpp` (Hutch++), `xtrace`
(XTrace, leave-one-out), `krylov` (block Krylov deflation, the trace measure's default) and
`frobenius` (‖H‖_F, sharing Hutchinson's probe loop); `common` holds the result type and the
`Tally` every estimator starts with (operator, seeded generator, clock, HVP count), the probes
and the t interval. Every estimator takes a `LinearOperator` or a dense tensor.
"""

from tasks.engine.trace.common import TraceEstimate, sphere_probes, t_quantile
from tasks.engine.trace.frobenius import frobenius
from tasks.engine.trace.hutchinson import hutchinson
from tasks.engine.trace.hutchpp import hutchpp
from tasks.engine.trace.krylov import block_krylov
from tasks.engine.trace.xtrace import xtrace

__all__ = [
    "TraceEstimate",
    "block_krylov",
    "frobenius",
    "hutchinson",
    "hutchpp",
    "sphere_probes",
    "t_quantile",
    "xtrace",
]
