"""Optimizer states for Adam trajectories: upload (torch-free checks), read, reference from a
trajectory, and the optimizer field's validation."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from tests.api.checks import assert_problem


def _state(**tensors: torch.Tensor) -> bytes:
    return save(tensors)


def _upload(client: TestClient, data: bytes, name: str = "state.safetensors"):
    return client.post("/v1/trajectories/optimizer-states", files={"file": (name, data)})


GOOD = {
    "step": torch.tensor([7.0]),
    "exp_avg_sq.0.weight": torch.rand(8, 4),
    "exp_avg_sq.0.bias": torch.rand(8),
}


def body(model: str, dataset: str, state: str | None, optimizer: dict) -> dict:
    cp = {"model": model, "learning_rate": 0.01}
    if state is not None:
        cp["optimizer_state"] = state
    return {"checkpoints": [cp, dict(cp)], "dataset": {"id": dataset}, "optimizer": optimizer}


def test_upload_read_and_reference(client: TestClient, model_id: str, dataset_id: str) -> None:
    r = _upload(client, _state(**GOOD))
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["parameters"] == ["0.bias", "0.weight"] and info["format"] == "safetensors"
    assert _upload(client, _state(**GOOD)).status_code == 200  # idempotent by content
    assert client.get(f"/v1/trajectories/optimizer-states/{info['id']}").json() == info
    t = client.post(
        "/v1/trajectories", json=body(model_id, dataset_id, info["id"], {"name": "adam"})
    )
    assert t.status_code == 202, t.text
    assert t.json()["spec"]["optimizer"]["beta1"] == 0.9
    assert t.json()["edge_analysis"]["beyond_edge"]["pairs"] == 0


def test_bad_uploads_say_what_to_send(client: TestClient) -> None:
    assert_problem(_upload(client, b"not safetensors at all"), 415, "exp_avg_sq")
    no_step = dict(GOOD)
    del no_step["step"]
    assert_problem(_upload(client, _state(**no_step)), 422, "'step'")
    only_step = {"step": torch.tensor([1.0])}
    assert_problem(_upload(client, _state(**only_step)), 422, "exp_avg_sq.")
    stray = {**GOOD, "exp_avg.0.weight": torch.rand(8, 4)}
    assert_problem(_upload(client, _state(**stray)), 422, "unexpected tensors")
    ints = {**GOOD, "exp_avg_sq.0.bias": torch.ones(8, dtype=torch.int64)}
    assert_problem(_upload(client, _state(**ints)), 422, "not floating")


def test_trajectory_optimizer_validation(
    client: TestClient, model_id: str, dataset_id: str
) -> None:
    missing = body(model_id, dataset_id, None, {"name": "adam"})
    assert_problem(client.post("/v1/trajectories", json=missing), 422, "optimizer_state")
    unknown = body(model_id, dataset_id, "e" * 64, {"name": "adam"})
    assert_problem(
        client.post("/v1/trajectories", json=unknown), 422, "checkpoints.0.optimizer_state"
    )
    stray = body(model_id, dataset_id, None, {"name": "gd", "momentum": 0.9})
    assert_problem(client.post("/v1/trajectories", json=stray), 422, "momentum")
    ok = body(model_id, dataset_id, None, {"name": "sgd", "momentum": 0.9, "nesterov": True})
    r = client.post("/v1/trajectories", json=ok)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["optimizer"] == {
        "name": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
    }
    plain = client.post("/v1/trajectories", json=body(model_id, dataset_id, None, {}))
    assert plain.json()["spec"]["optimizer"]["name"] == "gd"
