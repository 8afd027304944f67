"""Prometheus metrics read from Redis at scrape time.

Why a collector rather than counters updated in request handlers: records end in the workers
(and in the reaper, in any process), and there may be several gateway processes, so the truth
is in Redis. The stores count each ended run and observe its histograms in the same Redis
transaction that ends it (tasks.store.records: `metrics:*` hashes); a scrape reads those hashes,
the per-status indexes, kombu's queue lists and the worker heartbeats. Every gateway process
therefore answers the same numbers, and they survive gateway restarts. A scrape costs a
constant number of round trips, whatever the number of records.

Names (stable: the dashboard and the alert rules in deploy/ use them). Where celery-exporter
has a metric that means the same thing, its name and label names are used too (`celery_*`),
so dashboards and alerts written for celery-exporter work; they carry no `hostname` label.

    sharpness_redis_up                                  1 when Redis answered this scrape
    sharpness_jobs{status}                              job records by status
    sharpness_trajectories{status}                      trajectory records by status
    sharpness_queue_depth{queue,kind}                   queued records per queue (cancelled
                                                        ones excluded)
    sharpness_queue_oldest_age_seconds{queue}           age of the oldest queued record on the
                                                        queue, job or trajectory (0 when none)
    sharpness_oldest_queued_job_age_seconds             the same over every queue
    sharpness_broker_messages{queue,state}              broker messages: waiting / reserved
    sharpness_oldest_running_age_seconds{queue}         seconds since the longest-running
                                                        record on the queue started its attempt
                                                        (0 when none): a stuck run grows it
    sharpness_workers_online                            workers with a live heartbeat
    sharpness_runs_ended_total{kind,outcome,queue}      counter: runs ended as succeeded,
                                                        failed, cancelled (kind: job, trajectory)
    sharpness_run_duration_seconds{kind,outcome,queue}  histogram: started_at to finished_at of
                                                        the last attempt, observed as it ends
    sharpness_queue_wait_seconds{kind,queue}            histogram: created_at to the first
                                                        start, observed as the run ends
    celery_task_succeeded_total{name,queue_name}        counter (celery-exporter's names): the
    celery_task_failed_total{name,queue_name}           same ended runs by outcome; `name` is
    celery_task_revoked_total{name,queue_name}          the task (sharpness.run_job,
                                                        sharpness.run_trajectory); cancelled
                                                        runs are REVOKED
    celery_task_runtime{name,queue_name}                histogram: run time of succeeded runs
    celery_queue_length{queue_name}                     broker messages waiting on the queue
    celery_worker_up{hostname}                          1 while the worker's heartbeat is fresh,
                                                        0 for 10 minutes after it stopped
    celery_worker_tasks_active{hostname}                runs the worker holds (0 or 1)
    process_*                                           the answering gateway process only

Counters start at 0 for records that ended before they existed; histogram buckets are in
tasks.store.records (RUN_BUCKETS, WAIT_BUCKETS).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.ops import rows
from tasks.app import QUEUES, RUN_JOB_TASK, RUN_TRAJECTORY_TASK
from tasks.contract.spec import JobStatus
from tasks.store.records import RUN_BUCKETS, TERMINAL, WAIT_BUCKETS, Histogram, JobStore

log = logging.getLogger("sharpness.gateway")

KINDS = ("job", "trajectory")
TASK_NAMES = {"job": RUN_JOB_TASK, "trajectory": RUN_TRAJECTORY_TASK}
# celery-exporter's counter per outcome (a cancelled run is a REVOKED task)
CELERY_COUNTERS = {
    JobStatus.succeeded.value: ("celery_task_succeeded", "Runs that succeeded."),
    JobStatus.failed.value: ("celery_task_failed", "Runs that failed."),
    JobStatus.cancelled.value: ("celery_task_revoked", "Runs that were cancelled (REVOKED)."),
}


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


class SharpnessCollector(Collector):
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("sharpness_redis_up", "1 when Redis answered this scrape.")
        try:
            snap = rows.snapshot(self.jobs)
            ended = self.jobs.ended_counts()
            run_seconds = self.jobs.histograms("run_seconds")
            waits = self.jobs.histograms("queue_wait_seconds")
            seen = self.jobs.worker_times()
        except redis.RedisError as e:
            log.warning("metrics scrape: redis unavailable: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._records(snap)
        yield from self._queues(snap)
        yield self._running_age(snap)
        yield from self._workers(snap, seen)
        yield from self._ended(ended)
        yield from self._histograms(run_seconds, waits)

    @staticmethod
    def _records(snap: rows.Snapshot) -> Iterator[Metric]:
        for kind, name in (("job", "sharpness_jobs"), ("trajectory", "sharpness_trajectories")):
            family = GaugeMetricFamily(
                name, f"{kind.title()} records by status.", labels=["status"]
            )
            for status, n in snap.by_status(kind).items():
                family.add_metric([status], n)
            yield family

    @staticmethod
    def _queues(snap: rows.Snapshot) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "sharpness_queue_depth",
            "Queued records per queue (cancelled ones excluded).",
            labels=["queue", "kind"],
        )
        age = GaugeMetricFamily(
            "sharpness_queue_oldest_age_seconds",
            "Seconds the oldest queued record on the queue has waited (0 when none).",
            labels=["queue"],
        )
        broker = GaugeMetricFamily(
            "sharpness_broker_messages",
            "Broker messages per queue: waiting (not taken) and reserved (taken, unacked).",
            labels=["queue", "state"],
        )
        length = GaugeMetricFamily(
            "celery_queue_length", "Broker messages waiting on the queue.", labels=["queue_name"]
        )
        for q in QUEUES:
            for kind in KINDS:
                depth.add_metric([q, kind], snap.queued_count(q, kind))
            age.add_metric([q], snap.oldest_queued_age_s(q) or 0.0)
            broker.add_metric([q, "waiting"], snap.waiting.get(q, 0))
            broker.add_metric([q, "reserved"], snap.reserved.get(q, 0))
            length.add_metric([q], snap.waiting.get(q, 0))
        oldest = GaugeMetricFamily(
            "sharpness_oldest_queued_job_age_seconds",
            "Seconds the oldest queued record (any queue) has waited (0 when none).",
        )
        oldest.add_metric([], snap.oldest_queued_age_s() or 0.0)
        yield from (depth, age, oldest, broker, length)

    @staticmethod
    def _running_age(snap: rows.Snapshot) -> Metric:
        """Per queue, how long the longest run has been running: no run outlives the hard time
        limit, and a dead worker's run is reaped within a minute, so an age past both is a
        run that is stuck (the alert SharpnessRunsStuck)."""
        family = GaugeMetricFamily(
            "sharpness_oldest_running_age_seconds",
            "Seconds since the longest-running record on the queue started its attempt "
            "(0 when none).",
            labels=["queue"],
        )
        for q in QUEUES:
            ages = [
                (snap.taken_at - r.started_at).total_seconds()
                for r in snap.running()
                if r.queue == q and r.started_at is not None
            ]
            family.add_metric([q], max(ages, default=0.0))
        return family

    @staticmethod
    def _workers(snap: rows.Snapshot, seen: dict[str, float]) -> Iterator[Metric]:
        live = {w["hostname"] for w in snap.workers}
        online = GaugeMetricFamily("sharpness_workers_online", "Workers with a live heartbeat.")
        online.add_metric([], len(live))
        yield online
        up = GaugeMetricFamily(
            "celery_worker_up",
            "1 while the worker's heartbeat is live, 0 for 10 minutes after it stopped.",
            labels=["hostname"],
        )
        active = GaugeMetricFamily(
            "celery_worker_tasks_active", "Runs the worker holds.", labels=["hostname"]
        )
        holding: dict[str, int] = {}
        for r in snap.running():
            if r.worker:
                holding[r.worker] = holding.get(r.worker, 0) + 1
        for host in sorted(set(seen) | live):
            # live: its heartbeat key has not expired (the worker sets it to three heartbeats)
            up.add_metric([host], 1 if host in live else 0)
            active.add_metric([host], holding.get(host, 0))
        yield from (up, active)

    @staticmethod
    def _ended(ended: dict[tuple[str, str, str], int]) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "sharpness_runs_ended",
            "Runs ended, by kind (job, trajectory), outcome (succeeded, failed, cancelled) and "
            "queue.",
            labels=["kind", "outcome", "queue"],
        )
        celery = {
            outcome: CounterMetricFamily(name, doc, labels=["name", "queue_name"])
            for outcome, (name, doc) in CELERY_COUNTERS.items()
        }
        for kind in KINDS:
            for status in TERMINAL:
                for q in QUEUES:
                    n = ended.get((kind, status.value, q), 0)
                    total.add_metric([kind, status.value, q], n)
                    celery[status.value].add_metric([TASK_NAMES[kind], q], n)
        yield total
        yield from celery.values()

    @staticmethod
    def _histograms(
        run_seconds: dict[tuple[str, ...], Histogram], waits: dict[tuple[str, ...], Histogram]
    ) -> Iterator[Metric]:
        empty = Histogram({}, 0.0)
        duration = _histogram(
            "sharpness_run_duration_seconds",
            "Run time of the last attempt (started_at to finished_at), observed as runs end.",
            ["kind", "outcome", "queue"],
        )
        wait = _histogram(
            "sharpness_queue_wait_seconds",
            "Seconds from creation to the first start, observed as runs end.",
            ["kind", "queue"],
        )
        runtime = _histogram(
            "celery_task_runtime", "Run time of succeeded runs.", ["name", "queue_name"]
        )
        for kind in KINDS:
            for q in QUEUES:
                for status in TERMINAL:
                    h = run_seconds.get((kind, status.value, q), empty)
                    buckets = h.cumulative(RUN_BUCKETS)
                    duration.add_metric([kind, status.value, q], buckets, sum_value=h.sum)
                    if status == JobStatus.succeeded:
                        runtime.add_metric([TASK_NAMES[kind], q], buckets, sum_value=h.sum)
                h = waits.get((kind, q), empty)
                wait.add_metric([kind, q], h.cumulative(WAIT_BUCKETS), sum_value=h.sum)
        yield from (duration, wait, runtime)


def make_registry(jobs: JobStore, *extra: Collector) -> CollectorRegistry:
    """A registry per app (not the global one), so several apps in one process never clash;
    `extra` collectors (runs per tenant) beside the service's own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SharpnessCollector(jobs))
    for collector in extra:
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry
