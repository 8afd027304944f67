"""A trajectory: how close to the edge of stability each checkpoint is, and how the top
Hessian eigenvectors turn between checkpoints (Wang & Roberts 2024).

Top panel: λmax·η/2 per checkpoint. Gradient descent with learning rate η on a quadratic is
stable along an eigendirection only if λ < 2/η, so the ratio crosses 1 exactly at the edge of
stability; the line at 1 is drawn and the points above it are coloured.
Bottom panel: between consecutive checkpoints, |⟨v₁(t), v₁(t+1)⟩| (the top eigenvector's
overlap) and ‖V_tᵀV_{t+1}‖²_F / k (the top-k subspace overlap), both in [0, 1]; 1 means no
rotation. Drawn at the later checkpoint of each pair.
"""

from __future__ import annotations

import math

from service.plots._canvas import new_figure, png_bytes


def render_trajectory(
    xs: list[float],
    ratios: list[float | None],
    overlaps_top: list[float | None],
    overlaps_subspace: list[float | None],
    k: int,
    x_label: str = "checkpoint",
    title: str | None = None,
    ratio_label: str = "λmax · η / 2",
    edge_label: str = "edge of stability λmax = 2/η",
) -> bytes:
    """PNG of λmax·η/2 (`ratios`, one per checkpoint at `xs`) and the eigenvector overlaps
    (one per consecutive pair, `len(xs) − 1` of each, drawn at xs[1:])."""
    if len(ratios) != len(xs):
        raise ValueError(f"xs has {len(xs)} values but ratios has {len(ratios)}")
    pairs = max(len(xs) - 1, 0)
    for name, seq in (("overlaps_top", overlaps_top), ("overlaps_subspace", overlaps_subspace)):
        if len(seq) > pairs:
            raise ValueError(f"{name} has {len(seq)} values; at most {pairs} pairs for {len(xs)}")
    fig, (top, bottom) = new_figure(7.0, 6.0, rows=2)

    def ok(v: float | None) -> bool:
        return v is not None and math.isfinite(v)

    pts = [(x, r) for x, r in zip(xs, ratios, strict=True) if ok(r)]
    if pts:
        top.plot([p[0] for p in pts], [p[1] for p in pts], "-", color="C0", lw=1, alpha=0.6)
        for side, color, label in (
            ([p for p in pts if p[1] <= 1], "C0", "stable (< 1)"),
            ([p for p in pts if p[1] > 1], "C3", "beyond the edge (> 1)"),
        ):
            if side:
                top.scatter(
                    [p[0] for p in side], [p[1] for p in side], color=color, zorder=3, label=label
                )
    top.axhline(1.0, color="k", ls="--", lw=1, label=edge_label)
    top.set_ylabel(ratio_label)
    top.grid(True, alpha=0.3)
    top.legend(fontsize=8, loc="best")

    later = xs[1 : 1 + pairs]
    for seq, label, style, color in (
        (overlaps_top, "|⟨v₁(t), v₁(t+1)⟩|", "o-", "C1"),
        (overlaps_subspace, f"‖V_tᵀV_t+1‖²_F / k  (k = {k})", "s--", "C2"),
    ):
        pp = [(x, v) for x, v in zip(later, seq, strict=False) if ok(v)]
        if pp:
            bottom.plot([p[0] for p in pp], [p[1] for p in pp], style, color=color, label=label)
    bottom.set_ylim(-0.02, 1.05)
    bottom.set_ylabel("eigenvector overlap")
    bottom.set_xlabel(x_label)
    bottom.grid(True, alpha=0.3)
    if pairs:
        bottom.legend(fontsize=8, loc="lower left")
    else:
        bottom.text(
            0.5,
            0.5,
            "one checkpoint: no pairs",
            ha="center",
            va="center",
            transform=bottom.transAxes,
        )
    top.set_title(
        title or "Edge of stability and rotation of the top Hessian eigenvectors", fontsize=10
    )
    return png_bytes(fig)
