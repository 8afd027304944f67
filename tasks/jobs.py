"""The Celery task that runs a job, at the top of the tasks package as in Celery's own layout.

The gateway enqueues it by name (`RUN_JOB_TASK`) with the job id; what a run of a job does is
tasks.worker.job's, inside the one run wrapper of tasks.worker.run.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.app import RUN_JOB_TASK
from tasks.worker.job import execute
from tasks.worker.run import task_outcome
from tasks.worker.runtime import current


@shared_task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self: Any, job_id: str, *args: Any, **kwargs: Any) -> str:
    """Run job `job_id` once. Its Celery state is FAILURE for a failed job and REVOKED for a
    cancelled one (see tasks.worker.run.task_outcome)."""
    rt = current(getattr(self.request, "hostname", None))
    return task_outcome(self, execute(job_id, rt), rt.store, job_id)
