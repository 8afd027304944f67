"""Plain-text tables for the CLI: aligned columns, no colours, nothing to install.

Ops read `sharpness queue` in a terminal or a log; pipelines use `--json` instead, so these
renderings may change freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sharpness_client.types import Job, QueueStatus


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


def number(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        shown = ", ".join(str(number(v)) for v in value[:4])
        return f"[{shown}{', ...' if len(value) > 4 else ''}]"
    return value


def job(j: Job) -> str:
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
    rows = []
    for m in j.spec.measures:
        r = j.results.get(m.name)
        p = j.progress.get(m.name)
        if r is not None:
            rows.append([m.name, number(r.value), r.converged, r.hvps, seconds(r.seconds)])
        else:
            state = f"({p.state}, iteration {p.iteration})" if p else "(pending)"
            rows.append([m.name, state, None, None, None])
    body = table(["MEASURE", "VALUE", "CONVERGED", "HVPS", "TIME"], rows)
    return "\n".join(head) + "\n\n" + body


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
