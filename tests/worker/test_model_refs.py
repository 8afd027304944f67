"""The worker's side of models registered by reference: found (file:) or fetched (http) and
checked again when a job loads them, then read by the format's own loader."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tasks.settings import Settings
from tasks.worker.errors import LoadError
from tasks.worker.loaders import load_model
from tests import hf_checkpoints as hf
from tests import http_folder, model_refs

INDEX = model_refs.INDEX


@pytest.fixture
def root(tmp_path: Path, sharded_gpt2: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(sharded_gpt2, root / "gpt2")
    return root


def _settings(root: Path | None, tmp_path: Path, **kw) -> Settings:
    return Settings(data_root=root, data_dir=tmp_path / "var", **kw)


def _meta(uri: str, layout: str, **kw) -> dict:
    return {"format": "huggingface", "source": "uri", "uri": uri, "layout": layout, **kw}


def _same_model(module: torch.nn.Module) -> None:
    """Every weight of the saved model, exactly, and its logits."""
    saved = hf.gpt2_lm()
    loaded = dict(module.named_parameters())
    assert loaded.keys() == dict(saved.named_parameters()).keys()
    assert all(torch.equal(loaded[n], p) for n, p in saved.named_parameters())
    ids, mask = hf.token_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            module(input_ids=ids, attention_mask=mask).logits,
            saved(input_ids=ids, attention_mask=mask).logits,
        )


def test_a_sharded_folder_loads_as_the_model_that_was_saved(root: Path, tmp_path: Path) -> None:
    loaded = load_model(
        tmp_path / "blob", _meta((root / "gpt2").as_uri(), "folder"), _settings(root, tmp_path)
    )
    assert loaded.format == "huggingface"
    _same_model(loaded.module)


def test_bare_shards_with_a_config_and_a_built_in_architecture(root: Path, tmp_path: Path) -> None:
    folder = root / "gpt2"
    config = hf.config_of(folder)
    (folder / "config.json").unlink()
    meta = _meta((folder / INDEX).as_uri(), "sharded", config=config, head="causal_lm")
    loaded = load_model(tmp_path / "blob", meta, _settings(root, tmp_path))
    _same_model(loaded.module)

    index = model_refs.sharded_mlp(root / "mlp")
    zoo = {"format": "safetensors", "architecture": "mlp", "config": model_refs.MLP_CONFIG}
    loaded = load_model(
        tmp_path / "blob",
        {**zoo, "source": "uri", "uri": index.as_uri(), "layout": "sharded"},
        _settings(root, tmp_path),
    )
    state = model_refs.mlp_state()
    assert all(torch.equal(p, state[n]) for n, p in loaded.module.state_dict().items())


def test_what_changed_since_registration_is_refused(root: Path, tmp_path: Path) -> None:
    folder = root / "gpt2"
    s = _settings(root, tmp_path)
    meta = _meta(folder.as_uri(), "folder")
    index = json.loads((folder / INDEX).read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / shard, outside)
    (folder / shard).symlink_to(outside)
    with pytest.raises(LoadError, match="outside the checkpoint's folder"):
        load_model(tmp_path / "blob", meta, s)
    (folder / shard).unlink()
    with pytest.raises(LoadError, match="is not in the folder"):
        load_model(tmp_path / "blob", meta, s)
    shutil.move(outside, folder / shard)
    load_model(tmp_path / "blob", meta, s)
    with pytest.raises(LoadError, match="registered as a file checkpoint"):
        load_model(tmp_path / "blob", {**meta, "layout": "file"}, s)
    with pytest.raises(LoadError, match="SHARPNESS_DATA_ROOT is not set"):
        load_model(tmp_path / "blob", meta, _settings(None, tmp_path))


@pytest.fixture
def served(sharded_gpt2: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain http server on loopback serving a copy of the checkpoint folder."""
    top = tmp_path / "served"
    shutil.copytree(sharded_gpt2, top / "gpt2")
    with http_folder.serve(top) as url:
        yield url, top


def test_an_http_folder_is_fetched_and_loaded(served: tuple[str, Path], tmp_path: Path) -> None:
    base, top = served
    allowed = _settings(None, tmp_path, uri_schemes=["http"], uri_allow_hosts=["127.0.0.1"])
    loaded = load_model(tmp_path / "blob", _meta(f"{base}/gpt2/", "folder"), allowed)
    _same_model(loaded.module)
    assert [p.name for p in (tmp_path / "var" / "cache").iterdir()] == []  # nothing left

    refused = _settings(None, tmp_path, uri_schemes=["http"])
    with pytest.raises(LoadError, match="loopback"):
        load_model(tmp_path / "blob", _meta(f"{base}/gpt2/", "folder"), refused)
    total = sum(f.stat().st_size for f in (top / "gpt2").iterdir())
    capped = allowed.model_copy(update={"max_uri_bytes": total // 2})
    with pytest.raises(LoadError, match="SHARPNESS_MAX_URI_BYTES"):
        load_model(tmp_path / "blob", _meta(f"{base}/gpt2/", "folder"), capped)

    index = json.loads((top / "gpt2" / INDEX).read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = "../secret.safetensors"
    (top / "gpt2" / INDEX).write_text(json.dumps(index))
    with pytest.raises(LoadError, match="not a plain file name"):
        load_model(tmp_path / "blob", _meta(f"{base}/gpt2/", "folder"), allowed)
