"""The trajectory task's logic in-process against a real Redis: guard, lock, cancel, limits,
errors naming the checkpoint (the hard limit on a trajectory: tests/worker/test_worker.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.contract.spec import JobStatus, TrajectorySpec
from tasks.store.trajectories import TrajectoryStore
from tasks.worker.runtime import WorkerRuntime
from tasks.worker.trajectory_job import execute
from tests import artifacts as A
from tests.worker.blobs import put


@pytest.fixture
def store(rt: WorkerRuntime) -> TrajectoryStore:
    return TrajectoryStore(rt.store.r)


def make(
    rt: WorkerRuntime,
    store: TrajectoryStore,
    tmp_path: Path,
    models: list[str] | None = None,
    learning_rate: float = 0.5,
    **fields: object,
):
    """A queued trajectory over `models` (default: two float64 MLPs), each checkpoint at
    `learning_rate`, on 32 rows of data, k=2, with any other spec `fields`."""
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
            "checkpoints": [{"model": m, "learning_rate": learning_rate} for m in models],
            "dataset": {"id": npz, "batch_size": 16},
            "k": 2,
            **fields,
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


def test_points_carry_the_runners_warnings_and_mode_notes(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path
) -> None:
    """Each checkpoint is measured through the engine's runner, as a job's measures are: a
    train-mode point carries the runner's train-mode note word for word, as a job would."""
    from tasks.engine.problem import HessianProblem
    from tasks.engine.runner import run_measure

    t = make(rt, store, tmp_path, mode="train")
    assert execute(t.id, rt) == "succeeded"
    x, y = A.data(n=32)
    problem = HessianProblem(A.mlp(), [(torch.from_numpy(x), torch.from_numpy(y))], mode="train")
    job_notes = run_measure(problem, "lambda_max", {"max_iter": 5})["warnings"]
    [train_note] = [w for w in job_notes if "train mode" in w]
    for p in store.get(t.id).points:
        assert train_note in p.warnings and p.mode == "train"


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


# --------------------------------------------------------------------- optimizer-aware edges
def test_momentum_trajectory_is_against_the_heavy_ball_edge(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path
) -> None:
    t = make(rt, store, tmp_path, learning_rate=0.1, optimizer={"name": "sgd", "momentum": 0.9})
    assert execute(t.id, rt) == "succeeded"
    done = store.get(t.id)
    for p in done.points:
        assert p.optimizer == "sgd" and p.stability_quantity == "lambda_max"
        assert p.stability_ratio == pytest.approx(p.lambda_max * 0.1 / (2 * 1.9))
        assert p.stability_threshold == pytest.approx(3.8 / 0.1)
        assert p.mode == "eval" and "no BatchNorm or dropout" in (p.mode_reason or "")
    assert done.edge_analysis["below_edge"]["pairs"] + done.edge_analysis["beyond_edge"][
        "pairs"
    ] == len(done.overlaps)


def _adam_run(steps: list[int], x: torch.Tensor, y: torch.Tensor):
    """Copies of an MLP and Adam's state (by parameter name) at `steps` of full-batch Adam."""
    import copy

    model = A.mlp(seed=0).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05, betas=(0.9, 0.99), eps=1e-6)
    out, step = [], 0
    for target in steps:
        while step < target:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            step += 1
        state = {
            f"exp_avg_sq.{n}": opt.state[p]["exp_avg_sq"].detach().clone()
            for n, p in model.named_parameters()
        }
        state["step"] = torch.tensor([float(step)], dtype=torch.float64)
        out.append((copy.deepcopy(model), state))
    return out


