"""Models registered by reference (POST /v1/models with a JSON {"uri": ...}): what the gateway
accepts, and what it refuses with a problem naming `uri`."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.tenants.registry import digest
from tasks.settings import Settings
from tests import model_refs
from tests.api import files

INDEX = model_refs.INDEX


@pytest.fixture
def folder(sharded_gpt2: Path, data_root: Path) -> Path:
    """A copy of the sharded GPT-2 folder under the data root, for a test to change."""
    return Path(shutil.copytree(sharded_gpt2, data_root / "gpt2"))


def register(client: TestClient, uri: str, **fields: object):
    return client.post("/v1/models", json={"uri": uri, **fields})


def refused(client: TestClient, uri: str, status: int, slug: str, needle: str, **fields):
    r = register(client, uri, **fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"].endswith(f":{slug}"), body
    assert body["errors"][0]["field"] == "uri", body
    assert needle in body["detail"], body["detail"]
    return body


def test_a_sharded_folder_is_registered_once(client: TestClient, folder: Path) -> None:
    uri = folder.as_uri() + "/"
    r = register(client, uri)
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["source"] == "uri" and model["uri"] == uri and model["layout"] == "folder"
    assert model["format"] == "huggingface" and model["head"] == "causal_lm"
    assert model["config"]["model_type"] == "gpt2"
    sizes = sum(f.stat().st_size for f in folder.iterdir() if f.name != "generation_config.json")
    assert model["referenced_bytes"] == sizes
    assert model["size_bytes"] < 1024  # the reference is stored, not the weights
    assert model["parameters"] > 10_000 and model["tensors"] > 10

    again = register(client, uri)
    assert again.status_code == 200 and again.json()["id"] == model["id"]
    shown = client.get(f"/v1/models/{model['id']}").json()
    assert shown["uri"] == uri and shown["source"] == "uri"
    listed = client.get("/v1/models").json()["items"]
    assert [m["id"] for m in listed] == [model["id"]]
    # an upload reads as one
    up = client.post("/v1/models", files={"file": ("model.pt2", files.pt2_bytes(folder.parent))})
    assert up.status_code == 201 and up.json()["source"] == "upload" and "uri" not in up.json()


def test_a_job_names_a_registered_model_by_id(
    client: TestClient, folder: Path, dataset_id: str
) -> None:
    model_id = register(client, folder.as_uri()).json()["id"]
    spec = {"model": model_id, "dataset": {"id": dataset_id}, "measures": [{"name": "trace"}]}
    assert client.post("/v1/jobs", json=spec).status_code == 202


def test_sharded_weights_of_a_built_in_architecture(client: TestClient, data_root: Path) -> None:
    index = model_refs.sharded_mlp(data_root / "mlp")
    r = register(client, index.as_uri(), architecture="mlp", config=model_refs.MLP_CONFIG)
    assert r.status_code == 201, r.text
    model = r.json()
    assert (model["format"], model["layout"], model["architecture"]) == (
        "safetensors",
        "sharded",
        "mlp",
    )
    assert model["parameters"] == 4 * 8 + 8 + 8 * 3 + 3
    no_arch = register(client, index.as_uri())
    assert no_arch.status_code == 422 and no_arch.json()["errors"][0]["field"] == "architecture"


def test_one_model_file(client: TestClient, data_root: Path) -> None:
    (data_root / "model.pt2").write_bytes(files.pt2_bytes(data_root))
    r = register(client, (data_root / "model.pt2").as_uri())
    assert r.status_code == 201, r.text
    assert (r.json()["format"], r.json()["layout"]) == ("torch_export", "file")
    (data_root / "model.pt").write_bytes(files.torch_save_module_bytes())
    refused(client, (data_root / "model.pt").as_uri(), 415, "torch-save", "torch.save")


def test_dot_dot_and_outside_the_data_root(
    client: TestClient, folder: Path, data_root: Path, tmp_path: Path
) -> None:
    refused(client, f"file://{folder}/../../etc/", 422, "uri-rejected", "'..' segment")
    refused(client, f"file://{data_root}/gpt2/%2e%2e/%2e%2e/x/", 422, "uri-rejected", "'..'")
    outside = Path(shutil.copytree(folder, tmp_path / "outside"))
    (data_root / "link").symlink_to(outside)
    refused(client, (data_root / "link").as_uri(), 422, "uri-rejected", "outside the data root")
    refused(client, (data_root / "nope").as_uri(), 422, "uri-rejected", "no such file")


def test_a_shard_symlinked_out_of_the_folder(
    client: TestClient, folder: Path, data_root: Path
) -> None:
    shard = sorted(json.loads((folder / INDEX).read_text())["weight_map"].values())[0]
    elsewhere = data_root / "elsewhere"
    elsewhere.mkdir()
    shutil.move(folder / shard, elsewhere / shard)
    (folder / shard).symlink_to(elsewhere / shard)
    refused(client, folder.as_uri(), 422, "uri-rejected", "outside the checkpoint's folder")


def test_missing_shard_and_index_pointing_outside(client: TestClient, folder: Path) -> None:
    original = (folder / INDEX).read_text()
    index = json.loads(original)
    for bad in ("../outside.safetensors", "/etc/passwd", "sub/x.safetensors"):
        index["weight_map"][next(iter(index["weight_map"]))] = bad
        (folder / INDEX).write_text(json.dumps(index))
        refused(client, folder.as_uri(), 422, "corrupt", "not a plain file name")
    (folder / INDEX).write_text(original)
    shard = sorted(set(json.loads(original)["weight_map"].values()))[-1]
    (folder / shard).unlink()
    refused(client, folder.as_uri(), 422, "missing-shard", shard)


def test_index_must_agree_with_its_shards(client: TestClient, folder: Path) -> None:
    index = json.loads((folder / INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = next(k for k, v in index["weight_map"].items() if v == shards[0])
    index["weight_map"][name] = shards[1]
    (folder / INDEX).write_text(json.dumps(index))
    refused(client, folder.as_uri(), 422, "corrupt", f"tensor {name!r}")
    del index["weight_map"][name]
    (folder / INDEX).write_text(json.dumps(index))
    refused(client, folder.as_uri(), 422, "corrupt", "does not map")


def _overlap(path: Path) -> None:
    """Point a shard's second tensor at the first one's bytes (same size, same offsets)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    names = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"]
    )
    first, second = header[names[0]], header[names[1]]
    second.update(dtype=first["dtype"], shape=first["shape"], data_offsets=first["data_offsets"])
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def test_overlapping_offsets(client: TestClient, folder: Path) -> None:
    index = json.loads((folder / INDEX).read_text())
    counts: dict[str, int] = {}
    for shard in index["weight_map"].values():
        counts[shard] = counts.get(shard, 0) + 1
    shard = max(counts, key=lambda s: counts[s])
    _overlap(folder / shard)
    body = refused(client, folder.as_uri(), 422, "corrupt", "overlaps")
    assert shard in body["detail"]


