"""The trajectory task's logic in-process against a real Redis: guard, lock, cancel, limits,
errors naming the checkpoint, and the heartbeat's hard limit on a trajectory record."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from tasks import worker
from tasks.runtime import ActiveJob, WorkerRuntime
from tasks.settings import Settings
from tasks.spec import JobStatus, TrajectorySpec
from tasks.trajectory_job import execute
from tasks.trajectorystore import TrajectoryStore
from tests import artifacts as A
from tests.worker.test_job import put


@pytest.fixture
def rt(redis_url: str, tmp_path: Path) -> WorkerRuntime:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, heartbeat_s=1)
    return WorkerRuntime.create("test-worker@here", settings)


@pytest.fixture
def store(rt: WorkerRuntime) -> TrajectoryStore:
    return TrajectoryStore(rt.store.r)


def make(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path, models: list[str] | None = None
):
    if models is None:
        ids = []
        for seed in (0, 1):
            path = A.export(A.mlp(seed=seed), tmp_path / f"m{seed}.pt2", 4, torch.float64)
            ids.append(put(rt.blobs, "models", path, format="torch_export"))
        models = ids
    x, y = A.data(n=32)
    npz = put(rt.blobs, "datasets", A.save_npz(tmp_path / "d.npz", x, y), format="npz")
    spec = TrajectorySpec.model_validate(
        {
            "checkpoints": [{"model": m, "learning_rate": 0.5} for m in models],
            "dataset": {"id": npz, "batch_size": 16},
            "k": 2,
        }
    )
    return store.create(spec, "cpu")


def test_runs_records_and_never_runs_twice(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path
) -> None:
    t = make(rt, store, tmp_path)
    assert execute(t.id, rt) == "succeeded"
    done = store.get(t.id)
    assert done.status == JobStatus.succeeded and done.attempts == 1
    assert [p.index for p in done.points] == [0, 1] and len(done.overlaps) == 1
    p = done.points[0]
    assert p.stability_ratio == pytest.approx(p.lambda_max * 0.5 / 2)
    assert len(p.eigenvalues) == 2 and p.eigenvalues[0] >= p.eigenvalues[1]
    assert 0 <= done.overlaps[0].subspace_overlap <= 1
    assert all(pr.state == "done" and pr.iteration > 0 for pr in done.progress)
    assert rt.store.r.get(f"sharpness:lock:{t.id}") is None
    assert rt.store.get(t.id) is None  # not a job record
    assert execute(t.id, rt) == "skipped" and store.get(t.id).attempts == 1


def test_cancel_requested_before_it_starts(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path
) -> None:
    t = make(rt, store, tmp_path)
    store.r.hset(store.key(t.id), "cancel_requested", 1)
    assert execute(t.id, rt) == "cancelled"
    assert store.get(t.id).status == JobStatus.cancelled


def test_missing_checkpoint_is_named(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path
) -> None:
    path = A.export(A.mlp(), tmp_path / "m.pt2", 4)
    good = put(rt.blobs, "models", path, format="torch_export")
    t = make(rt, store, tmp_path, [good, good, "c" * 64])
    assert execute(t.id, rt) == "failed"
    done = store.get(t.id)
    assert done.error.detail.startswith("checkpoints[2].model: model cccc")
    assert len(done.points) == 2 and done.progress[2].state == "failed"


def test_soft_time_limit_names_the_checkpoint(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path
) -> None:
    t = make(rt, store, tmp_path)
    rt.settings.soft_time_limit_s = 0
    assert execute(t.id, rt) == "failed"
    err = store.get(t.id).error
    assert err.title == "Time limit exceeded" and "checkpoints[0]" in err.detail


def test_hard_time_limit_fails_the_trajectory(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = make(rt, store, tmp_path)
    rt.settings.hard_time_limit_s = 1
    rt.active = ActiveJob(t.id, started=time.monotonic() - 2, store=store)

    def fake_exit(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(worker.os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        worker.Heartbeat(rt).beat()
    done = store.get(t.id)
    assert done.status == JobStatus.failed and "hard time limit" in done.error.detail
