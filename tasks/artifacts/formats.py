"""The model formats the service accepts, each declared once: its recorded name, the file
names it usually comes as, how a zip archive of it is recognised, and the safety check that
the gateway runs at upload and the worker runs again before torch opens the file.

Torch-free, so the gateway (service/blobs/formats/models.py, service/blobs/models.py) and the
worker (tasks/worker/loaders/) share it. A new format is declared here; the gateway's
inspector and the worker's loader for it are registered under its name.

The name is what a model's blob record holds in `format` and what the API returns. The
dataset formats (npz, safetensors) are named here too; datasets need no archive check beyond
the zip members' (tasks.artifacts.checks.check_members).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from tasks.artifacts import hf_checkpoint
from tasks.artifacts.checks import check_pt2, check_torchscript

ModelFormatName = Literal["torch_export", "torchscript", "safetensors", "huggingface"]

TORCH_EXPORT: Final = "torch_export"
TORCHSCRIPT: Final = "torchscript"
SAFETENSORS: Final = "safetensors"
HUGGINGFACE: Final = "huggingface"

#: what a torch.export archive's `archive_format` member holds
PT2_ARCHIVE_FORMAT: Final = "pt2"

#: a zip archive's safety check (tasks.artifacts.checks): raises UnsafeArchive
ArchiveCheck = Callable[[zipfile.ZipFile, str], None]


def relative_names(names: list[str]) -> set[str]:
    """Member names below the archive's top folder (torch archives put all under one)."""
    return {n.split("/", 1)[1] for n in names if "/" in n}


def top_folder(names: list[str]) -> str | None:
    """The one folder every member lies in, or None."""
    roots = {n.split("/", 1)[0] for n in names if "/" in n}
    return roots.pop() if len(roots) == 1 else None


def _is_pt2(names: list[str]) -> bool:
    return "archive_format" in relative_names(names) and top_folder(names) is not None


def _is_torchscript(names: list[str]) -> bool:
    inner = relative_names(names)
    has_code = any(n.startswith("code/") for n in inner)
    return has_code and "data.pkl" in inner and "constants.pkl" in inner


@dataclass(frozen=True)
class ModelFormat:
    """One accepted model format."""

    name: ModelFormatName
    #: how messages name it
    title: str
    #: the file names it usually comes as (its content decides, never the name)
    suffixes: tuple[str, ...]
    #: recognises a zip archive of this format by its member names (None: not a zip)
    is_archive: Callable[[list[str]], bool] | None = None
    #: the safety check run at upload and again by the worker (None: no archive to check)
    check: ArchiveCheck | None = None


#: every accepted format, in the order zip archives are recognised
MODEL_FORMATS: Final[tuple[ModelFormat, ...]] = (
    ModelFormat(
        HUGGINGFACE,
        "a Hugging Face checkpoint (a zip of the save_pretrained folder)",
        (".zip", ".safetensors"),
        is_archive=hf_checkpoint.is_checkpoint_zip,
    ),
    ModelFormat(
        TORCH_EXPORT,
        "a torch.export archive (.pt2)",
        (".pt2",),
        is_archive=_is_pt2,
        check=check_pt2,
    ),
    ModelFormat(
        TORCHSCRIPT,
        "a TorchScript archive",
        (".pt", ".pth"),
        is_archive=_is_torchscript,
        check=check_torchscript,
    ),
    ModelFormat(SAFETENSORS, "safetensors weights", (".safetensors",)),
)

BY_NAME: Final[dict[str, ModelFormat]] = {f.name: f for f in MODEL_FORMATS}
NAMES: Final[tuple[str, ...]] = tuple(BY_NAME)


#: the dataset formats (arrays by name): .npz archives of .npy arrays, and safetensors files
DatasetFormatName = Literal["npz", "safetensors"]
NPZ: Final = "npz"
DATASET_FORMATS: Final[tuple[DatasetFormatName, ...]] = (NPZ, SAFETENSORS)


def model_format(name: object) -> ModelFormat | None:
    """The format recorded as `name`, or None for a name the service does not know."""
    return BY_NAME.get(name) if isinstance(name, str) else None


def archive_format(names: list[str]) -> ModelFormat | None:
    """The format a zip archive with these member names is, or None."""
    for fmt in MODEL_FORMATS:
        if fmt.is_archive is not None and fmt.is_archive(names):
            return fmt
    return None
