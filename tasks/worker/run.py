"""One run of a record, for every kind of run (jobs and trajectories): the Celery tasks' wrapper.

`execute(rt, store, record_id, body)` does what every run needs, once, and the task module
gives only `body`, the work (load, measure, write results):

- **message guard**: a message whose record is missing or already terminal is acknowledged
  without running (Redis redelivers unacknowledged messages);
- **lock and attempt**: the per-record run lock (a few heartbeats long) is taken, waiting up
  to one lock lifetime for a holder that may have just died, and kept alive by a thread of
  the process that computes (`LockKeeper`); the run counts its attempt (`mark_running`), and a
  record still `running` from an attempt whose process was killed is first ended as
  `worker-lost` (or failed, once `SHARPNESS_MAX_ATTEMPTS` runs were started);
- **progress throttling and cancellation**: `run.step(name, where)` gives the `Hooks` of one
  measure or checkpoint, which write progress at most every 0.25 s and read the cancel flag at
  most every 0.5 s between engine iterations;
- **limits**: the soft time limit, checked between iterations (and Celery's own
  SoftTimeLimitExceeded in a prefork child); the hard limit is Celery's, enforced by the
  worker's main process (`tasks.worker.process`);
- **errors**: any exception becomes an RFC 9457 problem from tasks.contract.problem_types naming
  where it happened (`measure 'trace'`, `checkpoints[2]`); nothing a run does crashes the
  worker;
- **fenced writes**: the claim (`claim`) returns the run's epoch, and every write of the run
  (progress, partial results, its end) is a compare-and-set on (record, epoch) in Redis;
  every requeue, reap, hand-back and end moves the epoch on, so a run that lost its lease
  writes nothing at all;
- **Redis outages cost no computation**: the run talks to Redis through a `StoreLink` that
  fails fast; while Redis is away it keeps computing, keeps its latest progress per measure
  (written when Redis is back), reads "not cancelled yet", and retries its fenced end with
  backoff until shortly before the hard time limit. A Redis error is never a run's failure:
  where the run cannot go on it hands the record back to the queue;
- **finish once**: `finish(epoch=...)` moves the record to one terminal state, only while it
  is still this run's, so a run that was declared lost and replaced writes nothing;
- **the task's state is the record's** (`task_outcome`): the record's terminal status in the
  result backend and as the task's last event (SUCCESS, FAILURE, REVOKED); a run that lost
  its record (taken over, or its `finish` refused) or a duplicate message while another
  worker holds the lock sends no terminal event and writes no result (Celery's Ignore).

Draining (a warm shutdown) hands the record back to the queue (`Reject(requeue=True)`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis
import torch
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

from tasks.app import RunFailed, failure_text, final_event, store_final_state
from tasks.contract.spec import JobStatus, MeasureProgress, Problem
from tasks.engine.cancel import Cancelled
from tasks.engine.runner import run_with_context
from tasks.reaper import lost_problem
from tasks.store.records import RecordStore
from tasks.worker.errors import (
    DeviceUnavailable,
    Draining,
    LockLost,
    RunError,
    TimeLimit,
    problem,
    problem_of,
)
from tasks.worker.runtime import WorkerRuntime, lock_ttl, versions
from tasks.worker.store_link import REDIS_ERRORS, Away, StoreLink, retry_redis

log = logging.getLogger(__name__)

#: the states of a step's progress entry (MeasureProgress.state)
ProgressState = Literal["pending", "running", "done", "failed"]

PROGRESS_EVERY_S = 0.25
CANCEL_CHECK_EVERY_S = 0.5
END_MARGIN_S = 15.0  # a run's end is retried until this long before the hard time limit


def resolve_device(requested: str) -> tuple[str, str]:
    """(torch device, description) for the record's device field. CUDA is initialised here,
    in the process that computes (a prefork child), never in the worker's main process."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "CUDA not available",
            "the run asks for device 'cuda' but this worker sees no CUDA device",
        )
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        index = torch.cuda.current_device()
        return f"cuda:{index}", f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return "cpu", "cpu"


# what `execute` returns when this run does not own the record's outcome: another run does
NOT_OURS = ("lost", "locked")
# a run ends only a record it still runs: one requeued meanwhile (this run paused past its
# lock, the reaper ended its attempt) is the next run's, even before that run starts
RUNNING = {JobStatus.running}


