"""The SDK's typed models agree with the committed openapi.yaml, schema by schema.

A field added to, removed from or made required in the service shows up here as a failing
test, before an SDK release ships a model that drops or invents data.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sharpness_client import types

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"


def _schemas() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(OPENAPI.read_text())
    return doc["components"]["schemas"]


SCHEMAS = _schemas()
OBJECTS = sorted(n for n, s in SCHEMAS.items() if s.get("type") == "object")
ENUMS = sorted(n for n, s in SCHEMAS.items() if "enum" in s)


def _literal_values(annotation: Any) -> set[Any] | None:
    """The values of a Literal annotation, looking through Optional."""
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        found = _literal_values(arg)
        if found is not None:
            return found
    return None


def _sdk_model(name: str) -> type[BaseModel]:
    model = getattr(types, name, None)
    assert model is not None, f"openapi schema {name} has no model in sharpness_client.types"
    return model


def test_every_schema_has_a_model() -> None:
    missing = [n for n in SCHEMAS if not hasattr(types, n)]
    assert not missing, f"add to sharpness_client/types.py: {missing}"


@pytest.mark.parametrize("name", OBJECTS)
def test_properties_and_required_fields_agree(name: str) -> None:
    schema, model = SCHEMAS[name], _sdk_model(name)
    props = set(schema.get("properties", {}))
    fields = set(model.model_fields)
    assert fields - props == set(), f"{name}: fields the API does not have"
    assert props - fields == set(), f"{name}: API properties the SDK lacks"
    required = {f for f, info in model.model_fields.items() if info.is_required()}
    assert required == set(schema.get("required", [])), f"{name}: required fields differ"


@pytest.mark.parametrize("name", OBJECTS)
def test_enum_values_agree(name: str) -> None:
    model = _sdk_model(name)
    for prop, spec in SCHEMAS[name].get("properties", {}).items():
        if "enum" in spec:
            values = _literal_values(model.model_fields[prop].annotation)
            assert values == set(spec["enum"]), f"{name}.{prop}: enum differs"


@pytest.mark.parametrize("name", ENUMS)
def test_enums_agree(name: str) -> None:
    assert {m.value for m in _sdk_model(name)} == set(SCHEMAS[name]["enum"])  # type: ignore[attr-defined]
