"""TorchScript archives: torch.jit.load(map_location="cpu"), TorchScript's own restricted
unpickler, after the upload's check of the archive (its pickles and code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tasks.artifacts import formats
from tasks.worker.errors import STOPS, LoadError
from tasks.worker.loaders.archive_check import precheck
from tasks.worker.loaders.model import HOW_TO_EXPORT, LoadedModel


def load_torchscript(path: Path, name: str, meta: dict[str, Any]) -> LoadedModel:
    """The scripted module, read after the archive's check."""
    precheck(path, name, formats.BY_NAME[formats.TORCHSCRIPT])
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except STOPS:
        raise
    except Exception as e:
        raise LoadError(
            "Unreadable model archive",
            f"{name}: not a TorchScript archive ({type(e).__name__}). {HOW_TO_EXPORT}",
        ) from e
    return LoadedModel(module, formats.TORCHSCRIPT)
