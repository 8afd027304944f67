"""A trajectory's eigenvector rotation related to its instability (Wang & Roberts 2024): the
overlaps of the steps that start beyond the edge of stability, apart from those that start
below it. Computed whenever a trajectory record is read, from its points' stability ratios
(tasks.engine.stability says where the edge lies) and its overlaps; torch-free."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def _group(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"pairs": 0, "starts": []}
    top = [r["top_overlap"] for r in rows]
    sub = [r["subspace_overlap"] for r in rows]
    return {
        "pairs": len(rows),
        "starts": [r["start"] for r in rows],
        "mean_top_overlap": statistics.fmean(top),
        "median_top_overlap": statistics.median(top),
        "min_top_overlap": min(top),
        "mean_subspace_overlap": statistics.fmean(sub),
        "median_subspace_overlap": statistics.median(sub),
        "min_subspace_overlap": min(sub),
    }


def edge_split(
    ratios: Sequence[float | None], overlaps: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Overlaps of the pairs (t, t+1) whose start t is beyond the edge (ratio > 1) apart from
    those whose start is below it; `ratios[t]` is checkpoint t's stability ratio. Says in
    words which group turned more (a lower overlap: more rotation), or why it cannot."""
    beyond: list[dict[str, Any]] = []
    below: list[dict[str, Any]] = []
    for o in overlaps:
        r = ratios[o["start"]] if o["start"] < len(ratios) else None
        if r is None or math.isnan(r):
            continue
        (beyond if r > 1.0 else below).append(o)
    out: dict[str, Any] = {"beyond_edge": _group(beyond), "below_edge": _group(below)}
    if not beyond or not below:
        where = "beyond" if not beyond else "below"
        out["summary"] = (
            f"no step starts {where} the edge of stability, so rotation past the edge cannot "
            "be compared with rotation below it"
        )
        return out
    a, b = out["beyond_edge"], out["below_edge"]
    more = "more" if a["mean_top_overlap"] < b["mean_top_overlap"] else "less"
    out["summary"] = (
        f"the top eigenvector turned {more} on steps past the edge: mean overlap "
        f"{a['mean_top_overlap']:.3f} over {a['pairs']} step(s) beyond it against "
        f"{b['mean_top_overlap']:.3f} over {b['pairs']} below it (top-k subspace: "
        f"{a['mean_subspace_overlap']:.3f} against {b['mean_subspace_overlap']:.3f}); "
        "a descriptive comparison of few steps, not a test"
    )
    return out
