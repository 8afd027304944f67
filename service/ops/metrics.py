"""Prometheus metrics computed from Redis at scrape time.

Why a collector rather than counters updated in request handlers: job state changes happen
in the workers, and there may be several gateways, so the truth is in Redis. Each scrape reads
one snapshot (tasks.jobstore records, kombu's queue lists, worker heartbeats) and reports:

    sharpness_redis_up                         1 when Redis answered the scrape
    sharpness_jobs{status}                     job records by status
    sharpness_queue_depth{queue,state}         waiting / reserved broker messages
    sharpness_oldest_queued_job_age_seconds    age of the oldest queued job
    sharpness_workers_online                   workers with a live heartbeat
    sharpness_job_duration_seconds{status}     histogram of finished_at - started_at

The duration histogram is rebuilt at every scrape from the newest `DURATION_WINDOW` job
records that finished after starting (succeeded, failed, or cancelled while running). It is
therefore the same whichever gateway is scraped and survives gateway restarts; its counts can
drop when the window slides, which Prometheus treats as a counter reset (rate() copes).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.ops import rows
from tasks.celery_app import QUEUES
from tasks.jobstore import JobStore
from tasks.spec import JobStatus

log = logging.getLogger("sharpness.gateway")

DURATION_WINDOW = 10_000
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


class SharpnessCollector(Collector):
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("sharpness_redis_up", "1 when Redis answered this scrape.")
        try:
            snap = rows.snapshot(self.jobs, limit=DURATION_WINDOW)
        except redis.RedisError as e:
            log.warning("metrics scrape: redis unavailable: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        jobs = GaugeMetricFamily("sharpness_jobs", "Job records by status.", labels=["status"])
        for status, n in snap.by_status().items():
            jobs.add_metric([status], n)
        yield jobs

        depth = GaugeMetricFamily(
            "sharpness_queue_depth",
            "Broker messages per queue: waiting (not taken) and reserved (taken, unacked).",
            labels=["queue", "state"],
        )
        for q in QUEUES:
            depth.add_metric([q, "waiting"], snap.waiting.get(q, 0))
            depth.add_metric([q, "reserved"], snap.reserved.get(q, 0))
        yield depth

        oldest = GaugeMetricFamily(
            "sharpness_oldest_queued_job_age_seconds",
            "Seconds the oldest queued job has waited (0 when none).",
        )
        oldest.add_metric([], snap.oldest_queued_age_s() or 0.0)
        yield oldest

        workers = GaugeMetricFamily("sharpness_workers_online", "Workers with a live heartbeat.")
        workers.add_metric([], len(snap.workers))
        yield workers

        yield self._durations(snap)

    @staticmethod
    def _durations(snap: rows.Snapshot) -> HistogramMetricFamily:
        hist = HistogramMetricFamily(
            "sharpness_job_duration_seconds",
            "Run time (finished_at - started_at) of recent finished jobs.",
            labels=["status"],
        )
        by_status: dict[str, list[float]] = {}
        for row in snap.jobs:
            if row.started_at and row.finished_at and JobStatus(row.status).terminal:
                seconds = max(0.0, (row.finished_at - row.started_at).total_seconds())
                by_status.setdefault(row.status, []).append(seconds)
        for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            values = sorted(by_status.get(status.value, []))
            buckets = [(str(b), bisect.bisect_right(values, b)) for b in BUCKETS]
            buckets.append(("+Inf", len(values)))
            hist.add_metric([status.value], buckets, sum_value=sum(values))
        return hist


def make_registry(jobs: JobStore) -> CollectorRegistry:
    """A registry per app (not the global one), so several apps in one process never clash."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SharpnessCollector(jobs))
    ProcessCollector(registry=registry)
    return registry
