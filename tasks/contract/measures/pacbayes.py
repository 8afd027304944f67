"""What the pacbayes_* measures share: the search for σ* (`FlatnessParams`) and the fields
they declare alike. Not a measure: the catalogue lists the measures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from tasks.contract.measures.base import MeasureParams

SEARCH_EXAMPLES = "Estimate accuracies on the first N examples only (all when omitted)."


def open_unit(default: float, description: str) -> Any:
    """A field strictly between 0 and 1: a confidence δ, an accuracy drop."""
    return Field(default=default, gt=0, lt=1, description=description)


def drop_field(symbol: str) -> Any:
    """The `target_drop` field, naming the σ it defines (σ*, σ′*, σ)."""
    return open_unit(0.1, f"Expected train-accuracy drop that defines {symbol}.")


class FlatnessParams(MeasureParams):
    """The search for σ* that pacbayes_flatness, pacbayes_mag_flatness and pacbayes_orig
    share. Each measure declares `max_examples` itself (after its own fields, in the order
    its schema lists them) and may name σ differently in `target_drop`."""

    target_drop: float = drop_field("σ*")
    sigma_max: float = Field(
        default=2.0, gt=0, le=1000, description="Upper end of the bisection interval [0, σ_max]."
    )
    depth: int = Field(default=15, ge=1, le=60, description="Bisection steps.")
    samples: int = Field(
        default=10, ge=1, le=10_000, description="Monte Carlo noise draws per bisection step."
    )
    if TYPE_CHECKING:
        max_examples: int | None
