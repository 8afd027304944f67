"""Building job specs from loose arguments, and the CLI's argument parsing."""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any

import numpy as np
import pytest

from sharpness_client import Client, cli
from sharpness_client._convert import arrays_to_npz
from sharpness_client._inputs import data_plan, model_plan
from sharpness_client._spec import build_spec
from sharpness_client.resources.jobs import AsyncJobs, Jobs
from sharpness_client.types import (
    DatasetInfo,
    DatasetRef,
    JobSpec,
    MeasureRequest,
)
from tests.sdk.scripted_server import Reply, queued_job, scripted

M, D = "a" * 64, "b" * 64


def test_measures_params_and_defaults() -> None:
    spec = build_spec(
        M,
        D,
        ["lambda_max", {"name": "trace", "params": {"rtol": 0.01}}],
        params={"trace": {"num_hvps": 200}},
        device="cpu",
        labels={"run": "r1"},
        batch_size=64,
    )
    assert spec.measures == [
        MeasureRequest(name="lambda_max"),
        MeasureRequest(name="trace", params={"rtol": 0.01, "num_hvps": 200}),
    ]
    assert spec.dataset == DatasetRef(id=D, batch_size=64)
    assert spec.device == "cpu" and spec.loss == "cross_entropy" and spec.labels == {"run": "r1"}


def test_params_for_a_measure_not_requested_is_an_error() -> None:
    with pytest.raises(ValueError, match="trace"):
        build_spec(M, D, ["lambda_max"], params={"trace": {"num_hvps": 5}})


def test_dataset_forms() -> None:
    assert build_spec(M, "file:///data/x.npz", ["trace"]).dataset.uri == "file:///data/x.npz"
    info = DatasetInfo(
        id=D,
        sha256=D,
        size_bytes=1,
        created_at="2026-01-01T00:00:00Z",
        format="npz",
        arrays={},
        num_examples=3,
        inputs_key="x",
        targets_key="y",
    )
    ref = build_spec(M, info, ["trace"], max_samples=2).dataset
    assert (ref.id, ref.inputs_key, ref.targets_key, ref.max_samples) == (D, "x", "y", 2)


def test_measure_inputs_are_sorted_into_refs_and_uploads(tmp_path) -> None:
    x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    assert data_plan((x, y)).upload[:2] == b"PK"  # an .npz, built in memory
    assert data_plan(D).ref == D
    path = tmp_path / "d.npz"
    path.write_bytes(arrays_to_npz(x, y))
    assert data_plan(str(path)).upload == str(path)
    assert model_plan(M, None).ref == M


def test_arrays_must_agree() -> None:
    with pytest.raises(ValueError, match="3 examples"):
        arrays_to_npz(np.zeros((3, 2)), np.zeros(4))


def test_cli_params_parse_json_values() -> None:
    got = cli._params(["trace.num_hvps=200", "trace.method=hutchpp", "lambda_max.tol=1e-8"])
    assert got == {"trace": {"num_hvps": 200, "method": "hutchpp"}, "lambda_max": {"tol": 1e-8}}
    with pytest.raises(argparse.ArgumentTypeError):
        cli._params(["num_hvps=3"])


def test_cli_json_flag_before_or_after_the_subcommand() -> None:
    parser = cli._parser()
    assert parser.parse_args(["--json", "queue"]).json is True
    assert parser.parse_args(["queue", "--json"]).json is True
    assert parser.parse_args(["queue"]).json is False


def test_cli_usage_error_exit_code() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["measure", "model.pt2"])  # --data and --measure missing
    assert info.value.code == cli.EXIT_USAGE


# ---------------------------------------------------------------- defaults stay the server's
def test_job_request_carries_only_what_the_caller_set() -> None:
    """Fields the caller leaves out are not sent, so the server's defaults apply to them."""
    with (
        scripted([Reply(202, queued_job(M, D))]) as server,
        Client(server.url, max_retries=0) as client,
    ):
        client.jobs.create(model=M, dataset=D, measures=["lambda_max"])
        client.jobs.create(
            model=M,
            dataset={"id": D, "max_samples": 10},
            measures=["trace"],
            params={"trace": {"num_hvps": 20}},
            batch_size=64,
            loss="mse",
            labels={"run": "r1"},
        )
    bare, full = (json.loads(seen.body) for seen in server.seen)
    assert bare == {"model": M, "dataset": {"id": D}, "measures": [{"name": "lambda_max"}]}
    assert full == {
        "model": M,
        "dataset": {"id": D, "max_samples": 10, "batch_size": 64},
        "measures": [{"name": "trace", "params": {"num_hvps": 20}}],
        "loss": "mse",
        "labels": {"run": "r1"},
    }


# the SDK's defaults against openapi.yaml's, for every model: tests/sdk/test_types_contract.py


@pytest.mark.parametrize(
    "method",
    [Jobs.create, AsyncJobs.create, Client.measure],
    ids=["Jobs.create", "AsyncJobs.create", "Client.measure"],
)
def test_spec_arguments_default_to_unset(method: Any) -> None:
    """The job spec's keyword arguments default to None (not sent), never to a value."""
    spec_fields = set(JobSpec.model_fields) | {"batch_size", "max_samples", "params"}
    params = inspect.signature(method).parameters
    defaults = {
        n: p.default for n, p in params.items() if n in spec_fields and p.default is not p.empty
    }
    assert defaults and all(v is None for v in defaults.values()), defaults
