"""Reaping by heartbeat: a run whose worker stopped beating goes back to its queue.

A worker holds a record's run lock (`lock:{id}`, a few heartbeats long) and refreshes it with
its heartbeat. A record that is `running` while nobody holds its lock and its worker's
heartbeat has expired was left by a worker that died (SIGKILL, OOM, a lost machine). The
sweep ends that attempt in the record (`attempt_log` says `worker-lost`), then

- requeues the record (status `queued`, worker and progress dropped) and puts its message back
  at the head of its queue at once, rather than after the broker's visibility timeout;
- or cancels it, when a cancel was asked for;
- or fails it (`worker-lost`), when `SHARPNESS_MAX_ATTEMPTS` runs were started already.

Every worker sweeps from its heartbeat thread, and the gateway on reads of /v1/queue and
/readyz and on cancel: whichever notices first. The record update is one guarded transaction
(still running, still unlocked, still the same attempt), so however many sweepers race, one
wins and only the winner sends a message. A run that was declared lost but was only paused
(SIGSTOP) finds its attempt replaced and writes nothing (`finish(attempt=...)`).

A run whose lock and worker heartbeat merely expired while Redis was away is not lost: for
`restart_grace_s` after Redis starts (its uptime), no sweep reaps, so the runs that computed
through the outage take their locks again first. Were one reaped all the same, it would only
cost its computation: every write of the replaced run is fenced by the record's epoch
(tasks.store.records), so it writes nothing.

A second, slower pass (`orphans`, run by the workers' sweeps at most every `ORPHAN_EVERY_S`;
it reads every broker message and the oldest `ORPHAN_CANDIDATES` queued records) fixes what slipped
through: a record `queued` with no broker message behind it (the message was lost with a
Redis that restarted without AOF, or never sent) is sent one, and a record `running` on a
live worker with no lock and no message (its attempt ended without a word) is ended and
requeued as a lost run. A record counts as an orphan only when two sweeps of one process,
at least `orphan_grace_s` apart, both found it so, and a queued one only once it is that old:
a message in flight between the queue and a worker is never mistaken for a missing one. A
duplicate message (two sweepers deciding at once) is harmless: the run's lock and the
terminal-state guard run a record once.

Celery's view follows (`celery_sender`, see tasks.app): a requeued run's task is RETRY
(the lost worker's STARTED is no longer its last word), and a run the sweep fails or cancels
ends its task FAILURE or REVOKED, in the result backend and as the last task event, sent by
the sweeping process: no worker will run that record again to say so.

Torch-free: the caller passes how to send a message (and, optionally, how to tell Celery).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.app import (
    QUEUES,
    RUN_JOB_TASK,
    RUN_TRAJECTORY_TASK,
    announce_ended,
    announce_requeued,
    failure_text,
)
from tasks.contract import problem_types
from tasks.contract.spec import JobStatus, Problem
from tasks.settings import Settings
from tasks.store.records import JobStore, RecordStore
from tasks.store.trajectories import TrajectoryStore

log = logging.getLogger("tasks.reaper")

TASKS = {"job": RUN_JOB_TASK, "trajectory": RUN_TRAJECTORY_TASK}

# send(task name, record id, queue): enqueue the record's task with the id as task id. A Send
# may also have `ended(record id, status, failure text)` and `requeued(record id, reason)`,
# which tell Celery what the sweep did (CelerySender); plain callables send messages only.
Send = Callable[[str, str, str], None]


@dataclass
class Reaped:
    kind: str
    id: str
    status: JobStatus
    worker: str | None


def lost_problem(worker: str | None, attempts: int, max_attempts: int) -> Problem:
    return Problem(
        type=problem_types.uri("worker-lost"),
        title="Worker lost",
        status=500,
        detail=f"the worker running attempt {attempts} ({worker or 'unknown'}) stopped sending "
        f"heartbeats, and {attempts} of {max_attempts} attempts (SHARPNESS_MAX_ATTEMPTS) are "
        "spent; submit again, and check the worker's log (out of memory?)",
    )


def reap_one(
    store: RecordStore,
    heartbeats: JobStore,
    record_id: str,
    settings: Settings,
    send: Send,
    orphan: bool = False,
    spare_since: float | None = None,
) -> Reaped | None:
    """Reap `record_id` if its run was lost; None when it was not (or another sweeper won).
    `orphan`: its worker may still beat (the sweeper found nothing else behind the run).
    `spare_since`: Redis restarted then (epoch seconds), moments ago: a run started before
    it is spared (its lock and heartbeat expired while Redis was away; it retakes them)."""
    record = store.get(record_id)
    if record is None or record.status != JobStatus.running:
        return None
    started = record.started_at.timestamp() if record.started_at else None
    if spare_since is not None and started is not None and started < spare_since:
        return None
    if store.lock_holder(record_id) is not None:
        return None
    if not orphan and heartbeats.worker_alive(record.worker):
        return None
    error = lost_problem(record.worker, record.attempts, settings.max_attempts)
    status = store.end_run(
        record_id,
        "worker-lost",
        attempt=record.attempts,
        only_if_unlocked=True,
        max_attempts=settings.max_attempts,
        error=error,
    )
    if status is None:
        return None
    log.warning(
        "%s %s: worker %s lost on attempt %d; now %s",
        store.KIND,
        record_id,
        record.worker,
        record.attempts,
        status.value,
    )
    if status.terminal:
        _tell(send, "ended", record_id, status.value, failure_text(store.KIND, record_id, error))
    if status == JobStatus.queued:
        # before the message is back: the next worker's events come after this one
        reason = f"worker {record.worker or 'unknown'} lost on attempt {record.attempts}; requeued"
        _tell(send, "requeued", record_id, reason)
    if status == JobStatus.queued and not store.restore_message(record_id):
        try:
            send(TASKS[store.KIND], record_id, record.queue)
        except Exception as e:  # the broker is away: the record must not wait for nothing
            log.error("%s %s: could not requeue (%s)", store.KIND, record_id, e)
            failed = Problem(
                type=problem_types.uri("enqueue-failed"),
                title="Could not enqueue",
                status=503,
                detail=f"its worker was lost and the broker refused the new message: "
                f"{e.__class__.__name__}; submit again",
            )
            if store.finish(record_id, JobStatus.failed, error=failed, only_if={JobStatus.queued}):
                text = failure_text(store.KIND, record_id, failed)
                _tell(send, "ended", record_id, JobStatus.failed.value, text)
    return Reaped(store.KIND, record_id, status, record.worker)


def _tell(send: Send, what: str, record_id: str, *args: str) -> None:
    """Tell Celery what the sweep did to a record's run, when `send` knows how."""
    tell = getattr(send, what, None)
    if tell is not None:
        try:
            tell(record_id, *args)
        except Exception:  # Celery's view is an echo of the record: never fail the sweep
            log.exception("telling Celery that %s was %s failed", record_id, what)


