"""Model uploads: each accepted format, idempotency, and every refusal with a clear problem."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tasks.settings import Settings
from tests.api import files
from tests.api.checks import assert_problem


def _blob_files(settings: Settings, kind: str = "models") -> list[Path]:
    d = settings.blob_dir / kind
    return sorted(d.iterdir()) if d.exists() else []


def test_upload_torch_export(client: TestClient, pt2: bytes, settings: Settings) -> None:
    r = client.post("/v1/models", files={"file": ("net.pt2", pt2)})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == "torch_export"
    assert body["size_bytes"] == len(pt2)
    assert body["id"] == body["sha256"] and len(body["id"]) == 64
    assert body["filename"] == "net.pt2"
    stored = json.loads((settings.blob_dir / "models" / f"{body['id']}.json").read_text())
    assert stored["format"] == "torch_export" and stored["kind"] == "model"
    blob = settings.blob_dir / "models" / body["id"]
    assert blob.read_bytes() == pt2 and stat.S_IMODE(blob.stat().st_mode) == 0o644
    assert "architecture" not in body  # archives carry their own code
    assert client.get(f"/v1/models/{body['id']}").json() == body


def test_upload_torchscript(client: TestClient) -> None:
    r = client.post("/v1/models", files={"file": ("net.pt", files.torchscript_bytes())})
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "torchscript"


def test_upload_safetensors_with_architecture(client: TestClient, settings: Settings) -> None:
    data = files.safetensors_model_bytes()
    form = {"architecture": "mlp", "config": json.dumps({"sizes": [4, 8, 3]})}
    r = client.post("/v1/models", files={"file": ("w.safetensors", data)}, data=form)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == "safetensors"
    assert body["architecture"] == "mlp" and body["config"] == {"sizes": [4, 8, 3]}
    assert body["tensors"] == 4 and body["parameters"] == 4 * 8 + 8 + 8 * 3 + 3
    stored = json.loads((settings.blob_dir / "models" / f"{body['id']}.json").read_text())
    assert stored["architecture"] == "mlp" and stored["config"] == {"sizes": [4, 8, 3]}


def test_safetensors_without_architecture_is_422(client: TestClient, settings: Settings) -> None:
    r = client.post(
        "/v1/models", files={"file": ("w.safetensors", files.safetensors_model_bytes())}
    )
    body = assert_problem(r, 422, "architecture")
    assert body["errors"][0]["field"] == "architecture"
    assert _blob_files(settings) == []


def test_safetensors_config_must_be_object(client: TestClient) -> None:
    data = files.safetensors_model_bytes()
    r = client.post(
        "/v1/models",
        files={"file": ("w.safetensors", data)},
        data={"architecture": "mlp", "config": "[1, 2]"},
    )
    assert_problem(r, 422, "config")


def test_same_weights_other_architecture_conflict(client: TestClient) -> None:
    data = files.safetensors_model_bytes()
    first = client.post(
        "/v1/models", files={"file": ("w.safetensors", data)}, data={"architecture": "mlp"}
    )
    assert first.status_code == 201
    again = client.post(
        "/v1/models", files={"file": ("w.safetensors", data)}, data={"architecture": "mlp"}
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = client.post(
        "/v1/models", files={"file": ("w.safetensors", data)}, data={"architecture": "cnn"}
    )
    assert_problem(other, 409, "'mlp'")


def test_reupload_is_idempotent(client: TestClient, pt2: bytes, settings: Settings) -> None:
    first = client.post("/v1/models", files={"file": ("a.pt2", pt2)})
    second = client.post("/v1/models", files={"file": ("b.pt2", pt2)})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json() == second.json()  # the stored record, first filename included
    assert len(_blob_files(settings)) == 2  # the bytes and their metadata, once


def test_architecture_refused_for_archives(client: TestClient, pt2: bytes) -> None:
    r = client.post("/v1/models", files={"file": ("a.pt2", pt2)}, data={"architecture": "mlp"})
    assert_problem(r, 422, "architecture", "safetensors")


@pytest.mark.parametrize(
    ("make", "status", "needles"),
    [
        (files.torch_save_module_bytes, 415, ["torch.save of a module or state_dict"]),
        (files.state_dict_bytes, 415, ["torch.save of a module or state_dict"]),
        (files.raw_pickle_bytes, 415, ["pickle", "torch.export.export"]),
        (lambda: b"", 422, ["empty"]),
        (lambda: b"hello, this is not a model at all", 415, ["not a torch.export archive"]),
        (lambda: files.npz_bytes(), 415, ["/v1/datasets"]),
    ],
    ids=["torch-save-module", "state-dict", "raw-pickle", "empty", "garbage", "npz"],
)
def test_refused_formats(
    client: TestClient, settings: Settings, make, status: int, needles: list[str]
) -> None:
    r = client.post("/v1/models", files={"file": ("bad.pt", make())})
    body = assert_problem(r, status, "'bad.pt'", *needles)
    if status == 415 and "pickle" in needles:
        assert "torch.export.save" in body["detail"]
    assert _blob_files(settings) == []


def test_torch_save_message_says_how_to_export(client: TestClient) -> None:
    r = client.post("/v1/models", files={"file": ("sd.pt", files.state_dict_bytes())})
    detail = r.json()["detail"]
    for hint in ("torch.export.export(model.eval()", "dynamic_shapes", "torch.export.save"):
        assert hint in detail


def test_corrupt_zip(client: TestClient, pt2: bytes, settings: Settings) -> None:
    data = bytearray(pt2)
    data[200:260] = bytes(60)  # damage a member's bytes; the directory stays readable
    r = client.post("/v1/models", files={"file": ("broken.pt2", bytes(data))})
    assert_problem(r, 422, "'broken.pt2'", "CRC")
    assert _blob_files(settings) == []


def test_truncated_archive(client: TestClient, pt2: bytes, settings: Settings) -> None:
    r = client.post("/v1/models", files={"file": ("half.pt2", pt2[: len(pt2) // 2])})
    assert_problem(r, 422, "'half.pt2'", "truncated")
    assert _blob_files(settings) == []


def test_truncated_safetensors(client: TestClient) -> None:
    data = files.safetensors_model_bytes()
    r = client.post(
        "/v1/models", files={"file": ("w.safetensors", data[:-10])}, data={"architecture": "m"}
    )
    assert_problem(r, 422, "'w.safetensors'", "truncated")


def test_truncated_multipart_body(client: TestClient, pt2: bytes, settings: Settings) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.pt2"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + pt2[:1000]  # the connection ends mid-file, no closing boundary
    r = client.post(
        "/v1/models",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_problem(r, 400, "truncated")
    assert _blob_files(settings) == []


def test_oversize_upload_413_stores_nothing(client: TestClient, settings: Settings) -> None:
    settings.max_upload_bytes = 4096
    payload = files.torchscript_bytes()
    assert len(payload) > 4096
    r = client.post("/v1/models", files={"file": ("big.pt", payload)})
    assert_problem(r, 413, "4096", "'big.pt'")
    assert _blob_files(settings) == []  # no blob, no metadata, no staging file


def test_oversize_without_content_length(client: TestClient, settings: Settings) -> None:
    """A chunked body (no Content-Length) is cut off by the streaming cap itself."""
    settings.max_upload_bytes = 4096
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big"\r\n\r\n'
    ).encode()

    def chunks():
        yield head
        for _ in range(10):
            yield b"\x00" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/v1/models",
        content=chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_problem(r, 413)
    assert _blob_files(settings) == []


def test_missing_file_field(client: TestClient) -> None:
    r = client.post("/v1/models", files={"upload": ("m.pt2", b"x")})
    body = assert_problem(r, 422, "upload")
    assert body["errors"][0]["field"] == "upload"
    r = client.post("/v1/models", data={"architecture": "mlp"}, files={})
    assert r.status_code in (415, 422)


def test_not_multipart_is_415(client: TestClient) -> None:
    r = client.post("/v1/models", content=b"raw", headers={"Content-Type": "application/zip"})
    assert_problem(r, 415, "multipart/form-data")
    # JSON registers a model by reference (tests/api/test_model_uris.py): not JSON is a 422
    r = client.post("/v1/models", content=b"raw", headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_get_and_delete(client: TestClient, model_id: str) -> None:
    assert client.get(f"/v1/models/{model_id}").status_code == 200
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert_problem(client.get(f"/v1/models/{model_id}"), 404, model_id)
    assert_problem(client.delete(f"/v1/models/{model_id}"), 404, model_id)


def test_bad_id_is_422(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/models/not-a-sha"), 422, "path.id")
    assert body["errors"][0]["field"] == "path.id"


@pytest.mark.parametrize("variant", ["tampered_weight", "tampered_opaque"])
def test_tampered_pt2_refused_at_upload(
    client: TestClient, pt2: bytes, settings: Settings, tmp_path: Path, variant: str
) -> None:
    from tests import artifacts

    good = tmp_path / "good.pt2"
    good.write_bytes(pt2)
    marker = tmp_path / "payload-ran"
    bad = getattr(artifacts, variant)(good, tmp_path / "bad.pt2", marker)
    r = client.post("/v1/models", files={"file": ("bad.pt2", bad.read_bytes())})
    assert_problem(r, 415, "'bad.pt2'", "pickle")
    assert _blob_files(settings) == []
    assert not marker.exists()
