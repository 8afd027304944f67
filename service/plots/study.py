"""A study's measure-versus-gap scatter: does the measure rank the generalization gaps?

Each point is one model of the sweep: x = the measure's value, y = its measured
generalization gap. Kendall's τ over all pairs (i, j),

    τ = (concordant − discordant) / (n(n−1)/2),   concordant: sign(xᵢ−xⱼ) = sign(gapᵢ−gapⱼ),

is in the title: +1 means the measure orders the gaps perfectly, 0 no better than chance. A
trivial baseline (1/learning rate, ‖w‖, ...) can be drawn on a twin x axis, so a reader sees
at once whether the measure beats it (Jiang et al. 2020; docs/studies.md).
"""

from __future__ import annotations

import math

from service.plots._canvas import new_figure, png_bytes


def _fmt_tau(tau: float | None) -> str:
    return "n/a" if tau is None or not math.isfinite(tau) else f"{tau:+.3f}"


def render_study_scatter(
    measure: str,
    xs: list[float],
    gaps: list[float],
    tau: float | None,
    labels: list[str] | None = None,
    baseline: dict | None = None,
) -> bytes:
    """PNG of `gaps` against `xs`, Kendall τ in the title, each point labelled.

    `labels[i]` names point i (e.g. the job's labels "lr=0.1,bs=32"). `baseline`, optional:
    {"name": str, "xs": list[float], "tau": float | None} — drawn as hollow squares against a
    second x axis at the top, its τ in the title beside the measure's. Points with a missing
    or non-finite coordinate are skipped (the count drawn is in the title).
    """
    if len(xs) != len(gaps):
        raise ValueError(f"xs has {len(xs)} values but gaps has {len(gaps)}")
    if labels is not None and len(labels) != len(xs):
        raise ValueError(f"labels has {len(labels)} entries but xs has {len(xs)}")
    fig, (ax,) = new_figure(7.0, 5.0)
    pts = [
        (float(x), float(g), labels[i] if labels else None)
        for i, (x, g) in enumerate(zip(xs, gaps, strict=True))
        if x is not None and g is not None and math.isfinite(x) and math.isfinite(g)
    ]
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="C0", zorder=3, label=measure)
        for x, g, name in pts:
            if name:
                ax.annotate(
                    name, (x, g), xytext=(4, 4), textcoords="offset points", fontsize=7, alpha=0.8
                )
    else:
        ax.text(0.5, 0.5, "no finite points", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(measure)
    ax.set_ylabel("generalization gap")
    ax.grid(True, alpha=0.3)
    title = f"{measure} vs gap: Kendall τ = {_fmt_tau(tau)} (n = {len(pts)})"
    if baseline and baseline.get("xs") is not None:
        bname = str(baseline.get("name", "baseline"))
        bxs = list(baseline["xs"])
        if len(bxs) != len(gaps):
            raise ValueError(f"baseline xs has {len(bxs)} values but gaps has {len(gaps)}")
        bpts = [
            (float(x), float(g))
            for x, g in zip(bxs, gaps, strict=True)
            if x is not None and g is not None and math.isfinite(x) and math.isfinite(g)
        ]
        top = ax.twiny()
        if bpts:
            top.scatter(
                [p[0] for p in bpts],
                [p[1] for p in bpts],
                marker="s",
                facecolors="none",
                edgecolors="C3",
                label=f"baseline: {bname}",
            )
        top.set_xlabel(f"baseline: {bname}", color="C3")
        top.tick_params(axis="x", colors="C3")
        title += f"\nbaseline {bname}: τ = {_fmt_tau(baseline.get('tau'))}"
    ax.set_title(title, fontsize=10)
    return png_bytes(fig)
