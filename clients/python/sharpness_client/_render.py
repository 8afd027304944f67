"""Plain-text tables for the CLI: aligned columns, no colours, nothing to install.

Ops read `sharpness queue` in a terminal or a log; pipelines use `--json` instead, so these
renderings may change freely.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sharpness_client._converged as _converged
from sharpness_client._converged import number
from sharpness_client.types import (
    DatasetInfo,
    Job,
    JobStatus,
    MeasureInfo,
    MeasureProgress,
    MeasureResult,
    ModelInfo,
    QueueStatus,
)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def seconds(value: float | None) -> str | None:
    if value is None:
        return None
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def when(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def interval(diagnostics: dict[str, Any]) -> str | None:
    """A result's 95% interval, `[lo, hi]`, marked `~` when the service calls it approximate."""
    ci = diagnostics.get("ci95")
    if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)):
        return None
    mark = "~" if diagnostics.get("ci95_note") else ""
    return f"{mark}[{ci[0]:.6g}, {ci[1]:.6g}]"


def yes_no(value: bool | None) -> str | None:
    return None if value is None else ("yes" if value else "NO")


def converged(r: dict[str, Any]) -> str | None:
    """The CONVERGED cell: yes or NO, with what limited the run unless it was the tolerance:
    `yes (float32 rounding)`, `NO (iteration budget)`."""
    cell = yes_no(r.get("converged"))
    by = _converged.limited_by(r)
    if cell is None or by is None or by == _converged.TOLERANCE:
        return cell
    return f"{cell} ({by})"


def _result_row(name: str, r: dict[str, Any] | MeasureResult) -> list[Any]:
    if isinstance(r, MeasureResult):
        r = r.model_dump()
    diag = r.get("diagnostics") or {}
    return [
        name,
        number(r.get("value")),
        interval(diag),
        converged(r),
        r.get("hvps"),
        seconds(r.get("seconds")),
    ]


def _missing(j: Job, p: MeasureProgress | None) -> str:
    """What a measure without a result is doing, or why it has none."""
    if p is not None and p.state == "failed":
        return "(failed)"
    if j.status == JobStatus.failed:
        return "(failed)" if p is not None and p.state == "running" else "(not run: job failed)"
    if j.status == JobStatus.cancelled:
        return "(cancelled)" if p is not None and p.state == "running" else "(not run: cancelled)"
    if p is None or p.state == "pending":
        return "(pending)"
    return f"({p.state}, iteration {p.iteration})"


def job(j: Job) -> str:
    """The job's head, a table with one row per measure (and one per layer under it, indented),
    then every warning and non-convergence spelled out."""
    head = [
        f"job       {j.id}",
        f"status    {j.status.value}",
        f"queue     {j.queue}   worker {j.worker or '-'}   device {j.device or '-'}",
        f"created   {when(j.created_at)}   finished {when(j.finished_at) or '-'}",
    ]
    if j.spec.labels:
        head.append("labels    " + ", ".join(f"{k}={v}" for k, v in j.spec.labels.items()))
    if j.error is not None:
        head.append(f"error     {j.error.title}: {j.error.detail or ''}")
    ev = j.evaluation or {}
    if ev.get("loss") is not None:
        acc = ev.get("accuracy")
        acc_text = f", accuracy {acc:.4g}" if isinstance(acc, int | float) else ""
        n = ev.get("num_examples")
        head.append(
            f"data      loss {ev['loss']:.4g}{acc_text}" + (f" on {n} examples" if n else "")
        )
    rows = []
    for m in j.spec.measures:
        r = j.results.get(m.name)
        if r is None:
            rows.append([m.name, _missing(j, j.progress.get(m.name)), None, None, None, None])
            continue
        rows.append(_result_row(m.name, r))
        for layer, lr in (r.per_layer or {}).items():
            if isinstance(lr, dict):
                rows.append(_result_row(f"  {layer}", lr))
    headers = ["MEASURE", "VALUE", "95% INTERVAL", "CONVERGED", "HVPS", "TIME"]
    body = table(headers, rows)
    notes = notices(j)
    return "\n".join(head) + "\n\n" + body + ("\n\n" + "\n".join(notes) if notes else "")


def not_converged(j: Job) -> list[str]:
    """Measures (and per-layer blocks, `name[layer]`) whose `converged` is false: a budget
    stopped them. Rounding-limited results converged and are not listed."""
    return [m.where for m in _converged.misses(j)]


def notices(j: Job) -> list[str]:
    """One line per warning, per measure that did not converge (the budget that stopped it
    and the fix) and per measure limited by rounding, for people to read."""
    out = []
    found = {m.where: m for m in _converged.misses(j)}
    for name, r in j.results.items():
        diag = r.diagnostics or {}
        if name in found:
            out.append(f"NOT CONVERGED {found[name].text()}")
        elif note := _converged.converged_note(r):
            out.append(f"note {name}: {note}")
        if negative := _converged.negative_note(name, r):
            out.append(f"note {name}: {negative}")
        for w in r.warnings:
            out.append(f"warning {name}: {w}")
        if diag.get("ci95_note"):
            out.append(f"note {name}: {diag['ci95_note']}")
        for layer, lr in (r.per_layer or {}).items():
            if not isinstance(lr, dict):
                continue
            if f"{name}[{layer}]" in found:
                out.append(f"NOT CONVERGED {found[f'{name}[{layer}]'].text()}")
            for w in lr.get("warnings") or []:
                out.append(f"warning {name}[{layer}]: {w}")
    return out


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_type(s, defs) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"list of {_type(schema['items'], defs)}"
    return str(kind)


