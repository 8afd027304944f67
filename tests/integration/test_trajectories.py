"""Trajectories end to end: real gateway, Redis and worker process, over HTTP and the SDK.

Three SGD checkpoints of a tiny float64 MLP: λmax, λmax·η/2 and the eigenvector overlaps
against eigh of the dense Hessians; a checkpoint of another shape fails naming it; a long
trajectory is cancelled within seconds; the PNG endpoints answer real pictures.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from sharpness_client import Client, NotFoundError
from tasks.engine.problem import HessianProblem
from tests import artifacts as A
from tests.checkpoints import sgd_checkpoints
from tests.engine.reference import dense_hessian
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

LR = 2.0
STEPS = [0, 4, 12]
BATCH = 40


def dense_top(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, k: int):
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y)
    batches = [(xt[i : i + BATCH], yt[i : i + BATCH]) for i in range(0, len(xt), BATCH)]
    evals, evecs = torch.linalg.eigh(dense_hessian(HessianProblem(model.double().eval(), batches)))
    order = torch.argsort(evals, descending=True)[:k]
    return evals[order], evecs[:, order]


def assert_png(png: bytes) -> None:
    import matplotlib.image

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert 300 <= img.shape[0] <= 2000 and 300 <= img.shape[1] <= 2000, img.shape


def test_trajectory_matches_dense_hessians(stack: Stack, tmp_path: Path) -> None:
    x, y = A.data(n=96, dtype=np.float64)
    models = sgd_checkpoints(
        A.mlp(4, 8, 3, seed=1).double(), torch.from_numpy(x), torch.from_numpy(y), LR, STEPS
    )
    ids = [
        stack.upload_id("models", A.export(m, tmp_path / f"c{i}.pt2", 4, torch.float64))
        for i, m in enumerate(models)
    ]
    data_id = stack.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    k = 3
    with Client(stack.url) as client:
        t = client.trajectories.create(
            checkpoints=[(m, LR, s) for m, s in zip(ids, STEPS, strict=True)],
            dataset=data_id,
            batch_size=BATCH,
            k=k,
            tol=1e-10,
            max_iter=200,
            labels={"suite": "trajectory"},
        )
        assert t.status == "queued"
        t = client.trajectories.wait(t.id, timeout=120, poll_interval=0.2)
        assert t.status == "succeeded", t.error
        png = client.trajectories.plot(t.id, tmp_path / "traj.png")
        assert (tmp_path / "traj.png").read_bytes() == png
        assert [i.id for i in client.trajectories.list(labels={"suite": "trajectory"})] == [t.id]
    assert_png(png)
    dense = [dense_top(m, x, y, k) for m in models]
    assert [p.index for p in t.points] == [0, 1, 2] and [p.step for p in t.points] == STEPS
    for p, (evals, _) in zip(t.points, dense, strict=True):
        exact = float(evals[0])
        assert abs(p.lambda_max - exact) <= 1e-6 * abs(exact), (p.lambda_max, exact)
        assert p.eigenvalues == pytest.approx(evals.tolist(), rel=1e-6)
        assert p.stability_ratio == pytest.approx(exact * LR / 2, rel=1e-6)
        assert p.beyond_edge == (exact * LR / 2 > 1) and p.converged and p.dim == 67
    assert [(o.start, o.end) for o in t.overlaps] == [(0, 1), (1, 2)]
    for o in t.overlaps:
        (_, V), (_, W) = dense[o.start], dense[o.end]
        want_top = abs(float(V[:, 0] @ W[:, 0]))
        want_sub = float((V.T @ W).pow(2).sum()) / k
        assert abs(o.top_overlap - want_top) <= 1e-6, (o.top_overlap, want_top)
        assert abs(o.subspace_overlap - want_sub) <= 1e-6, (o.subspace_overlap, want_sub)
    assert all(p.state == "done" for p in t.progress) and t.attempts == 1
    # eigenvectors never reach Redis: the record holds a few numbers per checkpoint
    raw = stack.redis().hgetall(f"sharpness:trajectory:{t.id}")
    assert sum(len(v) for v in raw.values()) < 20_000


def test_mismatched_checkpoint_fails_naming_it(stack: Stack, tmp_path: Path) -> None:
    x, y = A.data(n=32)
    same = stack.upload_id("models", A.export(A.mlp(4, 8, 3, seed=2), tmp_path / "a.pt2", 4))
    other = stack.upload_id("models", A.export(A.mlp(4, 9, 3, seed=2), tmp_path / "b.pt2", 4))
    data_id = stack.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    spec = {
        "checkpoints": [
            {"model": same, "learning_rate": 0.1},
            {"model": same, "learning_rate": 0.1},
            {"model": other, "learning_rate": 0.1},
        ],
        "dataset": {"id": data_id},
        "k": 2,
    }
    r = httpx.post(f"{stack.url}/v1/trajectories", json=spec, timeout=30)
    assert r.status_code == 202, r.text
    t = wait(stack, r.json()["id"])
    assert t["status"] == "failed", t
    err = t["error"]
    assert err["status"] == 422 and err["title"] == "Checkpoints do not match"
    assert err["detail"].startswith("checkpoints[2].model:"), err
    assert "'0.weight' has shape [9, 4] but [8, 4]" in err["detail"], err
    assert len(t["points"]) == 2 and t["overlaps"][0]["top_overlap"] == pytest.approx(1.0)
    assert [p["state"] for p in t["progress"]] == ["done", "done", "failed"]


def wait(
    stack: Stack, tid: str, timeout_s: float = 120.0, until=("succeeded", "failed", "cancelled")
):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        t = httpx.get(f"{stack.url}/v1/trajectories/{tid}", timeout=30).json()
        if t["status"] in until:
            return t
        time.sleep(0.1)
    raise TimeoutError(f"trajectory {tid} still {t['status']}\n{stack.logs()}")


def test_cancel_running_trajectory(stack: Stack, tmp_path: Path) -> None:
    """Many checkpoints of a 2826-parameter MLP at a tight tolerance: minutes unless stopped."""
    x, y = A.data(n=256, in_features=32, classes=10, seed=5)
    big = stack.upload_id("models", A.export(A.mlp(32, 64, 10, seed=5), tmp_path / "b.pt2", 32))
    data_id = stack.upload_id("datasets", A.save_npz(tmp_path / "big.npz", x, y))
    spec = {
        "checkpoints": [{"model": big, "learning_rate": 0.1} for _ in range(50)],
        "dataset": {"id": data_id, "batch_size": 128},
        "k": 20,
        "tol": 1e-12,
        "max_iter": 2000,
    }
    tid = httpx.post(f"{stack.url}/v1/trajectories", json=spec, timeout=30).json()["id"]
    asked = stack.cancel_when_moving(
        "trajectories", tid, lambda t: t["progress"][0]["iteration"] > 0
    )
    t = wait(stack, tid, timeout_s=10)
    assert t["status"] == "cancelled", t
    assert time.monotonic() - asked < 5
    assert len(t["points"]) < 50


def test_spectral_density_png_of_a_real_job(stack: Stack, tmp_path: Path) -> None:
    x, y = A.data(n=48)
    model_id = stack.upload_id("models", A.export(A.mlp(seed=7), tmp_path / "m.pt2", 4))
    data_id = stack.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    spec = {"model": model_id, "dataset": {"id": data_id}}
    with_density = stack.submit(
        {**spec, "measures": [{"name": "spectral_density", "params": {"runs": 2, "steps": 20}}]}
    )
    without = stack.submit({**spec, "measures": [{"name": "lambda_max"}]})
    assert stack.wait(with_density)["status"] == "succeeded"
    assert stack.wait(without)["status"] == "succeeded"
    with Client(stack.url) as client:
        png = client.jobs.plot(with_density, "spectral_density", tmp_path / "sd.png")
        assert_png(png)
        with pytest.raises(NotFoundError):
            client.jobs.plot(without, "spectral_density")
    r = httpx.get(f"{stack.url}/v1/jobs/{without}/plots/spectral_density.png", timeout=30)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


def test_cli_trajectory(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sharpness_client import cli

    x, y = A.data(n=24)
    m0 = A.export(A.mlp(seed=8), tmp_path / "c0.pt2", 4)
    m1 = A.export(A.mlp(seed=9), tmp_path / "c1.pt2", 4)
    npz = A.save_npz(tmp_path / "d.npz", x, y)
    out = tmp_path / "t.png"
    args = ["--url", stack.url, "trajectory", "create", "--data", str(npz), "--k", "2"]
    args += ["--checkpoint", f"{m0}:0.5:0", "--checkpoint", f"{m1}:0.5:10", "--plot", str(out)]
    assert cli.main(args) == 0, capsys.readouterr()
    text = capsys.readouterr().out
    assert "succeeded, 2/2 checkpoints" in text and "0→1" in text
    assert_png(out.read_bytes())
