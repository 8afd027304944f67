"""The Hessian's spectral density from stochastic Lanczos quadrature (a job's spectral_density).

The curve is the Gaussian-smoothed quadrature measure Σᵢ wᵢ·N(x; θᵢ, σ²), normalised to
integrate to 1 (tasks/engine/density.py). NN Hessians put most of that mass near zero and a
few outliers far out, so the density is drawn on a log y axis (clipped at 1e-6 of its peak)
with the Ritz nodes θᵢ as a rug below it: the outliers are then visible as isolated ticks
even where the smoothed curve is invisibly small. λmax (the largest node) is marked.
"""

from __future__ import annotations

from service.plots._canvas import finite, new_figure, png_bytes


def render_spectral_density(
    grid: list[float],
    density: list[float],
    nodes: list[float] | list[list[float]] | None = None,
    lambda_max: float | None = None,
    title: str | None = None,
) -> bytes:
    """PNG of `density` over `grid`, Ritz `nodes` as a rug (one list per run, or flat), and a
    vertical line at `lambda_max` (default: the largest node)."""
    if len(grid) != len(density):
        raise ValueError(f"grid has {len(grid)} points but density has {len(density)}")
    flat: list[float] = []
    for item in nodes or []:
        flat.extend(item if isinstance(item, list | tuple) else [item])
    flat = finite(flat)
    if lambda_max is None and flat:
        lambda_max = max(flat)
    fig, (ax,) = new_figure(7.0, 4.5)
    ys = [max(float(d), 0.0) for d in density]
    peak = max(ys, default=0.0)
    floor = peak * 1e-6 if peak > 0 else 1e-12
    ax.plot(grid, [max(y, floor) for y in ys], color="C0", lw=1.5, label="density")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    if flat:
        # a rug: short ticks along the bottom, in axes coordinates for y
        ax.plot(
            flat,
            [0.02] * len(flat),
            "|",
            color="C2",
            markersize=10,
            alpha=0.6,
            transform=ax.get_xaxis_transform(),
            label="Ritz nodes",
        )
    if lambda_max is not None:
        ax.axvline(lambda_max, color="C3", ls="--", lw=1, label=f"λmax ≈ {lambda_max:.4g}")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density (log)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper center")
    ax.set_title(title or "Hessian spectral density (stochastic Lanczos quadrature)", fontsize=10)
    return png_bytes(fig)
