"""What both kinds of run name as their inputs: an uploaded model's id, the dataset
(`DatasetRef`: an upload or a URI, how many examples, how to batch them) and how the model's
outputs are read (`output_key`, `class_dim`), and the dtype it is measured in (`precision`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.contract.datanames import validate_inputs_key

MODEL_ID_PATTERN = r"^[0-9a-f]{64}$"


OUTPUT_KEY = Field(
    default=None,
    max_length=64,
    description="Which output is the logits when the model returns a tuple, a dict or a "
    "Hugging Face ModelOutput: a key, or an index for a tuple. Default 'logits', else the "
    "first tensor.",
)


CLASS_DIM = Field(
    default=None,
    description="cross_entropy on sequence outputs: -1 for classes last (N, T, C), Hugging "
    "Face's layout; 1 for classes on dim 1 (N, C, T), torch's. Omitted: read from the shapes; "
    "refused when both fit.",
)

#: the dtype a run's model is measured in (tasks.engine.precision.products_dtype)
Precision = Literal["auto", "model", "float32", "float64"]

PRECISION: Any = Field(  # Any: the default is one of Precision
    default="auto",
    description="The dtype the model is measured in: its floating parameters, buffers and "
    "inputs are cast to it before any product. auto: float16 and bfloat16 models in "
    "float32 (their own rounding, about 4e-3 relative for bfloat16, would stop every "
    "estimate before it certifies anything), float32 and float64 models as they are; "
    "model: the model's own dtype, whatever it is; float32; float64 (exact products for a "
    "small model, at twice float32's memory). Every result says what was used (asked, "
    "model_dtype, products_dtype): a job measure's diagnostics.precision, a trajectory "
    "point's precision; the rounding floor that limited_by names is the products' dtype's.",
)


class DatasetRef(BaseModel):
    """Either an uploaded dataset's id or a URI; how many examples and how to batch them."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=MODEL_ID_PATTERN, description="Uploaded id.")
    uri: str | None = Field(
        default=None,
        max_length=2048,
        description="Reference instead of an upload: file:// below the configured data root, "
        "or http(s):// when enabled. .npz or .safetensors.",
    )
    max_samples: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Use only the first N examples."
    )
    batch_size: int = Field(default=256, ge=1, le=65_536)
    inputs_key: str | list[str] | dict[str, str] | None = Field(
        default=None,
        description="The model's inputs: one array name; a list of names (positional "
        'arguments, in order); or keyword → array name (for example {"input_ids": '
        '"input_ids", "attention_mask": "attention_mask"}). Omitted: the names stored '
        "with the uploaded dataset, else common names (inputs/targets, x/y, X/y, data/labels, "
        "images/labels, input_ids/labels) when exactly one pair fits.",
    )
    targets_key: str | None = Field(
        default=None,
        max_length=128,
        description="The targets array. Omitted: as for inputs_key.",
    )

    @field_validator("inputs_key")
    @classmethod
    def _inputs_key(cls, value: Any) -> Any:
        return None if value is None else validate_inputs_key(value)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetRef:
        if (self.id is None) == (self.uri is None):
            raise ValueError("give exactly one of 'id' or 'uri'")
        return self
