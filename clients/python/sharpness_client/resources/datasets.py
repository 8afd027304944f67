"""`client.datasets`: upload an .npz/.safetensors (path, bytes, file) or arrays, read, delete."""

from __future__ import annotations

import json
from typing import Any

from sharpness_client._convert import arrays_to_npz
from sharpness_client._files import FileInput, FileSource
from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client.types import DatasetInfo

InputsKey = str | list[str] | dict[str, str]


def upload_request(
    file: FileInput,
    filename: str | None = None,
    inputs_key: InputsKey | None = None,
    targets_key: str | None = None,
) -> Request:
    """Names left None are recognised by the service (inputs/targets, x/y, ...); a list or a
    mapping of input names travels as JSON."""
    if inputs_key is not None and not isinstance(inputs_key, str):
        inputs_key = json.dumps(inputs_key)
    fields = {
        k: v for k, v in (("inputs_key", inputs_key), ("targets_key", targets_key)) if v is not None
    }
    return Request("POST", "/v1/datasets", file=FileSource.of(file, filename), data=fields or None)


def _get(id: str) -> Request:
    return Request("GET", f"/v1/datasets/{id}")


def _delete(id: str) -> Request:
    return Request("DELETE", f"/v1/datasets/{id}")


class Datasets:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def upload(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        inputs_key: InputsKey | None = None,
        targets_key: str | None = None,
    ) -> DatasetInfo:
        """Upload an .npz or .safetensors holding `inputs` and `targets` (or the named
        arrays). Idempotent by content: the same bytes give the same id."""
        req = upload_request(file, filename, inputs_key, targets_key)
        return DatasetInfo.model_validate(self._http.send(req).json())

    def from_arrays(
        self, inputs: Any, targets: Any, *, filename: str = "dataset.npz"
    ) -> DatasetInfo:
        """Upload numpy arrays or torch tensors (packed as an .npz in memory)."""
        return self.upload(arrays_to_npz(inputs, targets), filename=filename)

    def get(self, id: str) -> DatasetInfo:
        return DatasetInfo.model_validate(self._http.send(_get(id)).json())

    def delete(self, id: str) -> None:
        self._http.send(_delete(id))


class AsyncDatasets:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def upload(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        inputs_key: InputsKey | None = None,
        targets_key: str | None = None,
    ) -> DatasetInfo:
        req = upload_request(file, filename, inputs_key, targets_key)
        return DatasetInfo.model_validate((await self._http.send(req)).json())

    async def from_arrays(
        self, inputs: Any, targets: Any, *, filename: str = "dataset.npz"
    ) -> DatasetInfo:
        return await self.upload(arrays_to_npz(inputs, targets), filename=filename)

    async def get(self, id: str) -> DatasetInfo:
        return DatasetInfo.model_validate((await self._http.send(_get(id))).json())

    async def delete(self, id: str) -> None:
        await self._http.send(_delete(id))