def _send_or_fail(store: RecordStore, record_id: str, queue: str, send: Send) -> None:
    try:
        send(TASKS[store.KIND], record_id, queue)
    except Exception as e:  # the broker is away: the next sweep tries again
        log.error("%s %s: could not send its message (%s)", store.KIND, record_id, e)


def stores_of(jobs: JobStore) -> tuple[JobStore, TrajectoryStore]:
    return jobs, TrajectoryStore(jobs.r)


def sweep(
    jobs: JobStore, settings: Settings, send: Send, with_orphans: bool = False
) -> list[Reaped]:
    """Reap every lost run, jobs and trajectories; cost: the running records, not all.
    `with_orphans` (the workers' sweeps): also the slower pass for records with nothing
    behind them, which reads every broker message. The gateway leaves it to the workers, so
    its views keep a constant cost: whatever that pass fixes needs a live worker anyway."""
    out: list[Reaped] = []
    restarted = _recent_restart(jobs, settings)
    for store in stores_of(jobs):
        for record_id in store.running_ids():
            try:
                reaped = reap_one(store, jobs, record_id, settings, send, spare_since=restarted)
                if reaped is not None:
                    out.append(reaped)
            except Exception:  # one odd record must not stop the sweep
                log.exception("reaping %s %s failed", store.KIND, record_id)
    if with_orphans:
        try:
            out.extend(orphans(jobs, settings, send))
        except Exception:
            log.exception("looking for orphaned records failed")
    return out


def restart_grace_s(settings: Settings) -> float:
    """After Redis starts, how long no run is reaped: every lock and heartbeat expired while it
    was away, and the live workers need a heartbeat or two to take them again."""
    return max(3.0 * settings.heartbeat_s, 10.0) + 2.0 * settings.heartbeat_s


