"""The base of the SDK's typed models and the cursor page they are listed in: a leaf module, so
the job and study model modules (types.py, study_types.py) both build on it without importing
each other."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    """Every model keeps the fields a newer gateway adds (`extra="allow"`)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


T = TypeVar("T")


class Page(ApiModel, Generic[T]):
    """One page of a cursor-paginated list: pass `next_cursor` back for the next (None: last).

    openapi.yaml names one schema per item type; `JobPage`, `TrajectoryPage`, `StudyPage`,
    `ModelPage` and `DatasetPage` are this model for those items."""

    items: list[T]
    next_cursor: str | None = None
