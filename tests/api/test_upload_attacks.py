"""Hostile uploads are refused at the door, with the status the docs promise, a problem naming
the member and the fix, and nothing stored; the worker's loader refuses the same bytes with
the same checker (tasks.artifacts.checks), and no payload ever runs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from service.guard import MAX_JSON_DEPTH
from tasks.artifacts import checks as upload_check
from tasks.contract.problem_types import uri
from tasks.settings import Settings
from tests import hostile
from tests.api import files
from tests.api.checks import assert_problem


def _stored(settings: Settings) -> list[Path]:
    """Every file under the blob directory, staging files included."""
    root = settings.blob_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _refused(
    r, status: int, slug: str, member: str, fix: str, settings: Settings, marker: Path | None
) -> dict:
    body = assert_problem(r, status, member, fix)
    assert body["type"] == uri(slug), body
    assert _stored(settings) == [], "a refused upload left a file behind"
    if marker is not None:
        assert not marker.exists(), "the payload ran"
    return body


def _worker_refuses(tmp_path: Path, data: bytes, fmt: str, member: str) -> None:
    """The worker's loader, given the same bytes as if they had been stored, refuses them by
    the same check before torch opens them."""
    from tasks.worker.loaders import LoadError, load_model

    path = tmp_path / "blob"
    path.write_bytes(data)
    with pytest.raises(LoadError) as e:
        load_model(path, {"format": fmt, "filename": "bad"})
    assert member in e.value.detail, e.value.detail


# per worker format: the upload's filename and the fix its refusal names
_ARCHIVES = {
    "torch_export": ("bad.pt2", "torch.export.save"),
    "torchscript": ("bad.pt", "torch.jit.save"),
}


def _archive_refused(
    client: TestClient, settings: Settings, tmp_path: Path, fmt: str, bad: bytes, member: str
) -> dict:
    """A hostile model archive is refused at the door and by the worker's loader, and its
    payload (which would touch tmp_path / "ran") never runs."""
    filename, fix = _ARCHIVES[fmt]
    marker = tmp_path / "ran"
    r = client.post("/v1/models", files={"file": (filename, bad)})
    body = _refused(r, 415, "unsafe-archive", member, fix, settings, marker)
    _worker_refuses(tmp_path, bad, fmt, member)
    assert not marker.exists()
    return body


@pytest.fixture
def ts() -> bytes:
    return files.torchscript_bytes()


# ------------------------------------------------------------------------------ torch.export
def test_pt2_reduce_in_sample_inputs(
    client: TestClient, pt2: bytes, settings: Settings, tmp_path: Path
) -> None:
    bad, member = hostile.pt2_reduce_in_sample_inputs(pt2, tmp_path / "ran")
    body = _archive_refused(client, settings, tmp_path, "torch_export", bad, member)
    assert ".open" in body["detail"] and "'bad.pt2'" in body["detail"]


@pytest.mark.parametrize("name", ["extra/payload.pkl", "data/weights/weight_9", "payload"])
def test_pt2_extra_pickle_member(
    client: TestClient, pt2: bytes, settings: Settings, tmp_path: Path, name: str
) -> None:
    bad, member = hostile.pt2_extra_pickle(pt2, tmp_path / "ran", name)
    _archive_refused(client, settings, tmp_path, "torch_export", bad, member)


@pytest.mark.parametrize(
    "target",
    ["torch.serialization.os.system", "_operator.call", "torch.ops.aten.__class__.mro"],
)
def test_pt2_graph_calling_outside_the_operators(
    client: TestClient, pt2: bytes, settings: Settings, tmp_path: Path, target: str
) -> None:
    bad, member = hostile.pt2_graph_calls(pt2, target, tmp_path / "ran")
    body = _archive_refused(client, settings, tmp_path, "torch_export", bad, member)
    assert repr(target) in body["detail"] and "not an operator" in body["detail"]


def test_untouched_archives_pass(client: TestClient, pt2: bytes, ts: bytes) -> None:
    assert client.post("/v1/models", files={"file": ("m.pt2", pt2)}).status_code == 201
    assert client.post("/v1/models", files={"file": ("m.pt", ts)}).status_code == 201


# ------------------------------------------------------------------------------- TorchScript
@pytest.mark.parametrize("protocol", [2, 4])
def test_torchscript_rewritten_data_pkl(
    client: TestClient, ts: bytes, settings: Settings, tmp_path: Path, protocol: int
) -> None:
    bad, member = hostile.torchscript_rewritten_data_pkl(ts, tmp_path / "ran", protocol)
    body = _archive_refused(client, settings, tmp_path, "torchscript", bad, member)
    assert "system" in body["detail"] and "safetensors" in body["detail"]


def test_torchscript_injected_code(
    client: TestClient, ts: bytes, settings: Settings, tmp_path: Path
) -> None:
    bad, member = hostile.torchscript_injected_code(ts, tmp_path / "ran")
    body = _archive_refused(client, settings, tmp_path, "torchscript", bad, member)
    assert "import" in body["detail"]
    bad, member = hostile.torchscript_reflection_code(ts)
    r = client.post("/v1/models", files={"file": ("bad.pt", bad)})
    _refused(r, 415, "unsafe-archive", member, "__subclasses__", settings, None)


def test_scripted_and_traced_models_of_every_common_layer_pass(tmp_path: Path) -> None:
    """No false alarms on real TorchScript and torch.export archives: conv, BatchNorm, LSTM,
    attention, embeddings, dropout, scripted and traced, eval and train mode."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
            self.lstm = nn.LSTM(4, 5, batch_first=True)
            self.enc = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
            self.emb, self.drop = nn.Embedding(10, 8), nn.Dropout(0.1)

        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(self.bn(self.conv(x)).flatten(2).transpose(1, 2))
            return self.drop(out).sum() + self.enc(self.emb(ids)).sum()

    args = (torch.randn(2, 1, 6, 6), torch.randint(0, 10, (2, 5)))
    for net in (Net().eval(), Net().train()):
        for scripted in (torch.jit.script(net), torch.jit.trace(net, args, check_trace=False)):
            path = tmp_path / "net.pt"
            torch.jit.save(scripted, str(path))
            with zipfile.ZipFile(path) as zf:
                upload_check.check_torchscript(zf, "net.pt")
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(Net().eval(), args), path)
    with zipfile.ZipFile(path) as zf:
        upload_check.check_pt2(zf, "net.pt2")


