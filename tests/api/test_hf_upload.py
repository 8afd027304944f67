"""Hugging Face checkpoints through the real gateway (zip of the save_pretrained folder, or
model.safetensors with config.json in the 'config' field), then loaded by the worker's loader
from the stored blob with outputs identical to the saved model; refusals name field and fix.
Also: torch.export programs with a fixed batch size are refused at upload with the fix."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from tasks.settings import Settings
from tasks.worker.loaders import load_model
from tests import hf_checkpoints as H
from tests.api import files
from tests.api.checks import assert_problem

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.save(H.bert_seq(seed=11), tmp_path_factory.mktemp("hf") / "bert")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.save(H.gpt2_lm(seed=12), tmp_path_factory.mktemp("hf") / "gpt2")


def _stored(settings: Settings, body: dict) -> tuple[Path, dict]:
    d = settings.blob_dir / "models"
    return d / body["id"], json.loads((d / f"{body['id']}.json").read_text())


def _blob_files(settings: Settings) -> list[Path]:
    d = settings.blob_dir / "models"
    return sorted(d.iterdir()) if d.exists() else []


def test_zip_upload_is_stored_and_loads_identically(
    client: TestClient, settings: Settings, bert_folder: Path
) -> None:
    data = H.zip_folder(bert_folder, inside="my-bert/")
    r = client.post("/v1/models", files={"file": ("my-bert.zip", data)})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == "huggingface" and body["head"] == "sequence_classification"
    assert body["config"]["model_type"] == "bert"
    model = H.bert_seq(seed=11)
    assert body["parameters"] == sum(p.numel() for p in model.parameters())
    assert client.get(f"/v1/models/{body['id']}").json() == body
    again = client.post("/v1/models", files={"file": ("my-bert.zip", data)})
    assert again.status_code == 200 and again.json() == body

    path, meta = _stored(settings, body)
    loaded = load_model(path, meta)
    ids, mask = H.token_batch()
    with torch.no_grad():
        got = loaded.module(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(got, model(input_ids=ids, attention_mask=mask).logits)


def test_safetensors_with_config_field(
    client: TestClient, settings: Settings, gpt2_folder: Path
) -> None:
    weights = (gpt2_folder / "model.safetensors").read_bytes()
    config = (gpt2_folder / "config.json").read_text()
    r = client.post(
        "/v1/models", files={"file": ("model.safetensors", weights)}, data={"config": config}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == "huggingface" and body["head"] == "causal_lm"
    path, meta = _stored(settings, body)
    loaded = load_model(path, meta)
    model = H.gpt2_lm(seed=12)
    ids, _ = H.token_batch(3, 7)
    with torch.no_grad():
        assert torch.equal(
            loaded.module(input_ids=ids).logits, model(input_ids=ids, use_cache=False).logits
        )
    # the same weights under another config are another model: refused, not overwritten
    other = json.dumps(json.loads(config) | {"layer_norm_epsilon": 1e-3})
    r = client.post(
        "/v1/models", files={"file": ("model.safetensors", weights)}, data={"config": other}
    )
    assert_problem(r, 409, body["id"], "config")


def test_declared_head(client: TestClient, tmp_path: Path) -> None:
    folder = H.save(H.build("BertModel", H.bert_config(), seed=1), tmp_path / "base")
    data = H.zip_folder(folder)
    r = client.post("/v1/models", files={"file": ("base.zip", data)})
    body = assert_problem(r, 422, "head", "BertModel", "masked_lm")
    assert body["errors"][0]["field"] == "head"
    r = client.post("/v1/models", files={"file": ("base.zip", data)}, data={"head": "regression"})
    assert_problem(r, 422, "head", "'regression'", "sequence_classification")
    r = client.post("/v1/models", files={"file": ("base.zip", data)}, data={"head": "masked_lm"})
    assert r.status_code == 201 and r.json()["head"] == "masked_lm", r.text
    r = client.post("/v1/models", files={"file": ("base.zip", data)}, data={"head": "causal_lm"})
    assert_problem(r, 409, "head 'masked_lm'")


def _edited(folder: Path, tmp: Path, **changes) -> Path:
    out = tmp / "edited"
    out.mkdir()
    for f in folder.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    config = json.loads((out / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    ("changes", "extra", "status", "needles"),
    [
        ({"auto_map": {"AutoModel": "m.M"}}, {}, 415, ["auto_map", "never run", "torch.export"]),
        ({"model_type": None}, {}, 422, ["model_type", "save_pretrained"]),
        ({}, {"pytorch_model.bin": b"\x80\x04."}, 415, ["pytorch_model.bin", "safetensors only"]),
        ({}, {"modeling_evil.py": b"import os"}, 415, ["modeling_evil.py", "never run"]),
    ],
    ids=["auto-map", "no-model-type", "pickled-weights", "code"],
)
def test_refused_checkpoints(
    client: TestClient,
    settings: Settings,
    bert_folder: Path,
    tmp_path: Path,
    changes: dict,
    extra: dict,
    status: int,
    needles: list[str],
) -> None:
    folder = _edited(bert_folder, tmp_path, **changes)
    r = client.post("/v1/models", files={"file": ("ckpt.zip", H.zip_folder(folder, extra=extra))})
    assert_problem(r, status, "'ckpt.zip'", *needles)
    assert _blob_files(settings) == []


def test_pickled_weights_only(client: TestClient, bert_folder: Path, tmp_path: Path) -> None:
    folder = _edited(bert_folder, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    r = client.post("/v1/models", files={"file": ("ckpt.zip", H.zip_folder(folder))})
    assert_problem(r, 415, "pytorch_model.bin", "safetensors only", "save_pretrained")


def test_truncated_weights_in_zip(client: TestClient, bert_folder: Path, tmp_path: Path) -> None:
    folder = _edited(bert_folder, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    r = client.post("/v1/models", files={"file": ("ckpt.zip", H.zip_folder(folder))})
    assert_problem(r, 422, "model.safetensors", "truncated")


def test_config_field_refusals(client: TestClient, bert_folder: Path) -> None:
    weights = (bert_folder / "model.safetensors").read_bytes()
    config = json.loads((bert_folder / "config.json").read_text())
    evil = json.dumps(config | {"auto_map": {"AutoModel": "m.M"}})
    r = client.post("/v1/models", files={"file": ("w.safetensors", weights)}, data={"config": evil})
    assert_problem(r, 415, "config", "auto_map")
    r = client.post(
        "/v1/models",
        files={"file": ("w.safetensors", weights)},
        data={"config": json.dumps(config), "head": "causal_lm", "architecture": "mlp"},
    )
    assert_problem(r, 422, "head", "Hugging Face")  # with an architecture it is zoo weights
    r = client.post(
        "/v1/models",
        files={"file": ("ckpt.zip", H.zip_folder(bert_folder))},
        data={"config": json.dumps(config)},
    )
    assert_problem(r, 422, "config", "holds config.json")


def test_head_refused_for_other_formats(client: TestClient, pt2: bytes) -> None:
    r = client.post("/v1/models", files={"file": ("a.pt2", pt2)}, data={"head": "causal_lm"})
    assert_problem(r, 422, "head", "Hugging Face")


# ------------------------------------------------------------------- torch.export batch size
def _pt2(dynamic: bool) -> bytes:
    model = files.mlp().eval()
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(model, (torch.randn(5, 4),), dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def test_static_batch_program_is_refused_with_the_fix(
    client: TestClient, settings: Settings
) -> None:
    r = client.post("/v1/models", files={"file": ("static.pt2", _pt2(dynamic=False))})
    assert_problem(
        r, 422, "'static.pt2'", "fixed batch size", "(batch 5)", "dynamic_shapes", "Dim('batch')"
    )
    assert _blob_files(settings) == []
    r = client.post("/v1/models", files={"file": ("dynamic.pt2", _pt2(dynamic=True))})
    assert r.status_code == 201, r.text


def test_pickle_refusal_leads_with_torch_export(client: TestClient) -> None:
    r = client.post("/v1/models", files={"file": ("m.pkl", files.raw_pickle_bytes())})
    detail = assert_problem(r, 415, "torch.export.export(model.eval()", "Dim('batch')")["detail"]
    assert "torch.jit.script" not in detail
    assert "save_pretrained" in detail
