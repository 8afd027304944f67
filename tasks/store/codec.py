"""How a run record's fields are stored in its Redis hash: one declaration per field.

A record is a hash of strings (tasks.store.keys). Each `Field` names the record attribute, the
hash field it lives in, how a value is written (`encode`) and read back (`decode`), and what an
absent field reads as; a `Prefixed` field gathers a family of hash fields (`progress:{name}`)
into one attribute. `RecordCodec` turns a whole hash into the keyword arguments of the record
model, and record values into hash fields; a new stored field is one line here.

The stored forms are the service's data format: records written by earlier versions must read
back, so an encoding changes only together with a reader of the old one."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tasks.contract import problem_types
from tasks.contract.spec import (
    EigenvectorOverlap,
    JobSpec,
    JobStatus,
    MeasureProgress,
    MeasureResult,
    Problem,
    TrajectoryPoint,
    TrajectorySpec,
)

Decode = Callable[[str], Any]
Encode = Callable[[Any], str]


def now() -> datetime:
    """The time records and heartbeats are stamped with (UTC)."""
    return datetime.now(UTC)


def timestamp(value: str | None) -> float | None:
    """Epoch seconds of a stored time; None for an absent one."""
    return datetime.fromisoformat(value).timestamp() if value else None


def encode_value(value: Any) -> Any:
    """A field-level write's stored value: scalars as Redis writes them, the rest as JSON."""
    return value if isinstance(value, str | int | float) else json.dumps(value, default=str)


def _none() -> Any:
    return None


def _text(value: Any) -> str:
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value)


def _json_or_str(value: Any) -> str:
    """JSON, with what JSON cannot spell (a datetime, a path) written as its str."""
    return json.dumps(value, default=str)


def _model_json(value: Any) -> str:
    return str(value.model_dump_json())


def _iso(value: datetime) -> str:
    return value.isoformat()


def _status(value: JobStatus | str) -> str:
    return JobStatus(value).value


def _flag(value: Any) -> str:
    return "1" if value and value != "0" else "0"


def _problem(value: str) -> Problem:
    error = Problem.model_validate_json(value)
    error.type = problem_types.current(error.type)  # written under the worker's former prefix
    return error


def _results(value: str) -> dict[str, MeasureResult]:
    return {k: MeasureResult.model_validate(v) for k, v in json.loads(value).items()}


def _points(value: str) -> list[TrajectoryPoint]:
    return [TrajectoryPoint.model_validate(p) for p in json.loads(value)]


def _overlaps(value: str) -> list[EigenvectorOverlap]:
    return [EigenvectorOverlap.model_validate(o) for o in json.loads(value)]


def _by_index(entries: dict[str, Any]) -> list[Any]:
    """Entries keyed by checkpoint index, in index order."""
    return [p for _, p in sorted((int(i), p) for i, p in entries.items())]


@dataclass(frozen=True)
class Field:
    """One record attribute and how it is stored in the record's hash."""

    attr: str
    decode: Decode
    encode: Encode = _text
    stored: str = ""  # the hash field, when it is not named as the attribute
    default: Callable[[], Any] = _none  # what an absent or empty field reads as
    required: bool = False  # an absent field is a broken record (KeyError)

    @property
    def name(self) -> str:
        return self.stored or self.attr


@dataclass(frozen=True)
class Prefixed:
    """A family of hash fields `{prefix}:{name}`, gathered into one attribute."""

    attr: str
    decode: Decode
    encode: Encode
    gather: Callable[[dict[str, Any]], Any] = dict

    def name(self, key: str | int) -> str:
        return f"{self.attr}:{key}"


@dataclass(frozen=True)
class RecordCodec:
    """The stored form of one kind of record."""

    fields: tuple[Field, ...]
    prefixed: tuple[Prefixed, ...] = ()
    by_attr: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_attr", {f.attr: f for f in self.fields})

    def extend(self, fields: Iterable[Field], prefixed: Iterable[Prefixed] = ()) -> RecordCodec:
        """This codec with more fields (a kind's own, after the shared ones)."""
        return RecordCodec((*self.fields, *fields), (*self.prefixed, *prefixed))

    def decode(self, record_id: str, raw: dict[str, str]) -> dict[str, Any]:
        """The record model's keyword arguments from its hash."""
        out: dict[str, Any] = {"id": record_id}
        for f in self.fields:
            value = raw[f.name] if f.required else raw.get(f.name)
            out[f.attr] = f.decode(value) if value else f.default()
        for p in self.prefixed:
            head = f"{p.attr}:"
            entries = {k[len(head) :]: p.decode(v) for k, v in raw.items() if k.startswith(head)}
            out[p.attr] = p.gather(entries)
        return out

    def encode(self, **values: Any) -> dict[str, Any]:
        """Hash fields from record values, by attribute name; a field this kind does not
        declare is written as a field-level write writes it (`encode_value`)."""
        out: dict[str, Any] = {}
        for attr, value in values.items():
            f = self.by_attr.get(attr)
            out[f.name if f else attr] = f.encode(value) if f else encode_value(value)
        return out

    def prefixed_field(self, attr: str, key: str | int, value: Any) -> tuple[str, str]:
        """The hash field and stored value of one entry of a prefixed family."""
        family = next(p for p in self.prefixed if p.attr == attr)
        return family.name(key), family.encode(value)


def _time(attr: str, required: bool = False) -> Field:
    return Field(attr, datetime.fromisoformat, _iso, required=required)


# the fields every run record has (tasks.contract.spec.RunRecord)
RUN_RECORD = RecordCodec(
    (
        Field("status", JobStatus, _status, required=True),
        Field("queue", str, default=lambda: "cpu"),
        _time("created_at", required=True),
        _time("started_at"),
        _time("finished_at"),
        Field("error", _problem, _model_json),
        Field("worker", str),
        Field("device", str),
        Field("versions", json.loads, _json, default=dict),
        Field("attempts", int, default=lambda: 0),
        Field("attempt_history", json.loads, _json, stored="attempt_log", default=list),
        Field("cancel_requested", lambda v: v == "1", _flag, default=lambda: False),
        Field("cancelled_by", str),
    ),
    (Prefixed("progress", MeasureProgress.model_validate_json, _model_json),),
)

JOB = RUN_RECORD.extend(
    (
        Field("spec", JobSpec.model_validate_json, _model_json, required=True),
        Field("results", _results, _json_or_str, default=dict),
        Field("evaluation", json.loads, _json_or_str),
    )
)

TRAJECTORY = RecordCodec(
    (
        *RUN_RECORD.fields,
        Field("spec", TrajectorySpec.model_validate_json, _model_json, required=True),
        Field("points", _points, _json_or_str, default=list),
        Field("overlaps", _overlaps, _json_or_str, default=list),
    ),
    (Prefixed("progress", MeasureProgress.model_validate_json, _model_json, _by_index),),
)