def _recent_restart(jobs: JobStore, settings: Settings) -> float | None:
    """When Redis started (epoch seconds), if less than `restart_grace_s` ago; else None."""
    try:
        uptime = jobs.redis_uptime_s()
    except Exception:  # a Redis without INFO (a proxy): sweep as usual
        return None
    # uptime counts whole seconds: Redis started within the second before `now - uptime`
    return time.time() - uptime - 1.0 if uptime < restart_grace_s(settings) else None


ORPHAN_EVERY_S = 15.0  # how often one process looks for orphans (it reads every message)
ORPHAN_CANDIDATES = 1_000  # the oldest queued records looked at per pass
_suspects: dict[tuple[str, str, str], float] = {}  # (kind, id, status) -> first seen orphaned
_last_orphan_sweep = 0.0
_orphan_lock = threading.Lock()


def orphan_grace_s(settings: Settings) -> float:
    """How long a record must stay orphaned before it is fixed: past a lock's lifetime and a
    worker's sweep, so a message on its way to a worker is never taken for a lost one."""
    return max(4.0 * settings.heartbeat_s, 10.0)


def orphans(
    jobs: JobStore,
    settings: Settings,
    send: Send,
    force: bool = False,
    grace_s: float | None = None,
) -> list[Reaped]:
    """Fix records with nothing behind them (see the module docstring); at most every
    ORPHAN_EVERY_S per process unless `force`. Returns what was fixed."""
    global _last_orphan_sweep
    with _orphan_lock:
        if not force and time.monotonic() - _last_orphan_sweep < ORPHAN_EVERY_S:
            return []
        _last_orphan_sweep = time.monotonic()
        grace = orphan_grace_s(settings) if grace_s is None else grace_s
        now = time.monotonic()
        out: list[Reaped] = []
        seen: set[tuple[str, str, str]] = set()
        for store in stores_of(jobs):
            queued = store.queued_ids(older_than_s=grace, limit=ORPHAN_CANDIDATES)
            running = store.running_ids()
            if not queued and not running:
                continue
            held = store.message_ids(QUEUES)
            for status, ids in (("queued", queued), ("running", running)):
                for record_id in ids:
                    if record_id in held or store.lock_holder(record_id) is not None:
                        continue
                    key = (store.KIND, record_id, status)
                    seen.add(key)
                    first = _suspects.setdefault(key, now)
                    if now - first < grace:
                        continue
                    try:
                        fixed = _fix_orphan(store, jobs, record_id, status, settings, send)
                    except Exception:
                        log.exception("fixing %s %s failed", store.KIND, record_id)
                        continue
                    _suspects.pop(key, None)
                    if fixed is not None:
                        out.append(fixed)
        for key in [k for k in _suspects if k not in seen]:  # no longer orphaned
            del _suspects[key]
        return out


def _fix_orphan(
    store: RecordStore,
    jobs: JobStore,
    record_id: str,
    status: str,
    settings: Settings,
    send: Send,
) -> Reaped | None:
    if status == "running":
        return reap_one(store, jobs, record_id, settings, send, orphan=True)
    record = store.get(record_id)
    if record is None or record.status != JobStatus.queued:
        return None
    log.warning("%s %s: queued with no message behind it; sending one", store.KIND, record_id)
    _send_or_fail(store, record_id, record.queue, send)
    return Reaped(store.KIND, record_id, JobStatus.queued, None)


class CelerySender:
    """A `Send` through a Celery app's send_task, as the gateway enqueues, which also ends or
    requeues the record's task in Celery (result backend and task events) as node
    `hostname`: the sweeping worker, or the gateway (tasks.app.default_node)."""

    def __init__(self, celery: Any, hostname: str | None = None) -> None:
        self.celery, self.hostname = celery, hostname

    def __call__(self, task: str, record_id: str, queue: str) -> None:
        self.celery.send_task(
            task, args=[record_id], task_id=record_id, queue=queue, ignore_result=True
        )

    def ended(self, record_id: str, status: str, failure: str) -> None:
        announce_ended(self.celery, record_id, status, failure, self.hostname)

    def requeued(self, record_id: str, reason: str) -> None:
        announce_requeued(self.celery, record_id, reason, self.hostname)


def celery_sender(celery: Any, hostname: str | None = None) -> CelerySender:
    """A `Send` through a Celery app (see CelerySender); `hostname` names the sender's node."""
    return CelerySender(celery, hostname)
