"""`client.models`: upload a model (path, save_pretrained folder, bytes, file or live
nn.Module), read, delete."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sharpness_client._convert import export_module, zip_pretrained_folder
from sharpness_client._files import FileInput, FileSource
from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client.types import ModelInfo


def upload_request(
    file: FileInput,
    filename: str | None = None,
    architecture: str | None = None,
    config: dict[str, Any] | None = None,
    head: str | None = None,
) -> Request:
    fields: dict[str, str] = {}
    if architecture is not None:
        fields["architecture"] = architecture
    if config is not None:
        fields["config"] = json.dumps(config)
    if head is not None:
        fields["head"] = head
    return Request("POST", "/v1/models", file=FileSource.of(file, filename), data=fields or None)


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


@contextmanager
def _saved_pretrained(model: Any) -> Iterator[Path]:
    """A live transformers model written by its own save_pretrained (safetensors)."""
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"{type(model).__name__} has no save_pretrained: not a transformers model")
    with tempfile.TemporaryDirectory(prefix="sharpness-hf-") as tmp:
        model.save_pretrained(tmp)
        yield Path(tmp)


def _get(id: str) -> Request:
    return Request("GET", f"/v1/models/{id}")


def _delete(id: str) -> Request:
    return Request("DELETE", f"/v1/models/{id}")


class Models:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def upload(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        architecture: str | None = None,
        config: dict[str, Any] | None = None,
        head: str | None = None,
    ) -> ModelInfo:
        """Upload a .pt2 (torch.export), TorchScript or safetensors file (the last with an
        `architecture` from the built-in zoo and its `config`), or a Hugging Face model as the
        folder its save_pretrained wrote (`head` chooses the head when config.json's
        architectures do not name one). Idempotent by content."""
        with _source(file, filename) as (source, name):
            req = upload_request(source, name, architecture, config, head)
            return ModelInfo.model_validate(self._http.send(req).json())

    def from_module(self, module: Any, example_inputs: Any, *, filename: str = "model.pt2"):
        """Export a live nn.Module (eval mode, dynamic batch; see export_module for token ids,
        several inputs and dict outputs) and upload it."""
        return self.upload(export_module(module, example_inputs), filename=filename)

    def from_pretrained(self, model: Any, *, head: str | None = None) -> ModelInfo:
        """Upload a live transformers model as its save_pretrained folder (no export step)."""
        with _saved_pretrained(model) as folder:
            return self.upload(folder, filename=f"{type(model).__name__}.zip", head=head)

    def get(self, id: str) -> ModelInfo:
        return ModelInfo.model_validate(self._http.send(_get(id)).json())

    def delete(self, id: str) -> None:
        self._http.send(_delete(id))


class AsyncModels:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def upload(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        architecture: str | None = None,
        config: dict[str, Any] | None = None,
        head: str | None = None,
    ) -> ModelInfo:
        with _source(file, filename) as (source, name):
            req = upload_request(source, name, architecture, config, head)
            return ModelInfo.model_validate((await self._http.send(req)).json())

    async def from_module(self, module: Any, example_inputs: Any, *, filename: str = "model.pt2"):
        return await self.upload(export_module(module, example_inputs), filename=filename)

    async def from_pretrained(self, model: Any, *, head: str | None = None) -> ModelInfo:
        with _saved_pretrained(model) as folder:
            return await self.upload(folder, filename=f"{type(model).__name__}.zip", head=head)

    async def get(self, id: str) -> ModelInfo:
        return ModelInfo.model_validate((await self._http.send(_get(id))).json())

    async def delete(self, id: str) -> None:
        await self._http.send(_delete(id))
