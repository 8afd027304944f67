"""Run metrics the ops views report, written in the MULTI that ends a record, so every gateway
process reads the same numbers (tasks.store.keys: `metrics:*` hashes).

Histograms are stored per bucket (not cumulative), the way a MULTI can add one observation with
one HINCRBY; `Histogram.cumulative` gives Prometheus' cumulative form when read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from tasks.contract.spec import JobStatus
from tasks.store.codec import timestamp
from tasks.store.connection import text_hash
from tasks.store.keys import METRIC_ENDED, METRIC_QUEUE_WAIT, METRIC_RUN_SECONDS

# histogram upper bounds (seconds); "+Inf" is the last bucket
RUN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
WAIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
HISTOGRAMS = {"run_seconds": METRIC_RUN_SECONDS, "queue_wait_seconds": METRIC_QUEUE_WAIT}


def bucket_of(seconds: float, bounds: tuple[float, ...]) -> str:
    """The histogram bucket (its upper bound as Prometheus spells it) that `seconds` falls in."""
    for b in bounds:
        if seconds <= b:
            return str(b)
    return "+Inf"


@dataclass
class Histogram:
    """One labelled series of a histogram stored by the stores: per-bucket (not cumulative)
    counts by upper bound, "+Inf" last, and the sum."""

    buckets: dict[str, int]
    sum: float

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
        out, total = [], 0
        for le in (*[str(b) for b in bounds], "+Inf"):
            total += self.buckets.get(le, 0)
            out.append((le, total))
        return out


def _queue_wait(raw: dict[str, str]) -> float | None:
    """Seconds from the record's creation to its first start; None when it never started."""
    log = json.loads(raw.get("attempt_log") or "[]")
    first = timestamp((log[0].get("started_at") if log else None) or raw.get("started_at"))
    created = timestamp(raw.get("created_at"))
    if first is None or created is None:
        return None
    return max(0.0, first - created)


class RunMetrics:
    """Observe ended runs (in the ending transaction) and read the stored series back."""

    def __init__(self, client: redis.Redis, kind: str) -> None:
        self.r = client
        self.kind = kind

    def observe_end(self, pipe: Any, raw: dict[str, str], status: JobStatus, at: datetime) -> None:
        """Count the ended run and observe its run time and queue wait, queued onto `pipe`."""
        queue = raw.get("queue") or "cpu"
        labels = f"{self.kind}|{status.value}|{queue}"
        pipe.hincrby(METRIC_ENDED, labels, 1)
        if (started := timestamp(raw.get("started_at"))) is not None:
            seconds = max(0.0, at.timestamp() - started)
            pipe.hincrby(METRIC_RUN_SECONDS, f"{labels}|{bucket_of(seconds, RUN_BUCKETS)}", 1)
            pipe.hincrbyfloat(METRIC_RUN_SECONDS, f"{labels}|sum", seconds)
        if (wait := _queue_wait(raw)) is not None:
            prefix = f"{self.kind}|{queue}"
            pipe.hincrby(METRIC_QUEUE_WAIT, f"{prefix}|{bucket_of(wait, WAIT_BUCKETS)}", 1)
            pipe.hincrbyfloat(METRIC_QUEUE_WAIT, f"{prefix}|sum", wait)

    def ended_counts(self) -> dict[tuple[str, str, str], int]:
        """Runs ended, every kind: (kind, outcome, queue) -> count."""
        out: dict[tuple[str, str, str], int] = {}
        for field_name, value in text_hash(self.r.hgetall(METRIC_ENDED)).items():
            kind, outcome, queue = field_name.split("|", 2)
            out[(kind, outcome, queue)] = int(value)
        return out

    def histograms(self, name: str) -> dict[tuple[str, ...], Histogram]:
        """A stored histogram (`run_seconds` or `queue_wait_seconds`), every kind, by labels."""
        out: dict[tuple[str, ...], Histogram] = {}
        for field_name, value in text_hash(self.r.hgetall(HISTOGRAMS[name])).items():
            labels, le = field_name.rsplit("|", 1)
            h = out.setdefault(tuple(labels.split("|")), Histogram({}, 0.0))
            if le == "sum":
                h.sum = float(value)
            else:
                h.buckets[le] = int(value)
        return out
