"""A trace job recorded and sent as the gateway sends it, for tests that run a real worker:
its length is set by `num_hvps` (10 ends at once, 100,000 computes for minutes)."""

from __future__ import annotations

from pathlib import Path

import torch

from tasks.app import RUN_JOB_TASK, make_celery
from tasks.contract.spec import JobSpec
from tasks.worker.runtime import WorkerRuntime
from tests import artifacts as A
from tests.worker.blobs import put


def trace_job(rt: WorkerRuntime, tmp_path: Path, num_hvps: int, model: str | None = None) -> str:
    """Record a Hutchinson trace job on a small float64 MLP; `model` names another model id
    (one that does not exist makes it fail). Returns the job's id; nothing is sent yet."""
    x, y = A.data(n=32)
    if model is None:
        path = A.export(A.mlp(), tmp_path / "m.pt2", 4, torch.float64)
        model = put(rt.blobs, "models", path, format="torch_export")
    data = put(rt.blobs, "datasets", A.save_npz(tmp_path / "d.npz", x, y), format="npz")
    spec = JobSpec.model_validate(
        {
            "model": model,
            "dataset": {"id": data, "batch_size": 16},
            "measures": [
                {"name": "trace", "params": {"method": "hutchinson", "num_hvps": num_hvps}}
            ],
        }
    )
    return rt.store.create(spec, "cpu").id


def send(rt: WorkerRuntime, job_id: str, ignore_result: bool = True) -> None:
    """As the gateway enqueues: by task name, the record id as task id, no result kept."""
    make_celery(rt.settings).send_task(
        RUN_JOB_TASK, args=[job_id], task_id=job_id, queue="cpu", ignore_result=ignore_result
    )
