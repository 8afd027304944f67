"""Held-out data and the initial model through the SDK and the CLI: loose forms in, spec out.

`client.measure` runs against an in-memory gateway (httpx.MockTransport) that records what the
SDK sends; the SDK itself is what is under test."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import numpy as np

from sharpness_client import Client, cli
from sharpness_client._spec import build_spec
from sharpness_client.types import DatasetInfo, DatasetRef, ModelInfo

M, D, E, W0 = "a" * 64, "b" * 64, "c" * 64, "d" * 64
NOW = "2026-01-01T00:00:00Z"


def test_build_spec_accepts_loose_eval_dataset_and_initial_model() -> None:
    spec = build_spec(M, D, ["weight_norms"], eval_dataset=E, initial_model=W0, batch_size=32)
    assert spec.eval_dataset == DatasetRef(id=E, batch_size=32)
    assert spec.initial_model == W0
    uri = build_spec(M, D, ["weight_norms"], eval_dataset="file:///data/test.npz")
    assert uri.eval_dataset.uri == "file:///data/test.npz"
    info = DatasetInfo(
        id=E,
        sha256=E,
        size_bytes=1,
        created_at=NOW,
        format="npz",
        arrays={},
        num_examples=3,
        inputs_key="x",
        targets_key="y",
    )
    model = ModelInfo(id=W0, sha256=W0, size_bytes=1, created_at=NOW, format="torch_export")
    spec = build_spec(M, D, ["weight_norms"], eval_dataset=info, initial_model=model)
    assert (spec.eval_dataset.id, spec.eval_dataset.inputs_key) == (E, "x")
    assert spec.initial_model == W0
    mapping = build_spec(M, D, ["weight_norms"], eval_dataset={"id": E, "max_samples": 5})
    assert mapping.eval_dataset.max_samples == 5
    plain = build_spec(M, D, ["weight_norms"]).model_dump(mode="json", exclude_none=True)
    assert "eval_dataset" not in plain and "initial_model" not in plain


class Gateway:
    """Answers uploads with ids from the request's hash and a job that is already done."""

    def __init__(self) -> None:
        self.uploads: dict[str, list[str]] = {"models": [], "datasets": []}
        self.bodies: list[bytes] = []
        self.job: dict[str, Any] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path in ("/v1/models", "/v1/datasets"):
            kind = path.rsplit("/", 1)[1]
            digest = hashlib.sha256(request.content).hexdigest()
            self.uploads[kind].append(digest)
            self.bodies.append(request.content)
            info: dict[str, Any] = {
                "id": digest,
                "sha256": digest,
                "size_bytes": len(request.content),
                "created_at": NOW,
            }
            if kind == "models":
                info["format"] = "torch_export"
            else:
                info.update(
                    format="npz",
                    arrays={},
                    num_examples=4,
                    inputs_key="inputs",
                    targets_key="targets",
                )
            return httpx.Response(201, json=info)
        if request.method == "POST" and path == "/v1/jobs":
            spec = json.loads(request.content)
            self.job = {
                "id": "1" * 32,
                "status": "succeeded",
                "spec": spec,
                "queue": "cpu",
                "created_at": NOW,
                "evaluation": {"loss": 0.1, "test": {"loss": 0.3}, "gap": {"loss": 0.2}},
            }
            return httpx.Response(202, json=self.job)
        if request.method == "GET" and self.job and path == f"/v1/jobs/{self.job['id']}":
            return httpx.Response(200, json=self.job)
        return httpx.Response(404, json={"title": "Not found", "status": 404})


def test_measure_uploads_eval_data_and_initial_model() -> None:
    gateway = Gateway()
    http = httpx.Client(transport=httpx.MockTransport(gateway), base_url="http://gateway")
    x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    xt, yt = np.ones((4, 3), np.float32), np.array([1, 1, 0, 0])
    with Client("http://gateway", http_client=http) as client:
        job = client.measure(
            M, (x, y), ["weight_norms"], eval_data=(xt, yt), initial_model=b"w0 archive"
        )
    train_id, eval_id = gateway.uploads["datasets"]
    assert train_id != eval_id
    assert len(gateway.uploads["models"]) == 1 and b"w0 archive" in gateway.bodies[-1]
    assert job.spec.dataset.id == train_id and job.spec.eval_dataset.id == eval_id
    assert job.spec.initial_model == gateway.uploads["models"][0]
    assert job.evaluation["gap"]["loss"] == 0.2


def test_measure_passes_ids_through_without_uploading() -> None:
    gateway = Gateway()
    http = httpx.Client(transport=httpx.MockTransport(gateway), base_url="http://gateway")
    with Client("http://gateway", http_client=http) as client:
        job = client.measure(M, D, ["weight_norms"], eval_data=E, initial_model=W0)
    assert gateway.uploads == {"models": [], "datasets": []}
    assert (job.spec.eval_dataset.id, job.spec.initial_model) == (E, W0)


def test_cli_eval_data_and_initial_model_options() -> None:
    args = cli._parser().parse_args(
        ["measure", M, "--data", D, "--measure", "pacbayes_flatness", "--eval-data", E]
        + ["--initial-model", W0]
    )
    assert (args.eval_data, args.initial_model) == (E, W0)
    args = cli._parser().parse_args(["measure", M, "--data", D, "--measure", "weight_norms"])
    assert args.eval_data is None and args.initial_model is None
