"""A checkpoint's id is its content's: the same save_pretrained folder zipped with or without a
top folder (or by another tool) is one model; a folder sent as a file is told to be zipped."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from tasks.settings import Settings
from tasks.worker.loaders import load_model
from tests import hf_checkpoints as H
from tests.api.checks import assert_problem

pytest.importorskip("transformers")


def _stored_zip(settings: Settings, model_id: str) -> list[str]:
    with zipfile.ZipFile(settings.blob_dir / "models" / model_id) as zf:
        return zf.namelist()


def test_same_checkpoint_with_and_without_top_folder_is_one_model(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    model = H.bert_seq(seed=21)
    folder = H.save(model, tmp_path / "bert")
    flat = H.zip_folder(folder)
    nested = H.zip_folder(folder, inside="bert/")
    # another tool: stored (not deflated), directory entries, litter, other timestamps
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("my-model/", b"")
        for f in sorted(folder.iterdir(), reverse=True):
            info = zipfile.ZipInfo(f"my-model/{f.name}", date_time=(2024, 5, 6, 7, 8, 10))
            zf.writestr(info, f.read_bytes())
        zf.writestr("__MACOSX/my-model/._config.json", b"\x00\x05")
    other_tool = buf.getvalue()
    assert len({flat, nested, other_tool}) == 3
    ids = set()
    for i, data in enumerate((flat, nested, other_tool)):
        r = client.post("/v1/models", files={"file": (f"m{i}.zip", data)})
        assert r.status_code == (201 if i == 0 else 200), r.text
        ids.add(r.json()["id"])
    (model_id,) = ids
    assert _stored_zip(settings, model_id) == sorted(f.name for f in folder.iterdir())
    loaded = load_model(settings.blob_dir / "models" / model_id, {"format": "huggingface"})
    ids_, mask = H.token_batch()
    with torch.no_grad():
        assert torch.equal(
            loaded.module(input_ids=ids_, attention_mask=mask).logits,
            model(input_ids=ids_, attention_mask=mask).logits,
        )


@pytest.mark.parametrize("kind", ["models", "datasets"])
def test_an_empty_file_says_to_zip_the_folder(client: TestClient, kind: str) -> None:
    r = client.post(f"/v1/{kind}", files={"file": ("bert", b"")})
    assert_problem(r, 422, "the file is empty", "zip the folder", "SDK, which zips it")
