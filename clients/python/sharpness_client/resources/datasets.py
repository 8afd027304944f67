"""`client.datasets`: upload an .npz/.safetensors (path, bytes, file) or arrays, read, delete."""

from __future__ import annotations

from typing import Any

from sharpness_client._convert import arrays_to_npz
from sharpness_client._files import FileInput
from sharpness_client.resources._base import AsyncUploads, Uploads
from sharpness_client.types import DatasetInfo

InputsKey = str | list[str] | dict[str, str]


class Datasets(Uploads[DatasetInfo]):
    path = "/v1/datasets"
    record = DatasetInfo

    def upload(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        inputs_key: InputsKey | None = None,
        targets_key: str | None = None,
    ) -> DatasetInfo:
        """Upload an .npz or .safetensors holding `inputs` and `targets` (or the named
        arrays; names left None are recognised by the service: inputs/targets, x/y, ...; a list
        or a mapping of input names travels as JSON). Idempotent by content: the same bytes
        give the same id."""
        return self._upload(file, filename, inputs_key=inputs_key, targets_key=targets_key)

    def from_arrays(
        self, inputs: Any, targets: Any, *, filename: str = "dataset.npz"
    ) -> DatasetInfo:
        """Upload numpy arrays or torch tensors (packed as an .npz in memory)."""
        return self.upload(arrays_to_npz(inputs, targets), filename=filename)


class AsyncDatasets(AsyncUploads[DatasetInfo]):
    path = "/v1/datasets"
    record = DatasetInfo

    async def upload(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        inputs_key: InputsKey | None = None,
        targets_key: str | None = None,
    ) -> DatasetInfo:
        return await self._upload(file, filename, inputs_key=inputs_key, targets_key=targets_key)

    async def from_arrays(
        self, inputs: Any, targets: Any, *, filename: str = "dataset.npz"
    ) -> DatasetInfo:
        return await self.upload(arrays_to_npz(inputs, targets), filename=filename)