def test_adam_trajectory_uses_the_preconditioned_sharpness(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    from tasks.engine.problem import HessianProblem
    from tests.engine.reference import dense_hessian

    xn, yn = A.data(n=32)
    x, y = torch.from_numpy(xn).double(), torch.from_numpy(yn)
    npz = put(rt.blobs, "datasets", A.save_npz(tmp_path / "d.npz", xn, yn), format="npz")
    checkpoints, exact = [], []
    for i, (model, state) in enumerate(_adam_run([3, 12], x, y)):
        path = A.export(model, tmp_path / f"a{i}.pt2", 4, torch.float64)
        mid = put(rt.blobs, "models", path, format="torch_export")
        save_file(state, str(tmp_path / f"s{i}.safetensors"))
        sid = put(rt.blobs, "optimizer_states", tmp_path / f"s{i}.safetensors")
        checkpoints.append({"model": mid, "learning_rate": 0.05, "optimizer_state": sid})
        H = dense_hessian(HessianProblem(model, [(x, y)]))
        t_ = float(state["step"])
        v = torch.cat([state[f"exp_avg_sq.{n}"].reshape(-1) for n, _ in model.named_parameters()])
        P = (1 - 0.9**t_) * ((v / (1 - 0.99**t_)).sqrt() + 1e-6)
        M = H / P.sqrt()[:, None] / P.sqrt()[None, :]
        exact.append(
            (float(torch.linalg.eigvalsh(0.5 * (M + M.T))[-1]), float(torch.linalg.eigvalsh(H)[-1]))
        )
    spec = TrajectorySpec.model_validate(
        {
            "checkpoints": checkpoints,
            "dataset": {"id": npz, "batch_size": 16},
            "k": 2,
            "tol": 1e-9,
            "optimizer": {"name": "adam", "beta1": 0.9, "beta2": 0.99, "eps": 1e-6},
        }
    )
    t = store.create(spec, "cpu")
    assert execute(t.id, rt) == "succeeded", store.get(t.id).error
    done = store.get(t.id)
    threshold = (2 + 2 * 0.9) / ((1 - 0.9) * 0.05)
    for p, (pre, lam) in zip(done.points, exact, strict=True):
        assert p.stability_quantity == "preconditioned_lambda_max"
        assert p.preconditioned_lambda_max == pytest.approx(pre, rel=1e-7)
        assert p.lambda_max == pytest.approx(lam, rel=1e-7)
        assert p.stability_threshold == pytest.approx(threshold)
        assert p.stability_ratio == pytest.approx(pre / threshold, rel=1e-7)


def test_adam_state_that_does_not_fit_is_named(
    rt: WorkerRuntime, store: TrajectoryStore, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    xn, yn = A.data(n=32)
    npz = put(rt.blobs, "datasets", A.save_npz(tmp_path / "d.npz", xn, yn), format="npz")
    path = A.export(A.mlp(), tmp_path / "m.pt2", 4, torch.float64)
    mid = put(rt.blobs, "models", path, format="torch_export")
    state = {"exp_avg_sq.0.weight": torch.ones(8, 4), "step": torch.tensor([3.0])}
    save_file(state, str(tmp_path / "s.safetensors"))
    sid = put(rt.blobs, "optimizer_states", tmp_path / "s.safetensors")
    cp = {"model": mid, "learning_rate": 0.05, "optimizer_state": sid}
    spec = TrajectorySpec.model_validate(
        {"checkpoints": [cp, cp], "dataset": {"id": npz}, "optimizer": {"name": "adam"}}
    )
    t = store.create(spec, "cpu")
    assert execute(t.id, rt) == "failed"
    err = store.get(t.id).error
    assert "checkpoints[0].optimizer_state" in err.detail and "exp_avg_sq.0.bias" in err.detail


def test_mode_reason_says_which_mode_and_why() -> None:
    from torch import nn

    from tasks.worker.trajectory_job import mode_reason

    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.1), nn.Linear(4, 3))
    assert mode_reason(bn, "eval", False).startswith("eval (the default)")
    assert "mode 'train' measures" in mode_reason(bn, "eval", False)
    train = mode_reason(bn, "train", False)
    assert train.startswith("train (requested)") and "BatchNorm and dropout" in train
    assert "no BatchNorm or dropout" in mode_reason(A.mlp(), "eval", False)
    assert "exported with" in mode_reason(A.mlp(), "train", True)