def task_outcome(task: Any, outcome: str, store: Any, record_id: str) -> str:
    """The Celery task state that says what the record's status is, whoever ended it: this run
    (`outcome` succeeded, failed or cancelled) or another process before this message was
    taken (`skipped`: cancelled while queued, failed by the reaper, a duplicate).

    The result backend gets the record's terminal status (the messages carry ignore_result,
    so Celery would keep nothing); a failed record raises RunFailed (FAILURE, with Celery's
    task-failed event), a cancelled one is REVOKED (task-revoked, sent here: Celery sends no
    event for Ignore), a succeeded one returns `outcome` (SUCCESS). A run that lost its record
    or met another worker's lock (`NOT_OURS`), or a record that is gone or not ended, ends in
    Ignore: no terminal event, no result, the run that owns the record says it."""
    if outcome in NOT_OURS:
        raise Ignore()
    try:  # Redis may be coming back: the record's status is what the task states
        record = retry_redis(lambda: store.get(record_id), time.monotonic() + 60, "a read")
    except REDIS_ERRORS:
        log.warning("%s %s: Redis away; its task state is not stated", store.KIND, record_id)
        raise Ignore() from None
    if record is None or not record.status.terminal:
        raise Ignore()
    status = record.status.value
    task_id = task.request.id or record_id
    failure = failure_text(store.KIND, record_id, record.error) if status == "failed" else ""
    try:
        store_final_state(task.backend, task_id, status, failure)
    except Exception:  # Redis away past the backend's retries: the event still says it
        log.exception("%s %s: could not store its task state (%s)", store.KIND, record_id, status)
    if status == "failed":
        raise RunFailed(failure)
    if status == "cancelled":
        # Celery sends no event for Ignore: without this one, tools that build task states
        # from events (Flower's task list, celery-exporter) would keep it STARTED forever
        kind, fields = final_event(status)
        task.send_event(kind, **fields)
        raise Ignore()
    return outcome


def hard_limit_problem(kind: str, seconds: int) -> Problem:
    return problem(
        "Time limit exceeded",
        f"the {kind} ran past the hard time limit of {seconds} s (SHARPNESS_HARD_TIME_LIMIT_S) "
        "inside one step; the process computing it was stopped",
        kind="time-limit",
    )


# ------------------------------------------------------------------------------- the lock
class LockKeeper(threading.Thread):
    """Keeps the run lock alive from the process that computes, every heartbeat.

    A lock found gone (it expired while Redis was restarting) is taken again while the record
    still runs this attempt; a lock held by another worker, or a record that moved on, means
    the run was declared lost and replaced: `lost` is set and the run stops without writing.
    Killed with its process, it stops refreshing, and the lock expires a few heartbeats later."""

    def __init__(
        self, rt: WorkerRuntime, store: RecordStore, record_id: str, link: StoreLink | None = None
    ) -> None:
        super().__init__(name=f"lock-{record_id[:8]}", daemon=True)
        self.rt, self.store, self.record_id = rt, store, record_id
        self.link = link or StoreLink(store)
        self.attempt: int | None = None
        self.epoch: int | None = None  # the run's fencing token, once it claimed the record
        self.lost = False
        self.stopped = threading.Event()
        self.kept_at = time.monotonic()  # the last time the lock was known to be ours
        # the keeper's thread and the computing thread (`owned`) both keep the lock: one at a
        # time, or the second sees the lock the first just took again and thinks it lost it
        self._keeping = threading.Lock()

    def owned(self) -> bool:
        """Whether the run still owns its record. After a pause longer than the lock's life
        (SIGSTOP, a frozen VM) the lock is checked now, before anything is written: a run
        that was replaced while it slept never writes a word."""
        if not self.lost and time.monotonic() - self.kept_at > self.rt.settings.heartbeat_s * 2:
            try:
                self.keep()
            except (Away, *REDIS_ERRORS):  # cannot tell while Redis is away: go on computing;
                pass  # its writes are fenced, and the check is made again when Redis is back
        return not self.lost

    def keep(self) -> None:
        with self._keeping:
            self.link.call(self._keep)

    def _keep(self, store: RecordStore) -> None:
        rt, rid = self.rt, self.record_id
        ttl = lock_ttl(rt.settings)
        if store.refresh_lock(rid, rt.hostname, ttl):
            self.kept_at = time.monotonic()
            return
        holder = store.lock_holder(rid)
        status, epoch = store.epoch(rid)
        ours = status == JobStatus.running and (
            epoch == self.epoch
            if self.epoch is not None
            else self.attempt is not None and store.get(rid).attempts == self.attempt  # type: ignore[union-attr]
        )
        if ours and holder == rt.hostname and store.refresh_lock(rid, rt.hostname, ttl):
            self.kept_at = time.monotonic()  # it expired and came back between two reads
            return
        if holder is None and ours and store.acquire(rid, rt.hostname, ttl):
            log.warning("%s %s: lock had expired (Redis away?); taken again", store.KIND, rid)
            self.kept_at = time.monotonic()
            return
        if self.attempt is not None:
            log.warning("%s %s: attempt %s was taken over", store.KIND, rid, self.attempt)
            self.lost = True

    def run(self) -> None:
        while not self.stopped.wait(self.rt.settings.heartbeat_s):
            try:
                self.keep()
            except Away:  # Redis away: try again at the next heartbeat
                pass
            except Exception:
                log.exception("refreshing the lock of %s failed", self.record_id)


