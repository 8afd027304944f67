"""The Celery task that runs a trajectory, beside tasks.jobs (Celery's layout).

The gateway enqueues it by name (`RUN_TRAJECTORY_TASK`) with the trajectory id; what a run of
a trajectory does is tasks.worker.trajectory_job's.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.app import RUN_TRAJECTORY_TASK
from tasks.store.trajectories import TrajectoryStore
from tasks.worker.run import task_outcome
from tasks.worker.runtime import current
from tasks.worker.trajectory_job import execute


@shared_task(name=RUN_TRAJECTORY_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_trajectory(self: Any, trajectory_id: str, *args: Any, **kwargs: Any) -> str:
    """Run trajectory `trajectory_id` once (its Celery state as for jobs)."""
    rt = current(getattr(self.request, "hostname", None))
    outcome = execute(trajectory_id, rt)
    return task_outcome(self, outcome, TrajectoryStore(rt.store.r), trajectory_id)
