"""A real gateway and worker serving several tenants from a tenants file: two users (a, b),
an ops key, an admin key, a user with a one-run and small-storage quota and one limited to a
few requests a minute. Tenant a owns one of every kind of record and upload; the tests try
them with the other keys."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save

from service.tenants.registry import digest
from tasks.store.local_redis import PrivateRedis
from tests import artifacts as A
from tests import databases
from tests.integration.conftest import TERMINAL, Stack, start_stack

TENANTS = {
    "a": {"role": "user"},
    "b": {"role": "user"},
    "ops": {"role": "ops"},
    "root": {"role": "admin"},
    "small": {"role": "user", "max_active_runs": 1},  # and room for a model and a dataset
    "chatty": {"role": "user", "max_requests_per_minute": 5},
}


@dataclass
class Tenants:
    """The stack, each tenant's HTTP client, and the ids tenant a owns, by kind."""

    stack: Stack
    clients: dict[str, httpx.Client]
    owned: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> httpx.Client:
        return self.clients[name]

    def upload(self, who: str, kind: str, path: Path) -> httpx.Response:
        with path.open("rb") as fh:
            return self[who].post(f"/v1/{kind}", files={"file": (path.name, fh)})

    def wait(self, who: str, path: str, timeout_s: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = self[who].get(path).json()
            if record.get("status") in TERMINAL:
                return record
            time.sleep(0.2)
        raise TimeoutError(f"{path} not finished\n{self.stack.logs()}")


def job_spec(model: str, dataset: str) -> dict[str, Any]:
    return {
        "model": model,
        "dataset": {"id": dataset, "batch_size": 16},
        "measures": [{"name": "lambda_max", "params": {"tol": 1e-4}}],
        "labels": {"suite": "tenants"},
    }


def trajectory_spec(model: str, dataset: str, state: str | None = None) -> dict[str, Any]:
    cp: dict[str, Any] = {"model": model, "learning_rate": 0.1}
    spec: dict[str, Any] = {"dataset": {"id": dataset, "batch_size": 16}}
    if state:
        cp["optimizer_state"] = state
        spec["optimizer"] = {"name": "adam"}
    return {"checkpoints": [cp, {**cp, "step": 1}], **spec}


def _files(tmp: Path) -> dict[str, Path]:
    model = A.mlp(in_features=4, hidden=8, out=3, seed=3)
    x, y = A.data(n=32, dtype=np.float32, seed=3)
    state = tmp / "state.safetensors"
    state.write_bytes(
        save(
            {
                "step": torch.tensor([7.0]),
                "exp_avg_sq.0.weight": torch.rand(8, 4),
                "exp_avg_sq.0.bias": torch.rand(8),
                "exp_avg_sq.2.weight": torch.rand(3, 8),
                "exp_avg_sq.2.bias": torch.rand(3),
            }
        )
    )
    return {
        "model": A.export(model, tmp / "m.pt2", 4),
        "dataset": A.save_npz(tmp / "d.npz", x, y),
        "state": state,
    }


def _own_everything(t: Tenants) -> None:
    """Tenant a uploads a model, a dataset and an optimizer state, runs a job and a
    trajectory to the end and makes a study of its job."""
    ids = {
        "model": t.upload("a", "models", t.files["model"]).json()["id"],
        "dataset": t.upload("a", "datasets", t.files["dataset"]).json()["id"],
        "state": t.upload("a", "trajectories/optimizer-states", t.files["state"]).json()["id"],
    }
    job = t["a"].post("/v1/jobs", json=job_spec(ids["model"], ids["dataset"]))
    assert job.status_code == 202, job.text
    ids["job"] = job.json()["id"]
    traj = t["a"].post("/v1/trajectories", json=trajectory_spec(ids["model"], ids["dataset"]))
    assert traj.status_code == 202, traj.text
    ids["trajectory"] = traj.json()["id"]
    assert t.wait("a", f"/v1/jobs/{ids['job']}")["status"] == "succeeded"
    t.wait("a", f"/v1/trajectories/{ids['trajectory']}")
    study = t["a"].post("/v1/studies", json={"name": "s", "jobs": [{"job": ids["job"]}]})
    assert study.status_code == 201, study.text
    ids["study"] = study.json()["id"]
    t.owned.update(ids)


@pytest.fixture(scope="session")
def tenants(
    redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tenants]:
    tmp = tmp_path_factory.mktemp("tenants")
    files = _files(tmp)
    room = files["model"].stat().st_size + files["dataset"].stat().st_size + 16
    keys = {name: f"key-of-{name}-{time.time_ns()}" for name in TENANTS}
    entries = [
        {"name": name, "key_sha256": digest(keys[name]), **conf} for name, conf in TENANTS.items()
    ]
    entries[list(TENANTS).index("small")]["max_storage_bytes"] = room
    tenants_file = tmp / "tenants.json"
    tenants_file.write_text(json.dumps({"tenants": entries}))
    stack = start_stack(redis_server, databases.TENANTS, tmp / "var", tenants_file=tenants_file)
    clients = {
        name: httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        for name, key in keys.items()
    }
    t = Tenants(stack=stack, clients=clients, files=files)
    try:
        _own_everything(t)
        yield t
    finally:
        for c in clients.values():
            c.close()
        stack.stop()
