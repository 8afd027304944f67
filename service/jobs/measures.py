"""The measure catalogue, read from the contract (tasks.contract.measures.catalogue), so a new
measure shows up here, in the docs and in the SDK without editing the gateway."""

from __future__ import annotations

from fastapi import APIRouter

from service.jobs.schemas import MeasureInfo
from tasks.contract.measures import catalogue

router = APIRouter(prefix="/v1/measures", tags=["measures"])


@router.get("", response_model=list[MeasureInfo], summary="List measures")
def list_measures() -> list[MeasureInfo]:
    """Each measure's name, one-line summary and the JSON schema of its `params`."""
    return [
        MeasureInfo(name=m.name, summary=m.summary, params_schema=m.params.model_json_schema())
        for m in catalogue.measures().values()
    ]
