"""The SDK's typed models agree with the committed openapi.yaml, schema by schema.

A field added to, removed from or made required in the service, a field whose type or default
changed, shows up here as a failing test, before an SDK release ships a model that drops,
invents or misreads data.
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


# ------------------------------------------------------------------ types and defaults
def _shape(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A comparable form of a JSON schema: the type, what an array or map holds, a union's
    members, an enum's values (whether inline, a Literal, or a $ref to an enum schema), the
    name of a referenced object schema, and `date-time`. Titles and descriptions drop out.
    An unconstrained schema (the SDK's `Any`) is "any"."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name, {})
        if "enum" in target:
            return ("enum", frozenset(target["enum"]))
        return ("ref", name)
    if "enum" in schema:
        return ("enum", frozenset(schema["enum"]))
    if "const" in schema:
        return ("enum", frozenset([schema["const"]]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            members: set[Any] = set()
            for sub in schema[key]:
                s = _shape(sub, defs)
                members |= s[1] if isinstance(s, tuple) and s[0] == "union" else {s}
            return ("union", frozenset(members)) if len(members) > 1 else members.pop()
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _shape(schema["allOf"][0], defs)
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        if "prefixItems" in schema:
            return ("tuple", tuple(_shape(s, defs) for s in schema["prefixItems"]))
        return ("array", _shape(items, defs) if items else "any")
    if kind == "object":
        extra = schema.get("additionalProperties")
        return ("map", _shape(extra, defs) if isinstance(extra, dict) else "any")
    if kind == "string" and schema.get("format") == "date-time":
        return "date-time"
    return kind or "any"


def _sdk_shapes(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return doc.get("properties", {}), {**SCHEMAS, **doc.get("$defs", {})}


def _accepts(sdk: Any, api: Any) -> bool:
    """The SDK's type is the API's, or the SDK leaves that part open (`Any`)."""
    if sdk == "any" or sdk == api:
        return True
    if isinstance(sdk, tuple) and isinstance(api, tuple) and sdk[0] == api[0]:
        if sdk[0] in ("array", "map"):
            return _accepts(sdk[1], api[1])
        if sdk[0] == "union" and len(sdk[1]) == len(api[1]):
            return all(any(_accepts(s, a) for s in sdk[1]) for a in api[1])
    return False


def _without_null(shape: Any) -> Any:
    if isinstance(shape, tuple) and shape[0] == "union" and "null" in shape[1]:
        rest = shape[1] - {"null"}
        return ("union", rest) if len(rest) > 1 else next(iter(rest))
    return shape


@pytest.mark.parametrize("name", OBJECTS)
def test_field_types_agree(name: str) -> None:
    """Each field has the API's type: the same scalar, the same item and member types, the
    same referenced schema. The SDK may be looser only where it says `Any`, and by None on a
    field the API does not require (None is "not sent": requests drop it)."""
    sdk_props, sdk_defs = _sdk_shapes(_sdk_model(name))
    required = set(SCHEMAS[name].get("required", []))
    wrong = []
    for prop, spec in SCHEMAS[name].get("properties", {}).items():
        api = _shape(spec, SCHEMAS)
        sdk = _shape(sdk_props.get(prop, {}), sdk_defs)
        if prop not in required and not _accepts(sdk, api):
            sdk = _without_null(sdk)
        if not _accepts(sdk, api):
            wrong.append(f"{prop}: SDK {sdk}, openapi.yaml {api}")
    assert not wrong, f"{name}: " + "; ".join(wrong)


@pytest.mark.parametrize("name", OBJECTS)
def test_defaults_agree(name: str) -> None:
    """Every default in the SDK's models equals openapi.yaml's: what the SDK shows as a default
    (and fills into a record an older gateway did not send) is what the server applies."""
    props, model = SCHEMAS[name].get("properties", {}), _sdk_model(name)
    wrong = []
    for prop, field in model.model_fields.items():
        if field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        default = default.value if hasattr(default, "value") else default  # an enum member
        schema = props.get(prop, {})
        if default in (None, {}, []) and "default" not in schema:
            continue  # optional, or an empty default_factory (openapi.yaml shows neither)
        if default != schema.get("default"):
            wrong.append(f"{prop}: SDK {default!r}, openapi.yaml {schema.get('default')!r}")
    assert not wrong, f"{name}: " + "; ".join(wrong)