# ------------------------------------------------------------------------------- hooks
def _number(value: Any) -> float | None:
    """A finite float, or None: what a progress field may hold."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class Hooks:
    """Throttled progress writes and cancel checks for one measure or checkpoint."""

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name
        self._last_write = 0.0
        self._last_check = 0.0
        self._pending: dict[str, Any] | None = None
        self.finished = False

    def on_progress(self, info: dict[str, Any]) -> None:
        self._pending = info
        if time.monotonic() - self._last_write >= PROGRESS_EVERY_S:
            self.flush()

    def flush(self, state: ProgressState = "running") -> None:
        if not self.run.keeper.owned():  # replaced while paused: the record is another's
            return
        info = self._pending or {}
        progress = MeasureProgress(
            state=state,
            iteration=int(info.get("iteration", 0) or 0),
            estimate=info.get("estimate"),
            bound=_number(info.get("bound")),
            updated_at=datetime.now(UTC),
        )
        if not self.run.link.progress(self.run.id, self.run.epoch, self.name, progress):
            self.run.keeper.lost = True  # the record moved on: this run writes nothing more
        self._last_write = time.monotonic()

    def done(self, value: Any) -> None:
        """Final progress entry: the last iteration count with the value."""
        self._pending = {**(self._pending or {}), "estimate": value}
        self.flush("done")
        self.finished = True

    def should_cancel(self) -> bool:
        self.run.check()
        now = time.monotonic()
        if now - self._last_check < CANCEL_CHECK_EVERY_S:
            return False
        self._last_check = now
        return self.run.link.cancel_requested(self.run.id)


# ------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """One attempt at a record, as the body sees it."""

    rt: WorkerRuntime
    store: RecordStore
    record: Any  # the record as read under the lock (a Job or a Trajectory)
    attempt: int
    device: str  # the torch device to compute on
    keeper: LockKeeper
    epoch: int = 0  # the fencing token every write of this run carries
    started: float = field(default_factory=time.monotonic)
    where: str = ""  # what the run is doing, for problems: "measure 'trace'", "checkpoints[2]"
    results: dict[str, Any] | None = None  # kept by finish on failure and cancel too
    evaluation: dict[str, Any] | None = None
    hooks: Hooks | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def spec(self) -> Any:
        return self.record.spec

    @property
    def link(self) -> StoreLink:
        return self.keeper.link

    def deadline(self) -> float:
        """Until when (monotonic) the run may wait for Redis to write its end."""
        return end_deadline(self.rt, self.started)

    def write(self, fn: Callable[[RecordStore], bool]) -> None:
        """A partial result that must be stored (a trajectory's point): `fn(store)` is a write
        fenced by this run's epoch, retried while Redis is away (until the run's deadline);
        refused, the run lost its lease and stops (LockLost)."""
        if not self.keeper.owned():
            raise LockLost()
        if not retry_redis(lambda: fn(self.store), self.deadline()):
            self.keeper.lost = True
            raise LockLost()

    def check(self) -> None:
        """Raise when the run must stop now: the worker drains, the lock was lost, or the soft
        time limit passed."""
        if self.rt.draining.is_set():
            raise Draining()
        if not self.keeper.owned():
            raise LockLost()
        if time.monotonic() - self.started > self.rt.settings.soft_time_limit_s:
            raise TimeLimit()

    def step(self, name: str | int, where: str) -> Hooks:
        """Start measure or checkpoint `name` (`where` names it in problems)."""
        self.where = where
        self.check()
        self.hooks = Hooks(self, str(name))
        self.hooks.flush()
        return self.hooks

    def measure(
        self, problem_: Any, measure: Callable[[Any], dict[str, Any]], **kw: Any
    ) -> dict[str, Any]:
        """`measure(ctx)` through the engine's runner with this step's hooks: the same
        timing, warnings and mode notes as every job measure (see tasks.engine.runner)."""
        assert self.hooks is not None, "call step() first"
        return run_with_context(
            problem_, measure, self.hooks.on_progress, self.hooks.should_cancel, **kw
        )


Body = Callable[[Run], None]


def _acquire(rt: WorkerRuntime, store: RecordStore, record_id: str) -> bool:
    """Take the record's lock, waiting up to one TTL for a holder that may have just died."""
    ttl = lock_ttl(rt.settings)
    deadline = time.monotonic() + ttl + 1
    while True:
        if store.acquire(record_id, rt.hostname, ttl):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def end_deadline(rt: WorkerRuntime, started: float) -> float:
    """Until when (monotonic) a run started at `started` may wait for Redis to write its end:
    shortly before Celery's hard time limit would stop its process."""
    return started + max(rt.settings.hard_time_limit_s - END_MARGIN_S, 1.0)


