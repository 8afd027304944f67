"""Shapes of the job domain's own responses (the job spec and record live in tasks.contract.spec).

Kept apart from the routers so the OpenAPI document, and the SDK built from it, change only
when a response shape does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class MeasureInfo(BaseModel):
    name: str
    summary: str
    params_schema: dict[str, Any] = Field(description="JSON schema of the measure's params.")
