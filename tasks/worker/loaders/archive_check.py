"""The upload's safety check of a model archive, run again before torch reads the file."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tasks.artifacts.checks import UnsafeArchive
from tasks.artifacts.formats import ModelFormat
from tasks.worker.errors import LoadError


def precheck(path: Path, name: str, fmt: ModelFormat) -> None:
    """Refuse what the gateway refuses at upload (the format's check, tasks.artifacts.checks),
    again before torch reads the file: members torch.export.load would unpickle outside
    weights-only, pickles naming more than tensors and TorchScript classes, injected code,
    unsafe zip members."""
    if fmt.check is None:
        return
    try:
        with zipfile.ZipFile(path) as zf:
            fmt.check(zf, name)
    except UnsafeArchive as e:
        raise LoadError(e.title, e.detail) from e
    except zipfile.BadZipFile as e:
        raise LoadError("Corrupt model archive", f"{name}: not a valid zip archive ({e})") from e