def test_allowed_globals_are_torchs_weights_only_ones() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    torch_allowed = set(_get_allowed_globals())
    ours = {f"{m}.{n}" for m, n in upload_check.WEIGHTS_ONLY_GLOBALS}
    assert ours <= torch_allowed, ours - torch_allowed


# ------------------------------------------------------------------------------- safetensors
@pytest.mark.parametrize(
    ("route", "fields"),
    [
        ("/v1/models", {"architecture": "mlp"}),
        ("/v1/datasets", {}),
        ("/v1/trajectories/optimizer-states", {}),
    ],
)
def test_safetensors_overlapping_offsets(
    client: TestClient, settings: Settings, route: str, fields: dict
) -> None:
    r = client.post(
        route, data=fields, files={"file": ("w.safetensors", hostile.safetensors_overlapping())}
    )
    body = _refused(r, 422, "corrupt", "'b'", "save with safetensors", settings, None)
    assert "overlaps" in body["detail"] and "'a'" in body["detail"]


@pytest.mark.parametrize(
    ("header", "data", "needle"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, 16, "belong to no"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 16, "cover 8"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8, "needs 12 bytes"),
    ],
    ids=["gap", "tail", "dtype-shape"],
)
def test_safetensors_offsets_tile_the_data(
    client: TestClient, settings: Settings, header: dict, data: int, needle: str
) -> None:
    raw = hostile.safetensors_raw(header, bytes(data))
    r = client.post("/v1/datasets", files={"file": ("d.safetensors", raw)})
    _refused(r, 422, "corrupt", needle, "", settings, None)


def test_real_safetensors_still_accepted(client: TestClient) -> None:
    r = client.post(
        "/v1/models",
        data={"architecture": "mlp"},
        files={"file": ("w.safetensors", files.safetensors_model_bytes())},
    )
    assert r.status_code == 201, r.text


