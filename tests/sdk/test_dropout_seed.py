"""The SDK and the CLI (`--dropout-seed`) send dropout_seed when it is given, and only then."""

from __future__ import annotations

import json
import uuid

import pytest

from sharpness_client import Client
from sharpness_client._spec import build_spec
from tests.sdk.scripted_server import Reply, queued_job, scripted

M, D = "a" * 64, "b" * 64


def test_build_spec_sets_it_only_when_given() -> None:
    spec = build_spec(M, D, ["lambda_max"], mode="train", dropout_seed=9)
    assert spec.dropout_seed == 9 and "dropout_seed" in spec.model_fields_set
    assert "dropout_seed" not in build_spec(M, D, ["lambda_max"]).model_fields_set


def test_jobs_create_sends_it() -> None:
    with (
        scripted([Reply(202, queued_job(M, D))]) as server,
        Client(server.url, max_retries=0) as client,
    ):
        client.jobs.create(
            model=M, dataset=D, measures=["lambda_max"], mode="train", dropout_seed=3
        )
    [seen] = server.seen
    assert json.loads(seen.body)["dropout_seed"] == 3


def _cli_submit(capsys, *extra: str) -> tuple[int, dict, dict[str, str]]:
    """`sharpness measure` with ids (nothing to upload) and --no-wait: its exit code and the
    body and headers of the one POST it sent."""
    from sharpness_client.cli import main

    with scripted([Reply(202, queued_job(M, D))]) as server:
        args = ["measure", M, "--data", D, "--measure", "lambda_max", *extra]
        code = main([*args, "--url", server.url, "--no-wait", "--json"])
    capsys.readouterr()
    [seen] = server.seen
    return code, json.loads(seen.body), seen.headers


def test_cli_dropout_seed_is_sent_only_when_given(capsys) -> None:
    code, body, _ = _cli_submit(capsys, "--mode", "train", "--dropout-seed", "7")
    assert code == 0 and body["dropout_seed"] == 7 and body["mode"] == "train"
    code, body, _ = _cli_submit(capsys, "--mode", "train")
    assert code == 0 and "dropout_seed" not in body
    code, body, _ = _cli_submit(capsys, "--dropout-seed", "0")
    assert code == 0 and body["dropout_seed"] == 0


@pytest.mark.parametrize("bad", ["-1", "1.5", "seven"])
def test_cli_dropout_seed_must_be_a_non_negative_integer(capsys, bad: str) -> None:
    with pytest.raises(SystemExit) as usage:
        _cli_submit(capsys, "--dropout-seed", bad)
    assert usage.value.code == 64  # bad usage, nothing sent
    assert "--dropout-seed" in capsys.readouterr().err


def test_cli_sends_a_fresh_key_or_the_one_given(capsys) -> None:
    keys = [_cli_submit(capsys)[2]["Idempotency-Key"] for _ in range(2)]
    assert keys[0] != keys[1] and all(uuid.UUID(hex=k).version == 4 for k in keys)
    _, _, headers = _cli_submit(capsys, "--idempotency-key", "nightly-7")
    assert headers["Idempotency-Key"] == "nightly-7"