def _bounds(schema: dict[str, Any]) -> str | None:
    signs = (
        ("exclusiveMinimum", "> "),
        ("minimum", "≥ "),
        ("exclusiveMaximum", "< "),
        ("maximum", "≤ "),
        ("minItems", "items ≥ "),
        ("maxItems", "items ≤ "),
    )
    parts = [f"{sign}{number(schema[key])}" for key, sign in signs if key in schema]
    for sub in schema.get("anyOf", []):
        if isinstance(sub, dict) and (inner := _bounds(sub)):
            parts.append(inner)
    return ", ".join(parts) or None


def measure(m: MeasureInfo) -> str:
    """One measure: its summary, then each parameter's type, default and bounds, then what
    each parameter means."""
    schema = m.params_schema
    defs = schema.get("$defs", {})
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    rows = [
        [
            name,
            _type(p, defs),
            "(required)" if name in required else json.dumps(p.get("default")),
            _bounds(p),
        ]
        for name, p in props.items()
    ]
    out = [f"{m.name}: {m.summary}", "", table(["PARAM", "TYPE", "DEFAULT", "BOUNDS"], rows)]
    described = [(n, p["description"]) for n, p in props.items() if p.get("description")]
    if described:
        out.append("")
        for name, text in described:
            out.append(
                textwrap.fill(text, 100, initial_indent=f"{name}: ", subsequent_indent="    ")
            )
    common = {"parameters", "per_layer", "seed", "curvature"}  # every measure takes these
    example = next((n for n in props if n not in common), next(iter(props), None))
    if example is not None:
        out += ["", f"set one with: sharpness measure ... --param {m.name}.{example}=VALUE"]
    return "\n".join(out)


def jobs(items: Sequence[Job]) -> str:
    rows = [
        [
            j.id,
            j.status.value,
            ",".join(m.name for m in j.spec.measures),
            when(j.created_at),
            ",".join(f"{k}={v}" for k, v in j.spec.labels.items()) or None,
        ]
        for j in items
    ]
    return table(["ID", "STATUS", "MEASURES", "CREATED", "LABELS"], rows)


def queue(q: QueueStatus) -> str:
    depths = table(
        ["QUEUE", "WAITING", "RESERVED", "QUEUED JOBS", "OLDEST WAIT"],
        [
            [d.name, d.waiting, d.reserved, d.queued_jobs, seconds(d.oldest_queued_age_s)]
            for d in q.queues
        ],
    )
    workers = table(
        ["WORKER", "DEVICE", "LAST HEARTBEAT", "AGE"],
        [[w.hostname, w.device, when(w.last_seen), seconds(w.age_s)] for w in q.workers],
    )
    running = table(
        ["RUNNING JOB", "QUEUE", "WORKER", "DEVICE", "STARTED"],
        [[r.id, r.queue, r.worker, r.device, when(r.started_at)] for r in q.running],
    )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(q.jobs_by_status.items())) or "none"
    oldest = seconds(q.oldest_queued_age_s) or "-"
    return "\n\n".join(
        [depths, workers, running, f"oldest queued job waiting: {oldest}\njobs: {counts}"]
    )


def size(n: int) -> str:
    """Bytes in the nearest unit: 512 B, 1.5 KiB, 2.0 MiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _names(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(key)


def models(items: Sequence[ModelInfo]) -> str:
    rows = [
        [m.id, m.format, m.head or m.architecture, size(m.size_bytes), when(m.created_at)]
        + [m.filename]
        for m in items
    ]
    if not rows:
        return "no models uploaded (sharpness models upload FILE)"
    return table(["ID", "FORMAT", "HEAD/ARCH", "SIZE", "CREATED (UTC)", "FILENAME"], rows)


def datasets(items: Sequence[DatasetInfo]) -> str:
    rows = [
        [d.id, d.format, d.num_examples, _names(d.inputs_key), d.targets_key]
        + [size(d.size_bytes), when(d.created_at), d.filename]
        for d in items
    ]
    if not rows:
        return "no datasets uploaded (sharpness datasets upload FILE)"
    headers = ["ID", "FORMAT", "EXAMPLES", "INPUTS", "TARGETS", "SIZE", "CREATED (UTC)"]
    return table([*headers, "FILENAME"], rows)


def upload(noun: str, info: ModelInfo | DatasetInfo) -> str:
    """One upload's record as `field  value` lines (arrays as name dtype shape)."""
    rows: list[list[Any]] = [
        [noun, info.id],
        ["format", info.format],
        ["size", f"{size(info.size_bytes)} ({info.size_bytes} bytes)"],
        ["created", when(info.created_at)],
        ["filename", info.filename],
    ]
    if isinstance(info, ModelInfo):
        rows += [["architecture", info.architecture], ["head", info.head]]
        rows += [["tensors", info.tensors], ["parameters", info.parameters]]
        if info.source == "uri":
            rows += [["uri", info.uri], ["layout", info.layout]]
        if info.config and info.architecture:
            rows.append(["config", json.dumps(info.config)])
    else:
        rows += [["examples", info.num_examples], ["inputs", _names(info.inputs_key)]]
        rows.append(["targets", info.targets_key])
        for name, a in info.arrays.items():
            rows.append([f"array {name}", f"{a.dtype} {tuple(a.shape)}"])
    shown = [r for r in rows if r[1] is not None]
    return "\n".join(table(["", ""], shown).splitlines()[1:])
