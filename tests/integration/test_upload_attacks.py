"""Each upload attack against the real service (a uvicorn gateway process and a worker, over
HTTP): refused at the door with the documented status, a problem naming the member and the
fix, nothing stored, no payload run."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tasks.contract.problem_types import uri
from tests import hostile
from tests.api import files
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def _attacks(pt2: bytes, ts: bytes, marker: Path) -> dict[str, tuple]:
    """name → (route, filename, bytes, form fields, status, slug, member or tensor, fix)."""
    sample, sample_member = hostile.pt2_reduce_in_sample_inputs(pt2, marker)
    extra, extra_member = hostile.pt2_extra_pickle(pt2, marker)
    graph, graph_member = hostile.pt2_graph_calls(pt2, "torch.serialization.os.system", marker)
    data_pkl, data_member = hostile.torchscript_rewritten_data_pkl(ts, marker, 2)
    code, code_member = hostile.torchscript_injected_code(ts, marker)
    export_fix, script_fix, zip_fix = "torch.export.save", "torch.jit.save", "relative names"
    return {
        "pt2-reduce-in-sample-inputs": (
            "models", "m.pt2", sample, {}, 415, "unsafe-archive", sample_member, export_fix
        ),
        "pt2-extra-pkl": (
            "models", "m.pt2", extra, {}, 415, "unsafe-archive", extra_member, export_fix
        ),
        "pt2-graph-os-system": (
            "models", "m.pt2", graph, {}, 415, "unsafe-archive", graph_member, export_fix
        ),
        "torchscript-data-pkl": (
            "models", "m.pt", data_pkl, {}, 415, "unsafe-archive", data_member, script_fix
        ),
        "torchscript-injected-code": (
            "models", "m.pt", code, {}, 415, "unsafe-archive", code_member, script_fix
        ),
        "safetensors-overlap": (
            "models", "w.safetensors", hostile.safetensors_overlapping(), {"architecture": "mlp"},
            422, "corrupt", "'b'", "save with safetensors",
        ),
        "zip-dotdot": (
            "datasets", "d.npz", hostile.with_member(files.npz_bytes(), "../x.npy"), {},
            415, "unsafe-archive", "'../x.npy'", zip_fix,
        ),
        "zip-absolute": (
            "models", "m.pt2", hostile.with_member(pt2, "/etc/x"), {},
            415, "unsafe-archive", "'/etc/x'", zip_fix,
        ),
        "zip-symlink": (
            "models", "m.pt2", hostile.with_member(pt2, hostile.symlink_member("model/l"), b"/"),
            {}, 415, "unsafe-archive", "'model/l'", zip_fix,
        ),
    }  # fmt: skip


NAMES = [
    "pt2-reduce-in-sample-inputs",
    "pt2-extra-pkl",
    "pt2-graph-os-system",
    "torchscript-data-pkl",
    "torchscript-injected-code",
    "safetensors-overlap",
    "zip-dotdot",
    "zip-absolute",
    "zip-symlink",
]


@pytest.fixture(scope="module")
def pt2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return files.pt2_bytes(tmp_path_factory.mktemp("pt2"))


@pytest.mark.parametrize("name", NAMES)
def test_upload_attack_refused_at_the_door(
    stack: Stack, pt2: bytes, tmp_path: Path, name: str
) -> None:
    marker = tmp_path / "payload-ran"
    route, filename, data, fields, status, slug, member, fix = _attacks(
        pt2, files.torchscript_bytes(), marker
    )[name]
    before = sorted(p for p in (stack.data_dir / "blobs").rglob("*") if p.is_file())
    r = httpx.post(
        f"{stack.url}/v1/{route}", files={"file": (filename, data)}, data=fields, timeout=60
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == uri(slug), body
    assert member in body["detail"] and fix in body["detail"], body["detail"]
    after = sorted(p for p in (stack.data_dir / "blobs").rglob("*") if p.is_file())
    assert after == before, "a refused upload left a file behind"
    assert not marker.exists()


def test_deep_body_and_allow_header(stack: Stack) -> None:
    r = httpx.post(
        f"{stack.url}/v1/jobs",
        content="[" * 3000 + "]" * 3000,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"].startswith("body")
    r = httpx.get(f"{stack.url}/v1/trajectories/optimizer-states", timeout=30)
    assert r.status_code == 405 and r.headers["allow"] == "POST", r.text
