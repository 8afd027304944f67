"""`client.datasets`: upload an .npz/.safetensors (path, bytes, file) or arrays, read, delete."""

from __future__ import annotations

from typing import Any

from sharpness_client._convert import arrays_to_npz
from sharpness_client._files import FileInput
from sharpness_client.resources._base import (
    AsyncUploads,
    Awaiting,
    Out,
    Shared,
    Uploads,
    upload_request,
)
from sharpness_client.types import DatasetInfo

InputsKey = str | list[str] | dict[str, str]


class _DatasetMethods(Shared[Out]):
    """Datasets' and AsyncDatasets' upload and from_arrays."""

    path = "/v1/datasets"

    def upload(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        inputs_key: InputsKey | None = None,
        targets_key: str | None = None,
    ) -> Out:
        """Upload an .npz or .safetensors holding `inputs` and `targets` (or the named
        arrays; names left None are recognised by the service: inputs/targets, x/y, ...; a list
        or a mapping of input names travels as JSON). Idempotent by content: the same bytes
        give the same id."""
        fields = {"inputs_key": inputs_key, "targets_key": targets_key}
        return self._send(upload_request(self.path, file, filename, fields))

    def from_arrays(self, inputs: Any, targets: Any, *, filename: str = "dataset.npz") -> Out:
        """Upload numpy arrays or torch tensors (packed as an .npz in memory)."""
        return self.upload(arrays_to_npz(inputs, targets), filename=filename)


class Datasets(_DatasetMethods[DatasetInfo], Uploads[DatasetInfo]):
    record = DatasetInfo


class AsyncDatasets(_DatasetMethods[Awaiting[DatasetInfo]], AsyncUploads[DatasetInfo]):
    record = DatasetInfo
