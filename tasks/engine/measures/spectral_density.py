"""spectral_density computed by stochastic Lanczos quadrature (tasks.engine.density). Declared in
tasks.contract.measures.spectral_density."""

from __future__ import annotations

from tasks.contract.measures.spectral_density import Params
from tasks.engine.context import MeasureContext
from tasks.engine.density import slq
from tasks.engine.measures.base import attributes, measured

EFFECTIVE_RANK_NOTE = (
    "centre of the Markov-Stieltjes bracket on the near-zero mass, averaged over runs; the "
    "interval adds the runs' 95% sampling error. Counting the nodes inside the threshold "
    "(effective_rank_naive) is biased by the nodes that straddle it; more steps narrow "
    "the bracket. It also allows for rounding: eigenvalues within rounding_level of the "
    "threshold may lie on either side (effective_rank_rounding is the width this adds)"
)


def run(ctx: MeasureContext, params: Params) -> dict:
    op = ctx.operator(params)
    est = slq(op, **params.options(), ctx=ctx)
    diagnostics = {
        "effective_rank": est.effective_rank,
        "effective_rank_ci95": list(est.effective_rank_ci95),
        "effective_rank_naive": est.effective_rank_naive,
        "effective_rank_note": EFFECTIVE_RANK_NOTE,
        "effective_rank_rounding": est.effective_rank_rounding,
        "rounding_level": est.rounding_level,
        "basis_vectors_peak": est.basis_peak,
        "bytes_per_parameter": est.bytes_per_parameter,
        **attributes(est, "near_zero_share", "lambda_max", "lambda_min", "sigma", "grid"),
        **attributes(est, "density", "nodes", "weights"),
    }
    return measured(est.effective_rank, diagnostics, hvps=op.hvps)
