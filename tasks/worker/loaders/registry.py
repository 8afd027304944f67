"""The worker's loader of each model format (tasks.artifacts.formats), and the one lookup.

Models are loaded by the format the gateway recorded when the file was uploaded, never by
running code that came with them; a format without a loader here is refused with how to
export. Every problem raises LoadError (422: the upload is at fault) with a detail that names
the file, the field or the parameter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.artifacts import formats, model_refs
from tasks.settings import Settings
from tasks.worker.errors import LoadError
from tasks.worker.loaders.huggingface import load_huggingface
from tasks.worker.loaders.model import HOW_TO_EXPORT, LoadedModel, check_finite
from tasks.worker.loaders.reference import referenced
from tasks.worker.loaders.torch_export import load_torch_export
from tasks.worker.loaders.torchscript import load_torchscript
from tasks.worker.loaders.zoo_weights import load_zoo_weights

#: (stored file, its name for messages, its blob metadata) -> the model
Loader = Callable[[Path, str, dict[str, Any]], LoadedModel]

LOADERS: dict[str, Loader] = {
    formats.TORCH_EXPORT: load_torch_export,
    formats.TORCHSCRIPT: load_torchscript,
    formats.SAFETENSORS: load_zoo_weights,
    formats.HUGGINGFACE: load_huggingface,
}


def load_model(
    path: str | os.PathLike[str], meta: dict[str, Any], settings: Settings | None = None
) -> LoadedModel:
    """Load a stored model blob by its recorded format; refuse anything else. A model
    registered by reference (its blob holds the reference) is read from its URI, checked
    again with `settings`' rules."""
    p = Path(path)
    name = meta.get("filename") or p.name
    fmt = meta.get("format")
    loader = LOADERS.get(fmt) if isinstance(fmt, str) else None
    if loader is None:
        raise LoadError("Unsupported model format", f"{name}: format {fmt!r}. {HOW_TO_EXPORT}")
    if meta.get("source") == model_refs.SOURCE:
        with referenced(meta, settings) as local:
            loaded = loader(local, name, meta)
    else:
        loaded = loader(p, name, meta)
    check_finite(loaded.module, name)
    return loaded
