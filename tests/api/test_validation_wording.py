"""Validation errors name the fix: an unknown field lists the valid names there (a measure's
parameters from the registry, a request object's fields from the schema) with the closest
match, and a body that is not JSON says so and how to send it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tasks.engine import registry
from tests.api.checks import assert_problem

M = "a" * 64


def job(**over):
    return {"model": M, "dataset": {"id": M}, "measures": [{"name": "lambda_max"}], **over}


def only_error(client: TestClient, path: str, body) -> dict:
    problem = assert_problem(client.post(path, json=body), 422)
    assert len(problem["errors"]) == 1, problem
    err = problem["errors"][0]
    assert f"{err['field']}: {err['message']}" in problem["detail"]
    return err


@pytest.mark.parametrize("measure", ["lambda_max", "trace", "adaptive_sharpness"])
def test_misspelled_measure_parameter_lists_that_measures_parameters(
    client: TestClient, measure: str
) -> None:
    body = job(measures=[{"name": "trace"}, {"name": measure, "params": {"seeed": 1}}])
    err = only_error(client, "/v1/jobs", body)
    assert err["field"] == "measures.1.params.seeed" and err["type"] == "extra_forbidden"
    valid = list(registry.measures()[measure].params.model_fields)
    assert f"valid fields here: {', '.join(valid)}" in err["message"]
    assert "did you mean 'seed'?" in err["message"]
    assert "Extra inputs are not permitted" not in err["message"]


@pytest.mark.parametrize(
    ("over", "field", "closest", "valid"),
    [
        ({"dataset": {"id": M, "batchsize": 8}}, "dataset.batchsize", "batch_size", "targets_key"),
        (
            {"eval_dataset": {"id": M, "max_sample": 8}},
            "eval_dataset.max_sample",
            "max_samples",
            "uri",
        ),
        ({"devise": "cpu"}, "devise", "device", "initial_model"),
    ],
)
def test_misspelled_spec_field_lists_the_fields_there(
    client: TestClient, over: dict, field: str, closest: str, valid: str
) -> None:
    err = only_error(client, "/v1/jobs", job(**over))
    assert err["field"] == field
    assert f"did you mean {closest!r}?" in err["message"] and valid in err["message"]


def test_misspelled_field_elsewhere_and_without_a_close_match(client: TestClient) -> None:
    body = {"name": "s", "jobs": [{"job": "0" * 32}], "targt": "loss_gap"}
    err = only_error(client, "/v1/studies", body)
    assert err["field"] == "targt" and "did you mean 'target'?" in err["message"]
    assert "name, jobs, target, level" in err["message"]
    err = only_error(client, "/v1/jobs", job(zzz=1))
    assert "did you mean" not in err["message"] and "valid fields here: model," in err["message"]


@pytest.mark.parametrize("content", [b'{"model": nope}', b"\xff\xfe", b""])
def test_undecodable_body_says_so(client: TestClient, content: bytes) -> None:
    r = client.post("/v1/jobs", content=content, headers={"content-type": "application/json"})
    problem = assert_problem(r, 422)
    fields = [e["field"] for e in problem["errors"]]
    assert fields == ["body"], problem
    message = problem["errors"][0]["message"]
    assert ("not valid JSON" if content else "the body is empty") in message
    assert "Content-Type: application/json" in message


def test_form_body_asks_for_json(client: TestClient) -> None:
    r = client.post("/v1/jobs", data={"model": M})
    problem = assert_problem(r, 422)
    assert "Content-Type: application/json" in problem["detail"], problem
