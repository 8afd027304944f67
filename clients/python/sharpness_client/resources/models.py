"""`client.models`: upload a model (path, save_pretrained folder, bytes, file or live
nn.Module) or register one by reference (a URI the workers read), read, delete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sharpness_client._convert import export_module, zip_pretrained_folder
from sharpness_client._files import FileInput
from sharpness_client._http import Request
from sharpness_client.resources._base import (
    AsyncUploads,
    Awaiting,
    Out,
    Shared,
    Uploads,
    upload_request,
)
from sharpness_client.types import ModelInfo


@contextmanager
def _source(file: FileInput, filename: str | None) -> Iterator[tuple[FileInput, str | None]]:
    """A save_pretrained folder travels as a zip of its config.json and safetensors, written
    to a temporary file (streamed, and reread on a retry) that is removed afterwards."""
    if not (isinstance(file, (str, os.PathLike)) and Path(file).expanduser().is_dir()):
        yield file, filename
        return
    folder = Path(file).expanduser()
    fd, tmp = tempfile.mkstemp(prefix="sharpness-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as out:
            zip_pretrained_folder(folder, out)
        yield tmp, filename or f"{folder.resolve().name}.zip"
    finally:
        os.unlink(tmp)


def register_request(path: str, uri: str, fields: dict[str, Any]) -> Request:
    """POST a model reference as JSON with the fields that are not None. The service makes one
    model of one reference (the same reference again: the same id, 200), so a retry after a
    lost answer registers nothing twice."""
    body = {"uri": uri, **{k: v for k, v in fields.items() if v is not None}}
    return Request("POST", path, json=body, repeatable=True)


@contextmanager
def _saved_pretrained(model: Any) -> Iterator[Path]:
    """A live transformers model written by its own save_pretrained (safetensors)."""
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"{type(model).__name__} has no save_pretrained: not a transformers model")
    with tempfile.TemporaryDirectory(prefix="sharpness-hf-") as tmp:
        model.save_pretrained(tmp)
        yield Path(tmp)


@contextmanager
def _pretrained_source(model: Any) -> Iterator[tuple[FileInput, str | None]]:
    """A live transformers model as the zip of its save_pretrained folder."""
    with _saved_pretrained(model) as folder:
        with _source(folder, f"{type(model).__name__}.zip") as source:
            yield source


class _ModelMethods(Shared[Out]):
    """Models' and AsyncModels' uploads. What they write to temporary files lives until the
    upload is sent (for AsyncModels, until it is awaited)."""

    path = "/v1/models"

    def upload(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        architecture: str | None = None,
        config: dict[str, Any] | None = None,
        head: str | None = None,
    ) -> Out:
        """Upload a .pt2 (torch.export), TorchScript or safetensors file (the last with an
        `architecture` from the built-in zoo and its `config`), or a Hugging Face model as the
        folder its save_pretrained wrote (`head` chooses the head when config.json's
        architectures do not name one). Idempotent by content."""
        fields = {"architecture": architecture, "config": config, "head": head}
        return self._send_within(
            _source(file, filename), lambda s: upload_request(self.path, *s, fields)
        )

    def register(
        self,
        uri: str,
        *,
        architecture: str | None = None,
        config: dict[str, Any] | None = None,
        head: str | None = None,
    ) -> Out:
        """Register a model by reference instead of uploading it: `uri` is file:///... under
        the service's data root (or http(s) where the service allows it) naming a model file,
        a sharded checkpoint's model.safetensors.index.json, or a save_pretrained folder
        (config.json with model.safetensors or its shards). The workers read it when a job
        runs; jobs name it by the returned id as any upload."""
        fields = {"architecture": architecture, "config": config, "head": head}
        return self._send(register_request(self.path, uri, fields))

    def from_module(self, module: Any, example_inputs: Any, *, filename: str = "model.pt2") -> Out:
        """Export a live nn.Module (eval mode, dynamic batch; see export_module for token ids,
        several inputs and dict outputs) and upload it."""
        return self.upload(export_module(module, example_inputs), filename=filename)

    def from_pretrained(self, model: Any, *, head: str | None = None) -> Out:
        """Upload a live transformers model as its save_pretrained folder (no export step)."""
        return self._send_within(
            _pretrained_source(model), lambda s: upload_request(self.path, *s, {"head": head})
        )


class Models(_ModelMethods[ModelInfo], Uploads[ModelInfo]):
    record = ModelInfo


class AsyncModels(_ModelMethods[Awaiting[ModelInfo]], AsyncUploads[ModelInfo]):
    record = ModelInfo
