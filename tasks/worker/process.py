"""`python -m tasks.worker`: one Celery worker (prefork pool, one child) and its heartbeat.

Two processes per worker. The **main process** consumes the queues, answers Celery's control
commands (`celery -A tasks.app inspect ping/active/stats`), sends task events (Flower,
celery-exporter), writes the worker's heartbeat and sweeps for lost runs (tasks.reaper), all
while a job runs, and enforces Celery's hard time limit. It never initialises CUDA: the device
is described by a short-lived interpreter (`describe_device`), so the **child** it forks, which
runs the tasks, is the first process to touch the GPU. Concurrency is 1: a run uses the whole
device; run one worker per GPU with CUDA_VISIBLE_DEVICES set. The child runs at a lower CPU
priority with one torch thread fewer than the cores (`yield_to_main_process`), so the main
process answers control commands within a fraction of a second while a job computes.

Time limits: past `SHARPNESS_SOFT_TIME_LIMIT_S` the run fails with a time-limit problem at
its next iteration (the run wrapper's own check, and Celery's SoftTimeLimitExceeded). Past
`SHARPNESS_HARD_TIME_LIMIT_S` Celery kills the child (a single step that never returns); the
main process records the run failed and forks a new child.

A child killed by anything else (the OOM killer, SIGKILL) is a lost worker to Celery: its
message goes back to the queue (reject on worker lost) and the next run ends the killed
attempt as `worker-lost` before it starts (tasks.worker.run). A killed main process takes its
child with it; its heartbeats stop and the reaper requeues the run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from typing import Any

import torch
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure, worker_process_init, worker_shutting_down

import tasks.jobs  # noqa: F401  the job task, registered with every app made here
import tasks.trajectories  # noqa: F401  and the trajectory task
from tasks import final_events, reaper
from tasks.app import (
    QUEUES,
    RUN_JOB_TASK,
    RUN_TRAJECTORY_TASK,
    announce_ended,
    failure_text,
    make_celery,
)
from tasks.contract.spec import JobStatus
from tasks.settings import Settings, get_settings
from tasks.store.records import RecordStore
from tasks.store.trajectories import TrajectoryStore
from tasks.worker.allocator import return_large_blocks
from tasks.worker.run import hard_limit_problem
from tasks.worker.runtime import WorkerRuntime, install, unique_hostname

log = logging.getLogger("tasks.worker")

_PROBE = (
    "import json, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "print(json.dumps([n, torch.cuda.get_device_name(0) if n else '']))\n"
)


def describe_device() -> tuple[str, bool]:
    """The device this worker computes on, and whether it has CUDA, without initialising CUDA
    in this process: a torch built without CUDA has none; otherwise a spawned interpreter
    asks and exits, taking its CUDA context with it."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return "cpu", False
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300
        )
        count, name = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as e:
        log.warning("could not ask for CUDA devices (%s); computing on the cpu", e)
        return "cpu", False
    if not count:
        return "cpu", False
    return f"cuda:0 {name}", True  # the first visible device (CUDA_VISIBLE_DEVICES)


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
    """In the main process: announces the worker (device, queues) every heartbeat, and every
    few beats sweeps for lost runs (tasks.reaper). The run lock is kept by the child
    (tasks.worker.run.LockKeeper), so a stopped or killed child lets it expire."""

    def __init__(
        self, rt: WorkerRuntime, send: reaper.Send | None = None, queues: list[str] | None = None
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.rt = rt
        self.send = send
        self.queues = queues or []
        self.stopped = threading.Event()
        self._last_sweep = 0.0

    def sweep(self) -> None:
        if self.send is None or time.monotonic() - self._last_sweep < reap_every_s(
            self.rt.settings
        ):
            return
        self._last_sweep = time.monotonic()
        reaper.sweep(self.rt.store, self.rt.settings, self.send, with_orphans=True)

    def beat(self) -> None:
        rt = self.rt
        info = {"queues": ",".join(self.queues)} if self.queues else {}
        rt.store.heartbeat(rt.hostname, rt.device, heartbeat_ttl(rt.settings), **info)

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


#: How much lower the child's CPU priority is than the main process's (os.nice).
CHILD_NICENESS = 5


def compute_threads() -> int:
    """Torch's CPU threads in the child: every core this process may use but one, which is
    left to the main process (control commands, events, heartbeats), Redis and the gateway.
    OMP_NUM_THREADS, when set, wins."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


def yield_to_main_process() -> None:
    """In the pool's child, before it runs anything: a lower CPU priority (CHILD_NICENESS) and
    one core fewer for torch (`compute_threads`), so that the main process answers `celery
    inspect` and sends heartbeats within a second or two however hard a job computes, also on
    a machine others load. On a busy two-core machine one torch thread computed a product no
    slower than two (docs/benchmarks.md#cancelling-and-control-commands)."""
    try:
        os.nice(CHILD_NICENESS)
    except OSError:  # not permitted here: run at the main process's priority
        log.warning("could not lower the priority of the worker's child")
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(compute_threads())


def store_for(rt: WorkerRuntime, task_name: str) -> RecordStore:
    """The store of the records a task runs."""
    return TrajectoryStore(rt.store.r) if task_name == RUN_TRAJECTORY_TASK else rt.store


def on_hard_time_limit(
    rt: WorkerRuntime, task_name: str, record_id: str, app: Any = None, task_id: str = ""
) -> bool:
    """Celery killed the child that ran `record_id` past the hard time limit: record the run
    failed (its message is acknowledged, nothing would run it again) and free its lock.
    With `app`, the task's state in Celery follows the record: the result backend's, and an
    event (Celery sends its own task-failed next)."""
    store = store_for(rt, task_name)
    done = store.finish(
        record_id,
        JobStatus.failed,
        error=hard_limit_problem(store.KIND, rt.settings.hard_time_limit_s),
        only_if={JobStatus.running},
    )
    store.release(record_id, rt.hostname)
    record = store.get(record_id) if app is not None else None
    if record is not None and record.status.terminal:
        failure = failure_text(store.KIND, record_id, record.error)
        announce_ended(app, task_id or record_id, record.status.value, failure, rt.hostname)
    return done


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    return_large_blocks()  # before the pool forks: its children inherit it
    settings = get_settings()
    device, has_cuda = describe_device()
    queues = queues_for(settings, has_cuda)
    hostname = os.environ.get("SHARPNESS_WORKER_NAME") or unique_hostname()
    rt = WorkerRuntime.create(hostname, settings)
    rt.device = device
    rt.draining = multiprocessing.get_context("fork").Event()  # shared with the forked child
    install(rt)

    app = make_celery(settings)  # the tasks (tasks.jobs, tasks.trajectories) join it
    # Sweep for messages of dead workers often enough that a short visibility timeout (tests)
    # takes effect promptly; kombu's default sweep is every 100 s.
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "unacked_restore_interval": max(1, min(30, settings.visibility_timeout // 10)),
        "unacked_restore_throttle": 1,
    }
    # a lost broker connection (a Redis restart) leaves the running task alone
    app.conf.worker_cancel_long_running_tasks_on_connection_loss = False

    @worker_process_init.connect
    def _child(**_: object) -> None:  # in the child: its own Redis connections
        rt.reconnect()
        final_events.watch(app)  # the child's own final events (task-revoked)
        yield_to_main_process()

    @worker_shutting_down.connect
    def _drain(**_: object) -> None:  # warm shutdown: the running run goes back to the queue
        rt.draining.set()

    @task_failure.connect
    def _hard_limit(sender: Any = None, exception: Any = None, args: Any = None, **kw: Any) -> None:
        if isinstance(exception, TimeLimitExceeded) and sender is not None:
            record_id = args[0] if args else kw.get("task_id")
            if sender.name in (RUN_JOB_TASK, RUN_TRAJECTORY_TASK) and record_id:
                task_id = kw.get("task_id") or record_id
                on_hard_time_limit(rt, sender.name, record_id, app, task_id)

    final_events.watch(app)  # sent again after a Redis outage, for Flower
    heartbeat = Heartbeat(rt, reaper.celery_sender(app, hostname), queues)
    heartbeat.beat()
    heartbeat.start()
    print(f"worker {hostname} on {device}, queues {','.join(queues)}", flush=True)
    worker = app.Worker(
        hostname=hostname,
        pool="prefork",
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
