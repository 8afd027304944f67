"""Models by reference through the real service: a sharded GPT-2 save_pretrained folder
registered by file:// (and over http from a data server named in uri_allow_hosts) measures
exactly as the same folder uploaded; a large upload streams to disk without growing the
gateway's memory.

The stack is a gateway and a worker of their own, with a data root, on a private Redis of its
own (every database of the session's Redis is taken by another part of the suite)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file

from sharpness_client import Client
from tasks.store.local_redis import PrivateRedis
from tests import hf_checkpoints as hf
from tests import http_folder, model_refs
from tests.integration.conftest import Stack, start_stack

pytestmark = pytest.mark.integration
SCRIPT = shutil.which("sharpness", path=str(Path(sys.executable).parent)) or "sharpness"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data-root")
    model_refs.sharded_gpt2(root / "gpt2")
    rng = np.random.default_rng(0)
    ids = rng.integers(1, hf.VOCAB, (12, 10))
    labels = ids[:, 1:].copy()
    labels[:, -2:] = -100
    np.savez(root / "lm.npz", input_ids=ids[:, :-1], labels=labels)
    return root


@pytest.fixture(scope="module")
def served(data_root: Path) -> Iterator[str]:
    """A plain http data server on loopback, serving the data root."""
    with http_folder.serve(data_root) as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Stack]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis-refs"), aof=False).start()
    try:
        s = start_stack(
            server,
            0,
            tmp_path_factory.mktemp("service-refs"),
            data_root=data_root,
            uri_schemes=json.dumps(["file", "http"]),
            uri_allow_hosts=json.dumps(["127.0.0.1"]),
        )
        yield s
        s.stop()
    finally:
        server.stop()


def _lambda_max(client: Client, model_id: str, data_id: str) -> dict:
    job = client.jobs.create(model=model_id, dataset=data_id, measures=["lambda_max"])
    done = client.jobs.wait(job.id, timeout=240)
    assert done.status == "succeeded", done.model_dump_json(indent=1)
    return done.results["lambda_max"].model_dump()


def test_a_registered_folder_measures_as_the_uploaded_one(
    stack: Stack, data_root: Path, served: str, tmp_path: Path
) -> None:
    folder = data_root / "gpt2"
    (tmp_path / "gpt2.zip").write_bytes(hf.zip_folder(folder))
    with Client(stack.url) as client:
        data = client.datasets.upload(data_root / "lm.npz").id
        uploaded = client.models.upload(tmp_path / "gpt2.zip")
        registered = client.models.register(folder.as_uri())
        assert registered.source == "uri" and registered.layout == "folder"
        assert registered.head == "causal_lm" and registered.id != uploaded.id
        assert registered.parameters == uploaded.parameters
        by_upload = _lambda_max(client, uploaded.id, data)
        by_file = _lambda_max(client, registered.id, data)
        assert by_file["value"] == by_upload["value"], (by_file, by_upload)
        assert by_file["converged"]

        remote = client.models.register(f"{served}/gpt2/")
        assert remote.format == "huggingface" and remote.layout == "folder"
        assert _lambda_max(client, remote.id, data)["value"] == by_upload["value"]


def test_a_changed_folder_fails_the_job_naming_the_model(stack: Stack, data_root: Path) -> None:
    folder = Path(shutil.copytree(data_root / "gpt2", data_root / "gpt2-changed"))
    with Client(stack.url) as client:
        data = client.datasets.upload(data_root / "lm.npz").id
        model = client.models.register(folder.as_uri())
        index = json.loads((folder / model_refs.INDEX).read_text())
        (folder / sorted(set(index["weight_map"].values()))[0]).unlink()
        job = client.jobs.create(model=model.id, dataset=data, measures=["lambda_max"])
        done = client.jobs.wait(job.id, timeout=240, raise_on_failure=False)
    assert done.status == "failed"
    assert done.error is not None and "is not in the folder" in (done.error.detail or "")


def test_the_cli_registers_and_the_gateway_refuses_loopback(stack: Stack, data_root: Path):
    out = subprocess.run(
        [SCRIPT, "models", "register"]
        + [(data_root / "gpt2").as_uri(), "--url", stack.url, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["source"] == "uri"
    # the gateway's own address literal is refused unless allowed (only 127.0.0.1 is here)
    r = httpx.post(f"{stack.url}/v1/models", json={"uri": "http://[::1]:9/gpt2/"}, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "uri"


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_large_upload_streams_to_disk(stack: Stack, tmp_path: Path) -> None:
    """256 MiB of safetensors weights: the gateway's peak memory grows by far less."""
    n = 64 * 1024 * 1024
    path = tmp_path / "big.safetensors"
    save_file({"layers.0.weight": np.zeros((n // 1024, 1024), dtype=np.float32)}, str(path))
    assert stack.gateway is not None
    before = _peak_rss(stack.gateway.pid)
    with path.open("rb") as fh:
        r = httpx.post(
            f"{stack.url}/v1/models",
            files={"file": ("big.safetensors", fh)},
            data={"architecture": "mlp", "config": json.dumps({"in_features": 1024})},
            timeout=300,
        )
    assert r.status_code == 201, r.text
    assert r.json()["size_bytes"] == path.stat().st_size and r.json()["parameters"] == n
    grown = _peak_rss(stack.gateway.pid) - before
    assert grown < path.stat().st_size // 4, f"the gateway's peak RSS grew by {grown} bytes"
