"""Dataset uploads: .npz and .safetensors, arrays recorded, bad data refused by name."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tasks.settings import Settings
from tests.api import files
from tests.api.checks import assert_problem


def _stored(settings: Settings) -> list[str]:
    d = settings.blob_dir / "datasets"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.mark.parametrize("compressed", [False, True])
def test_upload_npz(client: TestClient, settings: Settings, compressed: bool) -> None:
    data = files.npz_bytes(n=10, compressed=compressed)
    r = client.post("/v1/datasets", files={"file": ("d.npz", data)})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == "npz" and body["num_examples"] == 10
    assert body["arrays"] == {
        "inputs": {"dtype": "float32", "shape": [10, 4]},
        "targets": {"dtype": "int64", "shape": [10]},
    }
    meta = json.loads((settings.blob_dir / "datasets" / f"{body['id']}.json").read_text())
    assert meta["arrays"] == body["arrays"] and meta["format"] == "npz"
    assert meta["inputs_key"] == "inputs" and meta["targets_key"] == "targets"
    assert client.get(f"/v1/datasets/{body['id']}").json() == body


def test_upload_safetensors(client: TestClient) -> None:
    r = client.post(
        "/v1/datasets", files={"file": ("d.safetensors", files.safetensors_dataset_bytes(7))}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == "safetensors" and body["num_examples"] == 7
    assert body["arrays"]["inputs"] == {"dtype": "float32", "shape": [7, 4]}


def test_reupload_same_id(client: TestClient) -> None:
    data = files.npz_bytes()
    a = client.post("/v1/datasets", files={"file": ("a.npz", data)})
    b = client.post("/v1/datasets", files={"file": ("b.npz", data)})
    assert (a.status_code, b.status_code) == (201, 200)
    assert a.json()["id"] == b.json()["id"]


def test_common_names_recognised_and_stored(client: TestClient, model_id: str) -> None:
    rng = np.random.default_rng(0)
    data = files.npz_bytes(x=rng.standard_normal((5, 2)), y=rng.integers(0, 2, 5))
    r = client.post("/v1/datasets", files={"file": ("d.npz", data)})
    assert r.status_code == 201, r.text
    assert (r.json()["inputs_key"], r.json()["targets_key"]) == ("x", "y")
    # a job naming no arrays uses the stored names; one naming absent arrays is refused
    job = {"model": model_id, "dataset": {"id": r.json()["id"]}, "measures": [{"name": "trace"}]}
    assert client.post("/v1/jobs", json=job).status_code == 202
    job["dataset"]["inputs_key"] = "inputs"
    assert_problem(client.post("/v1/jobs", json=job), 422, "dataset.inputs_key", "arrays: x, y")


def test_ambiguous_names_list_the_arrays(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    data = files.npz_bytes(a=rng.standard_normal((5, 2)), b=rng.standard_normal((5, 1)))
    r = client.post("/v1/datasets", files={"file": ("d.npz", data)})
    body = assert_problem(r, 422, "arrays: a, b", "inputs_key")
    assert body["errors"][0]["field"] == "inputs_key"
    two = files.npz_bytes(
        x=np.zeros((3, 2)), y=np.zeros(3), inputs=np.zeros((3, 2)), targets=np.zeros(3)
    )
    assert_problem(client.post("/v1/datasets", files={"file": ("t.npz", two)}), 422, "several")
    r = client.post(
        "/v1/datasets",
        files={"file": ("d.npz", data)},
        data={"inputs_key": "a", "targets_key": "b"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["inputs_key"] == "a"
    # the same bytes with other names: 200, and the names given now are stored
    r = client.post(
        "/v1/datasets",
        files={"file": ("d.npz", data)},
        data={"inputs_key": "b", "targets_key": "a"},
    )
    assert r.status_code == 200 and r.json()["inputs_key"] == "b"
    assert client.get(f"/v1/datasets/{r.json()['id']}").json()["targets_key"] == "a"


def test_several_inputs_by_keyword(client: TestClient) -> None:
    ids = np.zeros((4, 6), np.int64)
    data = files.npz_bytes(input_ids=ids, attention_mask=np.ones_like(ids), labels=ids)
    r = client.post("/v1/datasets", files={"file": ("lm.npz", data)})
    assert r.status_code == 201, r.text
    assert r.json()["inputs_key"] == {"input_ids": "input_ids", "attention_mask": "attention_mask"}
    r = client.post(
        "/v1/datasets", files={"file": ("lm.npz", data)}, data={"inputs_key": '["input_ids"]'}
    )
    assert r.status_code == 200 and r.json()["inputs_key"] == ["input_ids"]
    bad = client.post("/v1/datasets", files={"file": ("lm.npz", data)}, data={"inputs_key": "[1"})
    assert_problem(bad, 422, "inputs_key", "JSON")
    short = files.npz_bytes(input_ids=ids, attention_mask=np.ones((3, 6)), labels=ids)
    assert_problem(
        client.post("/v1/datasets", files={"file": ("s.npz", short)}),
        422,
        "'attention_mask' 3",
    )


def test_object_array_refused(client: TestClient, settings: Settings) -> None:
    data = files.npz_bytes(
        inputs=np.array([{"a": 1}, None], dtype=object), targets=np.array([0, 1])
    )
    r = client.post("/v1/datasets", files={"file": ("evil.npz", data)})
    assert_problem(r, 415, "'evil.npz'", "'inputs'", "pickle")
    assert _stored(settings) == []


def test_length_mismatch_names_arrays(client: TestClient) -> None:
    data = files.npz_bytes(inputs=np.zeros((5, 3), np.float32), targets=np.zeros(4, np.int64))
    assert_problem(
        client.post("/v1/datasets", files={"file": ("d.npz", data)}), 422, "'inputs'", "'targets'"
    )


def test_missing_targets(client: TestClient) -> None:
    data = files.npz_bytes(inputs=np.zeros((5, 3), np.float32))
    assert_problem(client.post("/v1/datasets", files={"file": ("d.npz", data)}), 422, "'targets'")


def test_truncated_npy_member(client: TestClient) -> None:
    """A well-formed zip whose .npy member holds fewer bytes than its header promises."""
    npy = io.BytesIO()
    np.save(npy, np.zeros((10, 4), np.float32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inputs.npy", npy.getvalue()[:-16])
        zf.writestr("targets.npy", npy.getvalue())
    r = client.post("/v1/datasets", files={"file": ("cut.npz", buf.getvalue())})
    assert_problem(r, 422, "'cut.npz'", "'inputs'")


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (b"", 422, "empty"),
        (b"\x80\x04K\x01.", 415, "pickle"),
        (b"plain text, not arrays", 415, "neither .npz nor .safetensors"),
    ],
    ids=["empty", "pickle", "garbage"],
)
def test_refused(client: TestClient, data: bytes, status: int, needle: str) -> None:
    r = client.post("/v1/datasets", files={"file": ("x.npz", data)})
    assert_problem(r, status, "'x.npz'", needle)


def test_truncated_npz(client: TestClient, settings: Settings) -> None:
    data = files.npz_bytes()
    r = client.post("/v1/datasets", files={"file": ("half.npz", data[: len(data) // 2])})
    assert_problem(r, 422, "'half.npz'", "truncated")
    assert _stored(settings) == []


def test_get_delete_and_unknown(client: TestClient, dataset_id: str) -> None:
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert_problem(client.get(f"/v1/datasets/{dataset_id}"), 404, dataset_id)
    assert_problem(client.get("/v1/datasets/XYZ"), 422, "path.id")


def test_hugging_face_names_are_recognised(client: TestClient) -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 9, (4, 6))
    cases = [
        (dict(input_ids=ids, attention_mask=np.ones_like(ids), label=ids[:, 0]), "label"),
        (dict(pixel_values=rng.standard_normal((4, 3, 8, 8)), label=ids[:, 0]), "label"),
        (dict(pixel_values=rng.standard_normal((4, 3, 8, 8)), labels=ids[:, 0]), "labels"),
    ]
    for arrays, targets in cases:
        r = client.post("/v1/datasets", files={"file": ("d.npz", files.npz_bytes(**arrays))})
        assert r.status_code == 201, r.text
        assert r.json()["targets_key"] == targets
    # seq2seq: the decoder's inputs go by keyword beside input_ids, never dropped
    data = files.npz_bytes(
        input_ids=ids,
        attention_mask=np.ones_like(ids),
        decoder_input_ids=ids,
        decoder_attention_mask=np.ones_like(ids),
        labels=ids,
    )
    r = client.post("/v1/datasets", files={"file": ("s2s.npz", data)})
    assert r.status_code == 201, r.text
    assert r.json()["inputs_key"] == {
        k: k for k in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
    }


def test_ambiguous_and_unusual_names_give_the_fix_for_every_client(client: TestClient) -> None:
    ids = np.zeros((4, 6), np.int64)
    both = files.npz_bytes(input_ids=ids, labels=ids, label=ids[:, 0])
    body = assert_problem(
        client.post("/v1/datasets", files={"file": ("b.npz", both)}),
        422,
        "arrays: input_ids, label, labels",
        "-F inputs_key=input_ids -F targets_key=labels",
        "--inputs-key input_ids --targets-key labels",
        "inputs_key='input_ids'",
    )
    assert body["errors"][0]["field"] == "inputs_key"
    odd = files.npz_bytes(feats=np.zeros((4, 2)), labels=np.zeros(4, np.int64))
    body = assert_problem(
        client.post("/v1/datasets", files={"file": ("o.npz", odd)}),
        422,
        "found the targets 'labels'",
        "--inputs-key feats --targets-key labels",
    )
    assert "name the array 'data'" not in body["detail"]


def test_stored_names_are_shown_and_said_when_applied(client: TestClient, model_id: str) -> None:
    data = files.npz_bytes(a=np.zeros((5, 2)), b=np.zeros(5, np.int64))
    r = client.post(
        "/v1/datasets",
        files={"file": ("d.npz", data)},
        data={"inputs_key": "a", "targets_key": "b"},
    )
    assert r.status_code == 201, r.text
    shown = client.get(f"/v1/datasets/{r.json()['id']}").json()
    assert (shown["inputs_key"], shown["targets_key"]) == ("a", "b")
    # the same bytes later with no names: the stored ones apply
    again = client.post("/v1/datasets", files={"file": ("d.npz", data)})
    assert again.status_code == 200 and again.json()["inputs_key"] == "a"
    job = {
        "model": model_id,
        "dataset": {"id": r.json()["id"], "targets_key": "a"},
        "measures": [{"name": "trace"}],
    }
    assert_problem(
        client.post("/v1/jobs", json=job), 422, "names stored with the upload were applied"
    )


def test_byte_different_file_of_a_named_upload_says_names_are_per_content(
    client: TestClient,
) -> None:
    first = files.npz_bytes(a=np.zeros((5, 2)), b=np.zeros(5, np.int64))
    named = {"inputs_key": "a", "targets_key": "b"}
    r = client.post("/v1/datasets", files={"file": ("mine.npz", first)}, data=named)
    assert r.status_code == 201, r.text
    other = files.npz_bytes(a=np.ones((5, 2)), b=np.zeros(5, np.int64))
    body = assert_problem(
        client.post("/v1/datasets", files={"file": ("mine.npz", other)}),
        422,
        f"Dataset {r.json()['id']} of the same file name is stored with",
        "kept per content",
    )
    assert "kept per content" in body["errors"][0]["message"]
