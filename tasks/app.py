"""The Celery application: Redis as broker and result backend, two queues, long-job safety.

Torch-free: the gateway imports it to enqueue (by task name, never by importing the task).

Why each setting:
- acks_late + reject_on_worker_lost: a message is acknowledged only after the job finished,
  so a worker killed mid-job leaves it to be redelivered to another worker.
- prefetch multiplier 1: a worker holds at most the job it runs; nothing waits behind a long
  job on a busy worker while another is idle.
- visibility_timeout > hard time limit: Redis redelivers an unacknowledged message after the
  visibility timeout; shorter than a job's run time, a healthy long job would run twice.
  A per-job lock and the terminal-state check in the task are the guard that a redelivered
  message never runs a finished job again.

`celery -A tasks.app inspect active` (or `status`, `events`, Flower) finds the app as
this module's `app`, made on first use from the SHARPNESS_ settings of the environment.

Task states tell the record's truth. A record's Celery task (its id is the record's id) ends
in the state of the record's terminal status (`TASK_STATES`: succeeded SUCCESS, failed
FAILURE, cancelled REVOKED), in the result backend (`AsyncResult(id).state`, Flower's
`/api/task/result`) and as the last task event (Flower's task list, celery-exporter), whichever
process ends the record:

- the run that ends it (tasks.worker.run.task_outcome): the backend written explicitly (the
  messages carry ignore_result), the event Celery's own (task-succeeded, task-failed) or, for
  a cancel, task-revoked;
- the reaper, when it fails a lost run (attempts spent) or cancels it, and the worker's main
  process after a hard time limit: `announce_ended`, the backend and the event;
- a message taken for a record that had already ended (cancelled while queued, a duplicate)
  states the record's status again.

A run that lost its record (paused past its lock and replaced, or refused by `finish`) and a
duplicate message while another worker holds the lock send no terminal event and write no
result (Celery's Ignore). A requeued run's task is RETRY (`announce_requeued`) until a worker
takes it again. Celery and Flower both keep SUCCESS once set (the backend refuses to
overwrite it; Flower's event state ranks it first), which is why nothing but a succeeded
record ever sends it.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Celery, states
from celery.exceptions import WorkerLostError
from kombu import Queue

from tasks.settings import Settings, get_settings

RUN_JOB_TASK = "sharpness.run_job"
RUN_TRAJECTORY_TASK = "sharpness.run_trajectory"
QUEUES = ("gpu", "cpu")

# a record's terminal status -> the Celery state its task ends in
TASK_STATES = {"succeeded": states.SUCCESS, "failed": states.FAILURE, "cancelled": states.REVOKED}

log = logging.getLogger("tasks.app")


def queue_for(device: str) -> str:
    """Jobs asking for CUDA go to 'gpu'; cpu and auto go to 'cpu' (any worker can run them)."""
    return "gpu" if device == "cuda" else "cpu"


def make_celery(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    # events: final task events are kept, to send again after a Redis outage (final_events)
    app = Celery(
        "sharpness", broker=s.redis_url, backend=s.redis_url, events="tasks.final_events:Events"
    )
    app.conf.update(
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="cpu",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=s.soft_time_limit_s,
        task_time_limit=s.hard_time_limit_s,
        broker_transport_options={"visibility_timeout": s.visibility_timeout},
        result_backend_transport_options={"visibility_timeout": s.visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # as long as the record it describes (SHARPNESS_RETENTION_DAYS), a week at least
        result_expires=max(7 * 86_400, int(s.retention_s)),
        # a result written while Redis restarts waits for it (the stores' clients do too),
        # rather than failing the task of a run that succeeded
        result_backend_always_retry=True,
        result_backend_max_retries=15,
        result_backend_max_sleep_between_retries_ms=2_000,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
    )
    return app


class RunFailed(Exception):
    """The exception of a FAILURE task state: the run's record failed; the message is the
    problem's title and detail (the record holds the full problem)."""


def failure_text(kind: str, record_id: str, error: Any) -> str:
    """RunFailed's message for a record that failed with problem `error`."""
    detail = f"{error.title}: {error.detail}" if error is not None else "failed"
    return f"{kind} {record_id} failed: {detail}"


def store_final_state(backend: Any, task_id: str, status: str, failure: str = "") -> None:
    """Write terminal status `status` (a JobStatus value) as the task's state in the result
    backend; `failure` is RunFailed's message for a failed record."""
    if status == "succeeded":
        backend.store_result(task_id, status, states.SUCCESS)
    elif status == "failed":
        backend.mark_as_failure(task_id, RunFailed(failure), call_errbacks=False)
    elif status == "cancelled":
        backend.mark_as_revoked(task_id, reason="cancelled")


def final_event(status: str, failure: str = "") -> tuple[str, dict[str, Any]]:
    """(type, fields) of the task event that ends a task in terminal status `status`, with
    the fields Celery's own events carry."""
    if status == "succeeded":
        return "task-succeeded", {"result": repr(status), "runtime": 0.0}
    if status == "failed":
        return "task-failed", {"exception": repr(RunFailed(failure)), "traceback": None}
    return "task-revoked", {"terminated": False, "signum": None, "expired": False}


def send_task_event(app: Celery, task_id: str, kind: str, hostname: str | None, **fields: Any):
    """Send task event `kind` about `task_id` as node `hostname` (retried while the broker
    reconnects)."""
    with app.events.default_dispatcher(hostname=hostname) as dispatcher:
        dispatcher.send(kind, uuid=task_id, retry=True, **fields)


def announce_ended(
    app: Celery, task_id: str, status: str, failure: str = "", hostname: str | None = None
) -> None:
    """A record ended outside its run (the reaper, a hard time limit): its task's state in
    the result backend and the task event that ends it, sent as `hostname` (the process that
    ended it). Never raises: the record is the truth, this is its echo."""
    try:
        store_final_state(app.backend, task_id, status, failure)
        kind, fields = final_event(status, failure)
        send_task_event(app, task_id, kind, hostname or default_node(), **fields)
    except Exception:
        log.exception("could not record the end of task %s (%s) in Celery", task_id, status)


def announce_requeued(app: Celery, task_id: str, reason: str, hostname: str | None = None):
    """A run was ended and its record requeued (its worker was lost): the task is RETRY in
    the result backend and in the task events until a worker takes it again, not the lost
    worker's last STARTED. Never raises."""
    try:
        lost = WorkerLostError(reason)
        app.backend.mark_as_retry(task_id, lost)
        send_task_event(
            app, task_id, "task-retried", hostname or default_node(), exception=repr(lost)
        )
    except Exception:
        log.exception("could not record the requeue of task %s in Celery", task_id)


def default_node() -> str:
    """The node name of events sent by a process that is not a worker (the gateway)."""
    return f"sharpness-gateway@{socket.gethostname()}"


def __getattr__(name: str) -> Celery:
    """`tasks.app.app` (and `.celery`), for `celery -A tasks.app ...`: made on
    first use, so importing this module reads no settings and connects to nothing."""
    if name in ("app", "celery"):
        global _app
        if _app is None:
            _app = make_celery()
        return _app
    raise AttributeError(name)


_app: Celery | None = None
