"""`client.models`: upload a model (path, bytes, file or live nn.Module), read, delete."""

from __future__ import annotations

import json
from typing import Any

from sharpness_client._convert import export_module
from sharpness_client._files import FileInput, FileSource
from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client.types import ModelInfo


def upload_request(
    file: FileInput,
    filename: str | None = None,
    architecture: str | None = None,
    config: dict[str, Any] | None = None,
) -> Request:
    fields: dict[str, str] = {}
    if architecture is not None:
        fields["architecture"] = architecture
    if config is not None:
        fields["config"] = json.dumps(config)
    return Request("POST", "/v1/models", file=FileSource.of(file, filename), data=fields or None)


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
    ) -> ModelInfo:
        """Upload a .pt2 (torch.export), TorchScript or safetensors file (the last with an
        `architecture` from the built-in zoo and its `config`). Idempotent by content."""
        req = upload_request(file, filename, architecture, config)
        return ModelInfo.model_validate(self._http.send(req).json())

    def from_module(self, module: Any, example_inputs: Any, *, filename: str = "model.pt2"):
        """Export a live nn.Module (eval mode, dynamic batch) and upload it."""
        return self.upload(export_module(module, example_inputs), filename=filename)

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
    ) -> ModelInfo:
        req = upload_request(file, filename, architecture, config)
        return ModelInfo.model_validate((await self._http.send(req)).json())

    async def from_module(self, module: Any, example_inputs: Any, *, filename: str = "model.pt2"):
        return await self.upload(export_module(module, example_inputs), filename=filename)

    async def get(self, id: str) -> ModelInfo:
        return ModelInfo.model_validate((await self._http.send(_get(id))).json())

    async def delete(self, id: str) -> None:
        await self._http.send(_delete(id))
