"""One figure on an Agg canvas, written as PNG bytes.

The object API (Figure + FigureCanvasAgg) rather than pyplot: pyplot keeps a global list of
figures and a current figure, which is not safe across the gateway's request threads; a Figure
made here belongs to one call only and is garbage once its bytes are written.
"""

from __future__ import annotations

import io
from typing import Any

DPI = 100


def new_figure(width_in: float = 7.0, height_in: float = 4.5, rows: int = 1) -> tuple[Any, list]:
    """A figure with `rows` vertically stacked axes sharing x (when rows > 1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=rows > 1, squeeze=False)[:, 0].tolist()
    return fig, axes


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.canvas.print_png(buf)
    return buf.getvalue()


def finite(values: list[float | None]) -> list[float]:
    """Values that can be drawn (None, NaN and ±Inf dropped)."""
    import math

    return [float(v) for v in values if v is not None and math.isfinite(float(v))]
