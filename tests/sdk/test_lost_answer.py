"""A gateway process killed mid-submit, against the real stack: the SDK's and the CLI's retry,
under the key the first attempt carried, finds the record the dead process made and enqueued,
and there is exactly one.

The victim is a gateway process of its own on the SDK stack's Redis; a proxy in front of it
SIGKILLs its process group once it has made the record (it starts to answer only after the
record is written and its message sent), so the answer never reaches the client. The retry
reaches the stack's own gateway, as a load balancer would send it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sharpness_client import Client, JobStatus
from sharpness_client.cli import main
from tests.integration.conftest import Stack
from tests.processes import spawn_gateway, wait_answering
from tests.sdk import models as M
from tests.sdk.fault_proxy import KillingProxy

pytestmark = pytest.mark.integration


@dataclass
class Setup:
    proxy: KillingProxy
    victim: subprocess.Popen
    model: str
    dataset: str
    label: dict[str, str]


@pytest.fixture
def lossy(sdk_stack: Stack, service_url: str, tmp_path) -> Iterator[Setup]:
    log = tmp_path / "victim.log"
    victim, url = spawn_gateway(sdk_stack.env, 1, log)

    def kill() -> None:
        os.killpg(victim.pid, signal.SIGKILL)

    try:
        wait_answering(url, [victim], lambda: log.read_text(errors="replace"))
        x, y = M.data(n=16, seed=11)
        with Client(service_url) as client:  # the uploads go straight to the stack
            model = client.models.from_module(M.mlp(seed=11), x[:2]).id
            dataset = client.datasets.from_arrays(x, y).id
        victim_port, survivor_port = int(url.rsplit(":", 1)[1]), sdk_stack.port
        with KillingProxy(victim_port, survivor_port, kill) as proxy:
            yield Setup(proxy, victim, model, dataset, {"lost-answer": uuid.uuid4().hex})
    finally:
        if victim.poll() is None:
            kill()
        victim.wait(timeout=30)


def _one_record(setup: Setup, service_url: str, job_id: str) -> None:
    """The victim died after making the record; the retry replayed it; one record, one run."""
    assert setup.proxy.killed.is_set()
    assert setup.victim.wait(timeout=30) == -signal.SIGKILL
    keys = setup.proxy.headers("Idempotency-Key")
    assert len(keys) == 2 and keys[0] == keys[1], keys  # the lost attempt and its retry
    [answer] = [a for a in setup.proxy.answers() if a.startswith(b"HTTP/1.1 202")]
    assert b"idempotent-replayed: true" in answer.lower()  # made by the dead process
    with Client(service_url) as client:
        records = list(client.jobs.list(labels=setup.label))
        assert [r.id for r in records] == [job_id]
        job = client.jobs.wait(job_id, timeout=120, poll_interval=0.2)
    assert job.status == JobStatus.succeeded and job.attempts == 1


def test_sdk_submit_whose_answer_is_lost_makes_one_job(lossy: Setup, service_url: str) -> None:
    with Client(lossy.proxy.url, max_retries=3) as client:
        job = client.jobs.create(
            model=lossy.model, dataset=lossy.dataset, measures=["trace"], labels=lossy.label
        )
    _one_record(lossy, service_url, job.id)


def test_cli_submit_whose_answer_is_lost_makes_one_job(
    lossy: Setup, service_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["measure", lossy.model, "--data", lossy.dataset, "--measure", "trace"]
    args += ["--label", f"lost-answer={lossy.label['lost-answer']}"]
    assert main([*args, "--url", lossy.proxy.url, "--no-wait", "--json"]) == 0
    job_id = json.loads(capsys.readouterr().out)["id"]
    _one_record(lossy, service_url, job_id)
