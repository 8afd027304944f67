"""`python -m tasks.worker`: one Celery worker process (solo pool) and its heartbeat.

Why solo: one process per GPU, and CUDA must never be initialised in a parent that then forks
(prefork children would inherit a broken CUDA context). Run one of these per GPU with
CUDA_VISIBLE_DEVICES set; concurrency is 1 because a job uses the whole device.

The solo pool does not enforce Celery's time limits, so this worker does: the soft limit is a
deadline the task checks between engine iterations (the job fails with a "time limit" problem,
keeping finished measures), the hard limit is enforced by the heartbeat thread, which marks the
job failed and ends the process when a single step overruns it (run it under a supervisor).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from celery.signals import worker_shutting_down

from tasks import problem_types, reaper
from tasks.celery_app import QUEUES, make_celery
from tasks.settings import Settings, get_settings
from tasks.spec import JobStatus, Problem
from tasks.worker.runtime import WorkerRuntime, install, unique_hostname

log = logging.getLogger("tasks.worker")
HARD_LIMIT_EXIT = 75


def describe_device() -> tuple[str, bool]:
    """The device this worker computes on, and whether it has CUDA."""
    import torch

    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        return f"cuda:{i} {torch.cuda.get_device_name(i)}", True
    return "cpu", False


def queues_for(settings: Settings, has_cuda: bool) -> list[str]:
    raw = settings.worker_queues.strip() or ("gpu,cpu" if has_cuda else "cpu")
    queues = [q.strip() for q in raw.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if unknown:
        raise SystemExit(f"SHARPNESS_WORKER_QUEUES: unknown queue(s) {unknown}; use {QUEUES}")
    if "gpu" in queues and not has_cuda:
        raise SystemExit("SHARPNESS_WORKER_QUEUES includes 'gpu' but no CUDA device is visible")
    return queues


def heartbeat_ttl(settings: Settings) -> int:
    return max(3 * settings.heartbeat_s, 10)


def reap_every_s(settings: Settings) -> float:
    """How often a worker sweeps for runs whose worker stopped beating."""
    return max(2 * settings.heartbeat_s, 2)


class Heartbeat(threading.Thread):
    """Announces the worker, keeps the running job's lock alive, enforces the hard limit, and
    every few beats reaps runs of dead workers (tasks.reaper)."""

    def __init__(self, rt: WorkerRuntime, send: reaper.Send | None = None) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.rt = rt
        self.send = send
        self.stopped = threading.Event()
        self._last_sweep = 0.0

    def sweep(self) -> None:
        if self.send is None or time.monotonic() - self._last_sweep < reap_every_s(
            self.rt.settings
        ):
            return
        self._last_sweep = time.monotonic()
        reaper.sweep(self.rt.store, self.rt.settings, self.send)

    def beat(self) -> None:
        rt = self.rt
        rt.store.heartbeat(rt.hostname, rt.device, heartbeat_ttl(rt.settings))
        active = rt.active
        if active is None:
            return
        if not rt.refresh_lock(active.job_id) and active.attempt is not None:
            # paused past the lock's expiry and reaped: another run owns the record now
            log.warning("job %s: lock lost; this run stops without writing", active.job_id)
            active.lost = True
        if time.monotonic() - active.started > rt.settings.hard_time_limit_s:
            (active.store or rt.store).finish(
                active.job_id,
                JobStatus.failed,
                attempt=active.attempt,
                error=Problem(
                    type=problem_types.uri("time-limit"),
                    title="Time limit exceeded",
                    status=500,
                    detail=f"the job ran past the hard time limit of "
                    f"{rt.settings.hard_time_limit_s} s (SHARPNESS_HARD_TIME_LIMIT_S) inside "
                    "one step; the worker process was stopped",
                ),
            )
            log.error("job %s passed the hard time limit; exiting", active.job_id)
            os._exit(HARD_LIMIT_EXIT)

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.beat()
            except Exception:  # Redis briefly away: keep beating
                log.exception("heartbeat failed")
            try:
                self.sweep()
            except Exception:
                log.exception("reaper sweep failed")
            self.stopped.wait(self.rt.settings.heartbeat_s)


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    settings = get_settings()
    device, has_cuda = describe_device()
    queues = queues_for(settings, has_cuda)
    hostname = os.environ.get("SHARPNESS_WORKER_NAME") or unique_hostname()
    rt = WorkerRuntime.create(hostname, settings)
    rt.device = device
    install(rt)

    app = make_celery(settings)
    import tasks.worker.job  # noqa: F401  registers the task on the app
    import tasks.worker.trajectory_job  # noqa: F401  and the trajectory task

    # Sweep for messages of dead workers often enough that a short visibility timeout (tests)
    # takes effect promptly; kombu's default sweep is every 100 s.
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "unacked_restore_interval": max(1, min(30, settings.visibility_timeout // 10)),
        "unacked_restore_throttle": 1,
    }

    @worker_shutting_down.connect
    def _drain(**_: object) -> None:  # warm shutdown: the running job goes back to the queue
        rt.draining.set()

    heartbeat = Heartbeat(rt, reaper.celery_sender(app))
    heartbeat.beat()
    heartbeat.start()
    print(f"worker {hostname} on {device}, queues {','.join(queues)}", flush=True)
    worker = app.Worker(
        hostname=hostname,
        pool="solo",
        concurrency=1,
        queues=queues,
        loglevel="INFO",
        without_gossip=True,
        without_mingle=True,
        optimization="fair",
    )
    try:
        worker.start()
    finally:
        heartbeat.stopped.set()
        try:
            rt.store.forget_worker(hostname)
        except Exception:
            pass
    return worker.exitcode or 0


if __name__ == "__main__":
    sys.exit(main())