def execute(rt: WorkerRuntime, store: RecordStore, record_id: str, body: Body, kept: str) -> str:
    """Run record `record_id` once through `body`; returns what happened (succeeded, failed,
    cancelled, skipped, locked, lost). Raises only Reject (the worker is draining, or Redis
    could not be reached to start or end the run: the message goes back). `kept` says, in a
    time-limit problem, what a stopped run keeps."""
    started = time.monotonic()
    try:
        record = store.get(record_id)
        if record is None or record.status.terminal:
            state = "missing" if record is None else record.status.value
            log.info("%s %s: %s, not running it", store.KIND, record_id, state)
            return "skipped"
        if not _acquire(rt, store, record_id):
            log.warning("%s %s: another live worker holds its lock", store.KIND, record_id)
            return "locked"
    except REDIS_ERRORS as e:  # nothing started: the message goes back to the queue
        log.warning("%s %s: Redis away before the run started (%s)", store.KIND, record_id, e)
        raise Reject(f"Redis away: {e}", requeue=True) from None
    keeper = LockKeeper(rt, store, record_id)
    keeper.start()
    try:
        return _run_locked(rt, store, record_id, body, kept, keeper, started)
    finally:
        keeper.stopped.set()
        try:
            store.release(record_id, rt.hostname)
        except REDIS_ERRORS:  # it expires by itself
            pass
        keeper.link.close()


def _end_killed_attempt(rt: WorkerRuntime, store: RecordStore, record: Any) -> JobStatus | None:
    """A record still `running` once we hold its lock: the process of its last attempt was
    killed (its worker lived on and redelivered the message). End that attempt as the
    reaper would; returns the record's new status."""
    s = rt.settings
    return store.end_run(
        record.id,
        "worker-lost",
        attempt=record.attempts,
        max_attempts=s.max_attempts,
        error=lost_problem(record.worker, record.attempts, s.max_attempts),
    )


