"""Shapes of the upload responses: a stored model's or dataset's record.

Kept apart from the routers so the OpenAPI document, and the SDK built from it, change only
when a response shape does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class BlobInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="The sha256 of the bytes; re-uploading them returns this id.")
    sha256: str
    size_bytes: int
    created_at: datetime = Field(description="When these bytes were first stored.")
    filename: str | None = Field(default=None, description="Client filename of the first upload.")


class ModelInfo(BlobInfo):
    format: Literal["torch_export", "torchscript", "safetensors", "huggingface"]
    architecture: str | None = Field(
        default=None, description="safetensors only: the built-in architecture to load into."
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="safetensors: keyword arguments for the architecture; huggingface: the "
        "checkpoint's config.json.",
    )
    head: str | None = Field(
        default=None,
        description="huggingface only: the head transformers builds (sequence_classification, "
        "token_classification, causal_lm, masked_lm, image_classification, seq2seq_lm).",
    )
    tensors: int | None = Field(
        default=None, description="safetensors and huggingface: tensor count."
    )
    parameters: int | None = Field(
        default=None,
        description="safetensors and huggingface: element count of the stored tensors.",
    )
    source: Literal["upload", "uri"] = Field(
        default="upload",
        description="upload: the bytes were uploaded and are stored by the service; uri: "
        "registered by reference, the workers read `uri` when a job runs (the id is then the "
        "sha256 of the reference, not of the weights).",
    )
    uri: str | None = Field(default=None, description="uri only: where the workers read it.")
    layout: Literal["file", "sharded", "folder"] | None = Field(
        default=None,
        description="uri only: one model file, a sharded safetensors checkpoint (its "
        "model.safetensors.index.json) or a save_pretrained folder.",
    )
    referenced_bytes: int | None = Field(
        default=None,
        description="uri only, file: URIs: the size of the checkpoint's files at registration "
        "(not stored by the service, not counted in storage quotas).",
    )


class ModelReference(BaseModel):
    """A model registered by reference: `POST /v1/models` with this JSON body."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(
        min_length=1,
        max_length=4096,
        description="file:///path under SHARPNESS_DATA_ROOT, or http(s) where "
        "SHARPNESS_URI_SCHEMES allows it: one model file (.pt2, .pt, .safetensors, .zip), a "
        "sharded checkpoint's model.safetensors.index.json, or a save_pretrained folder "
        "(config.json and model.safetensors or its shards; an http(s) folder ends in '/').",
        examples=["file:///data/models/llama-1b/"],
    )
    architecture: str | None = Field(
        default=None, description="safetensors of a built-in architecture: its name."
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="safetensors: the architecture's keyword arguments, or a Hugging Face "
        "config.json for bare weights (a folder holds its own).",
    )
    head: str | None = Field(
        default=None,
        description="Hugging Face checkpoints: the head to build (as for uploads).",
    )


class ArrayInfo(BaseModel):
    dtype: str = Field(description="numpy-style name: float32, int64, bool, bfloat16, ...")
    shape: list[int]


class DatasetInfo(BlobInfo):
    format: Literal["npz", "safetensors"]
    arrays: dict[str, ArrayInfo]
    num_examples: int = Field(description="First dimension shared by inputs and targets.")
    inputs_key: str | list[str] | dict[str, str] = Field(
        description="The model's inputs (given or recognised at upload): one array, a list "
        "(positional) or keyword → array. Jobs that name no inputs use these."
    )
    targets_key: str = Field(description="The targets array; jobs that name none use it.")


class ModelPage(BaseModel):
    items: list[ModelInfo]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last."
    )


class DatasetPage(BaseModel):
    items: list[DatasetInfo]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last."
    )
