"""Sending a record's one Celery message, or failing the record when the broker refuses.

Jobs and trajectories share this: a record is never left queued with no message to run it.
ignore_result: results live in the record, not in Celery's result backend; without it Celery
would also subscribe the gateway to every task's result channel, for good.
"""

from __future__ import annotations

import logging
from typing import Any

from service.problems import ProblemError
from tasks.jobstore import RecordStore
from tasks.problem_types import uri
from tasks.spec import JobStatus, Problem

log = logging.getLogger("sharpness.gateway")

# Enough retries to ride out a broker blip, few enough to answer within seconds.
SEND_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


def enqueue_or_fail(
    celery: Any, store: RecordStore, task: str, record_id: str, queue: str, noun: str
) -> None:
    """Send `task` with the record's id as argument and task id; on failure mark the record
    failed with the reason and answer 503 with Retry-After."""
    try:
        celery.send_task(
            task,
            args=[record_id],
            task_id=record_id,
            queue=queue,
            ignore_result=True,
            retry=True,
            retry_policy=SEND_RETRY,
        )
    except Exception as e:
        log.error("enqueue of %s %s failed: %s", noun, record_id, e)
        detail = f"{noun} {record_id} could not be enqueued on '{queue}': {e.__class__.__name__}"
        store.finish(
            record_id,
            JobStatus.failed,
            error=Problem(
                type=uri("enqueue-failed"),
                title="Could not enqueue",
                status=503,
                detail=detail,
            ),
        )
        raise ProblemError(
            503,
            "enqueue-failed",
            f"{detail}; the {noun} is marked failed, submit again",
            headers={"Retry-After": "5"},
        ) from e
