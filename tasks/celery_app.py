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

`celery -A tasks.celery_app inspect active` (or `status`, `events`, Flower) finds the app as
this module's `app`, made on first use from the SHARPNESS_ settings of the environment.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from tasks.settings import Settings, get_settings

RUN_JOB_TASK = "sharpness.run_job"
RUN_TRAJECTORY_TASK = "sharpness.run_trajectory"
QUEUES = ("gpu", "cpu")


def queue_for(device: str) -> str:
    """Jobs asking for CUDA go to 'gpu'; cpu and auto go to 'cpu' (any worker can run them)."""
    return "gpu" if device == "cuda" else "cpu"


def make_celery(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    app = Celery("sharpness", broker=s.redis_url, backend=s.redis_url)
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
        result_expires=7 * 86_400,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
    )
    return app


def __getattr__(name: str) -> Celery:
    """`tasks.celery_app.app` (and `.celery`), for `celery -A tasks.celery_app ...`: made on
    first use, so importing this module reads no settings and connects to nothing."""
    if name in ("app", "celery"):
        global _app
        if _app is None:
            _app = make_celery()
        return _app
    raise AttributeError(name)


_app: Celery | None = None