def test_pickled_weights_and_remote_code(client: TestClient, folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"x": "y.Z"}}))
    refused(client, folder.as_uri(), 415, "remote-code", "auto_map")
    (folder / "config.json").write_text(json.dumps(config))
    for f in folder.glob("*.safetensors*"):
        f.unlink()
    (folder / "pytorch_model.bin").write_bytes(files.state_dict_bytes())
    refused(client, folder.as_uri(), 415, "pickle", "pytorch_model.bin")
    (folder / "config.json").unlink()
    refused(client, folder.as_uri(), 422, "missing-config", "config.json")


def test_names_that_are_no_model(client: TestClient, data_root: Path) -> None:
    (data_root / "notes.txt").write_text("hello")
    refused(client, (data_root / "notes.txt").as_uri(), 422, "uri-rejected", "names no model")
    refused(client, "ftp://example.org/m.pt2", 422, "uri-rejected", "scheme 'ftp'")


def test_the_body_is_checked(client: TestClient, folder: Path) -> None:
    r = client.post("/v1/models", json={"uri": folder.as_uri(), "colour": "red"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "colour"
    r = client.post("/v1/models", json={})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "uri"
    r = client.post("/v1/models", content=b"uri=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = register(client, folder.as_uri(), head="regression")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "head"
    r = register(client, folder.as_uri(), config={"model_type": "gpt2"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config"


class TestHttp:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"uri_schemes": ["file", "http", "https"]})

    def test_loopback_and_private_literals_are_refused(self, client: TestClient) -> None:
        for uri in (
            "http://127.0.0.1:8000/gpt2/",
            "http://localhost/m.pt2",
            "http://[::1]/gpt2/model.safetensors.index.json",
            "http://169.254.169.254/latest/",
            "https://10.0.0.7/m.safetensors",
        ):
            refused(client, uri, 422, "uri-rejected", "refused")

    def test_a_remote_folder_is_checked_by_its_form(self, client: TestClient) -> None:
        r = register(client, "https://models.example.org/gpt2/", head="causal_lm")
        assert r.status_code == 201, r.text
        model = r.json()
        assert (model["format"], model["layout"], model["head"]) == (
            "huggingface",
            "folder",
            "causal_lm",
        )
        assert "referenced_bytes" not in model
        r = register(client, "https://models.example.org/w/model.safetensors.index.json")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "architecture"
        refused(client, "https://u:p@models.example.org/m.pt2", 422, "uri-rejected", "credentials")


class TestTenants:
    """A reference is its tenant's model as an upload is; it counts its stored reference (a
    few hundred bytes) against max_storage_bytes, not the files it names."""

    @pytest.fixture
    def settings(self, settings: Settings, tmp_path: Path) -> Settings:
        tenants = [
            {"name": "a", "key_sha256": digest("key-a"), "role": "user", "max_storage_bytes": 2000},
            {"name": "b", "key_sha256": digest("key-b"), "role": "user"},
        ]
        path = tmp_path / "tenants.json"
        path.write_text(json.dumps({"tenants": tenants}))
        return settings.model_copy(update={"tenants_file": path})

    def test_owned_and_counted_as_a_reference(self, client: TestClient, folder: Path) -> None:
        a, b = ({"Authorization": f"Bearer key-{t}"} for t in "ab")
        r = client.post("/v1/models", json={"uri": folder.as_uri()}, headers=a)
        assert r.status_code == 201, r.text  # 2000 bytes of quota, a ~130 kB checkpoint
        model = r.json()
        assert model["referenced_bytes"] > 2000 > model["size_bytes"]
        assert client.get(f"/v1/models/{model['id']}", headers=b).status_code == 404
        assert client.get("/v1/models", headers=b).json()["items"] == []
        r = client.post("/v1/models", json={"uri": folder.as_uri()}, headers=b)
        assert r.status_code == 201 and r.json()["id"] == model["id"]
        assert client.delete(f"/v1/models/{model['id']}", headers=a).status_code == 204
        assert client.get(f"/v1/models/{model['id']}", headers=b).status_code == 200