def _run_locked(
    rt: WorkerRuntime,
    store: RecordStore,
    rid: str,
    body: Body,
    kept: str,
    keeper: LockKeeper,
    started: float | None = None,
) -> str:
    started = time.monotonic() if started is None else started
    deadline = end_deadline(rt, started)
    try:
        record = store.get(rid)  # re-read under the lock: another worker may have finished it
        if record is not None and record.status == JobStatus.running:
            ended = _end_killed_attempt(rt, store, record)
            log.warning(
                "%s %s: attempt %s was killed; now %s", store.KIND, rid, record.attempts, ended
            )
            if ended in (JobStatus.failed, JobStatus.cancelled):  # attempts spent, or cancel
                return ended.value
            record = store.get(rid)
        if record is None or record.status.terminal:
            return "skipped"
        if store.cancel_requested(rid):
            # ended here, or by whoever got there first: either way the record says which
            return "cancelled" if store.finish(rid, JobStatus.cancelled) else "skipped"
    except REDIS_ERRORS as e:  # nothing started: the message goes back to the queue
        log.warning("%s %s: Redis away before the run started (%s)", store.KIND, rid, e)
        raise Reject(f"Redis away: {e}", requeue=True) from None
    kind = store.KIND
    run: Run | None = None
    attempt: int | None = None
    epoch: int | None = None
    try:
        device, description = resolve_device(record.spec.device)
        claimed = store.claim(rid, rt.hostname, description, versions())
        if claimed is None:  # cancelled or ended meanwhile: the record says which
            return "skipped"
        attempt, epoch = claimed
        keeper.attempt, keeper.epoch = attempt, epoch
        run = Run(rt, store, record, attempt, device, keeper, epoch=epoch, started=started)
        try:
            body(run)
        except Cancelled:
            if run.hooks is not None and not run.hooks.finished:
                run.hooks.flush("failed")
            return _end(run, JobStatus.cancelled)
        return _end(run, JobStatus.succeeded)
    except Draining:
        # hand the run back: another worker (or this one after a restart) runs it again
        _hand_back(store, rid, "handed-back", epoch, deadline)
        raise Reject("worker shutting down", requeue=True) from None
    except LockLost:
        log.warning("%s %s: attempt %s was taken over; stopping it", kind, rid, attempt)
        return "lost"
    except (Away, *REDIS_ERRORS) as e:  # an infrastructure fault is never the run's failure
        log.warning("%s %s: Redis away (%s); the run goes back to the queue", kind, rid, e)
        _hand_back(store, rid, "redis-unavailable", epoch, deadline)
        raise Reject(f"Redis away: {e}", requeue=True) from None
    except Exception as e:  # SoftTimeLimitExceeded included; never crash the worker
        err = problem_of(e, kind, run.where if run else "", kept, rt.settings.soft_time_limit_s)
        if not isinstance(e, RunError | TimeLimit | SoftTimeLimitExceeded):
            log.exception("%s %s failed", kind, rid)
    if run is not None:
        if run.hooks is not None and not run.hooks.finished:
            run.hooks.flush("failed")
        return _end(run, JobStatus.failed, err)
    try:  # before the claim: the record is still queued, and this run holds its lock
        ended = retry_redis(
            lambda: store.finish(rid, JobStatus.failed, error=err, only_if={JobStatus.queued}),
            deadline,
        )
    except REDIS_ERRORS as e:
        raise Reject(f"Redis away: {e}", requeue=True) from None
    return "failed" if ended else _lost(store, rid, attempt)


def _end(run: Run, status: JobStatus, error: Problem | None = None) -> str:
    """Write the run's end, fenced by its epoch: its kept progress first, then `finish`,
    retried with backoff while Redis is away, until shortly before the hard time limit.
    Refused: the record moved on without this run ("lost"). Redis still away at the deadline:
    nothing is written, and the record, still `running` with no lock, is requeued by the
    reaper (its orphan pass) rather than failed."""
    rid, epoch, store = run.id, run.epoch, run.store

    def write() -> bool:
        if run.link.pending:
            run.link.away_until = 0.0
            if not run.link.flush(rid, epoch):
                return False
            if run.link.pending:  # still away
                raise redis.ConnectionError("Redis away while writing the run's progress")
        return store.finish(
            rid,
            status,
            run.results,
            error=error,
            evaluation=run.evaluation,
            only_if=RUNNING,
            epoch=epoch,
        )

    try:
        ended = retry_redis(write, run.deadline(), f"the end of {store.KIND} {rid}")
    except REDIS_ERRORS as e:
        log.error(
            "%s %s: Redis away until the hard time limit (%s); its end (%s) is not written, "
            "the reaper requeues it",
            store.KIND,
            rid,
            e,
            status.value,
        )
        return "lost"
    return status.value if ended else _lost(store, rid, run.attempt)


def _hand_back(
    store: RecordStore, rid: str, outcome: str, epoch: int | None, deadline: float
) -> None:
    """End the run's attempt as `outcome` and put the record back in the queue (fenced by
    `epoch`; nothing to do before the claim), retried while Redis is away."""
    if epoch is None:
        return
    try:
        retry_redis(lambda: store.end_run(rid, outcome, epoch=epoch), deadline, "the hand-back")
    except REDIS_ERRORS:
        log.error("%s %s: could not hand the run back; the reaper requeues it", store.KIND, rid)


def _lost(store: RecordStore, rid: str, attempt: int | None) -> str:
    """`finish` refused this run's end: the record moved on without it (the reaper ended or
    requeued the attempt while this run was paused, another run took it). It is another's
    to report: "lost". Before it started (no attempt) someone else ended the record:
    "skipped", its status is stated again."""
    if attempt is None:
        return "skipped"
    log.warning(
        "%s %s: attempt %s no longer owns the record; its end is not recorded",
        store.KIND,
        rid,
        attempt,
    )
    return "lost"
