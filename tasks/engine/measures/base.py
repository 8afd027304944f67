"""The small pieces every measure's `run` is written with: the result dict (`measured`) and
diagnostics read off an estimate (`attributes`). The parameters they take are declared in
tasks/contract/measures/."""

from __future__ import annotations

from typing import Any


def attributes(source: object, *names: str) -> dict[str, Any]:
    """`{name: source.name}` for each name, in order: an estimate's fields as diagnostics."""
    return {name: getattr(source, name) for name in names}


def measured(
    value: Any, diagnostics: dict[str, Any], *, converged: bool | None = None, hvps: int = 0
) -> dict[str, Any]:
    """The dict every measure's `run` returns (the runner adds seconds, warnings, per_layer)."""
    return {"value": value, "converged": converged, "hvps": hvps, "diagnostics": diagnostics}