# ------------------------------------------------------------------------------- zip members
@pytest.mark.parametrize(
    ("member", "needle"),
    [
        ("../escape.txt", "'..'"),
        ("model/../../escape.txt", "'..'"),
        ("/etc/escape.txt", "absolute"),
        ("C:/escape.txt", "absolute"),
        (hostile.symlink_member("model/link"), "symbolic link"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "symlink"],
)
@pytest.mark.parametrize("kind", ["pt2", "npz", "hf"])
def test_zip_members_that_escape(
    client: TestClient,
    pt2: bytes,
    settings: Settings,
    tmp_path: Path,
    member: str | zipfile.ZipInfo,
    needle: str,
    kind: str,
) -> None:
    if kind == "pt2":
        route, good = "/v1/models", pt2
    elif kind == "npz":
        route, good = "/v1/datasets", files.npz_bytes()
    else:
        config = b'{"model_type": "bert", "architectures": ["BertForMaskedLM"]}'
        route = "/v1/models"
        good = hostile.rezip(
            {"bert/config.json": config, "bert/model.safetensors": files.safetensors_model_bytes()}
        )
    bad = hostile.with_member(good, member, b"/etc/passwd")
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    r = client.post(route, files={"file": ("bad.zip", bad)})
    _refused(r, 415, "unsafe-archive", repr(name), "relative names", settings, None)
    if kind == "pt2":
        _worker_refuses(tmp_path, bad, "torch_export", repr(name))


def test_zip_duplicate_member(client: TestClient, pt2: bytes, settings: Settings) -> None:
    m = hostile.members(pt2)
    key = hostile._one(m, "_weights_config.json")
    bad = hostile.rezip([*m.items(), (key, m[key])])
    r = client.post("/v1/models", files={"file": ("bad.pt2", bad)})
    _refused(r, 422, "corrupt-zip", repr(key), "twice", settings, None)


# ------------------------------------------------------------------------------- JSON bodies
def test_deeply_nested_body_is_a_body_422(client: TestClient) -> None:
    for body in ("[" * 3000 + "]" * 3000, '{"a": ' * 3000 + "1" + "}" * 3000):
        r = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
        problem = assert_problem(r, 422, "body: ", "nested")
        assert problem["errors"][0]["field"].startswith("body")

    def chunks():  # streamed without Content-Length, one bracket at a time
        for _ in range(3000):
            yield b"["

    r = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(r, 422, "body: ")


def test_brackets_inside_strings_are_not_nesting(client: TestClient) -> None:
    """Brackets in strings, escaped quotes and backslashes are not counted: the spec reaches
    the schema check (its own 422 about the fields), not the depth refusal."""
    name = '\\"' + "[" * (MAX_JSON_DEPTH * 3) + "\\\\"
    body = '{"model": "' + name + '", "measures": []}'
    r = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "nested" not in r.json()["detail"], r.text
    nested = "[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2)
    r = client.post(
        "/v1/jobs",
        content='{"labels": ' + nested + "}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "nested" not in r.json()["detail"], r.text


# ------------------------------------------------------------------------------ Allow header
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_optimizer_states_allow_lists_only_post(client: TestClient, method: str) -> None:
    r = client.request(method, "/v1/trajectories/optimizer-states")
    body = assert_problem(r, 405, "allowed: POST")
    assert r.headers["allow"] == "POST"
    assert body["type"] == "about:blank"


# ---------------------------------------------------------------------- the pickle reader itself
@pytest.mark.parametrize(
    ("stream", "needle"),
    [
        (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93)R.", "os.system"),
        (b"\x80\x04\x8c\x02os\x940h\x00\x8c\x06system\x93.", "os.system"),  # memo get
        (b"\x80\x04\x8c\x02os\x8c\x06system0\x93.", "does not name literally"),  # POP between
        (b"\x80\x02\x82\x01)R.", "extension registry"),
        (b"ctorch\nFloatStorage\n\x80", "cannot be checked"),  # truncated
        (b"ios\nsystem\n(Vx\nt.", "os.system"),  # INST
    ],
    ids=["stack-global", "memo", "non-literal", "ext1", "truncated", "inst"],
)
def test_pickle_reader_refuses_what_it_cannot_prove(stream: bytes, needle: str) -> None:
    with pytest.raises(upload_check.UnsafeArchive) as e:
        upload_check.check_pickle(stream, upload_check.WEIGHTS_ONLY_GLOBALS, "f", "m", "fix")
    assert e.value.status == 415 and e.value.member == "m"
    assert needle in e.value.detail, e.value.detail


def test_deeply_nested_json_inside_uploads_is_a_422(client: TestClient, settings: Settings) -> None:
    """JSON that arrives inside an upload (a form field, a safetensors header) is refused as
    malformed, never a 500, whatever its depth."""
    deep = "[" * 3000 + "]" * 3000
    weights = files.safetensors_model_bytes()
    r = client.post(
        "/v1/models",
        data={"architecture": "mlp", "config": deep},
        files={"file": ("w.safetensors", weights)},
    )
    body = assert_problem(r, 422, "config")
    assert body["errors"][0]["field"] == "config"
    assert _stored(settings) == []
    header = ('{"a": ' + deep + "}").encode()
    raw = len(header).to_bytes(8, "little") + header
    r = client.post("/v1/datasets", files={"file": ("d.safetensors", raw)})
    _refused(r, 422, "corrupt", "not JSON", "", settings, None)
