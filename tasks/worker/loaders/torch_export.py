"""torch.export archives (.pt2): torch.export.load under TORCH_FORCE_WEIGHTS_ONLY_LOAD=1, after
the upload's check of the archive, which refuses members torch would unpickle with plain
`pickle` (opaque objects) or the TorchScript unpickler (custom objects), which the flag does not
cover.

A program whose outputs are a Hugging Face ModelOutput names that class in its output spec;
torch.export.load rebuilds it only once transformers has registered it, so the transformers
modules the archive names are imported first (library modules, never code from the upload).
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from tasks.artifacts import formats
from tasks.worker import safe_torch
from tasks.worker.errors import STOPS, LoadError, first_line
from tasks.worker.loaders.archive_check import precheck
from tasks.worker.loaders.model import LoadedModel

# where transformers defines ModelOutput classes: its modeling_outputs and the models' modules
#: a pytree node type in a serialized treespec ("type": "transformers.…Output", JSON inside
#: JSON, so the quotes may be escaped); module names in stack-trace metadata do not count.
_OUTPUT_TYPE = re.compile(
    r"type\\*\"\s*:\s*\\*\""
    r"(transformers\.(?:modeling_outputs|models\.[a-z0-9_]+\.modeling_[a-z0-9_]+))"
    r"\.[A-Z][A-Za-z0-9_]*\b"
)


def import_output_types(path: str | os.PathLike[str]) -> list[str]:
    """Import the transformers modules whose classes a torch.export archive names (a
    ModelOutput in its output spec is stored by class name, and torch.export.load can rebuild
    it only once transformers has registered it). Only transformers' modeling_outputs and
    models.*.modeling_* modules are imported: library code, never a module the upload brings.
    Returns the names imported."""
    try:
        with zipfile.ZipFile(path) as zf:
            text = " ".join(
                zf.read(n).decode("utf-8", "replace")
                for n in zf.namelist()
                if "/models/" in f"/{n}" and n.endswith(".json")
            )
    except (zipfile.BadZipFile, OSError):
        return []
    modules = sorted({m.group(1) for m in _OUTPUT_TYPE.finditer(text)})
    imported = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        imported.append(name)
    return imported


def _export_input_shape(ep: Any) -> str | None:
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            if val is not None and hasattr(val, "shape"):
                return "(" + ", ".join(str(d) for d in val.shape) + ")"
    return None


def load_torch_export(path: Path, name: str, meta: dict[str, Any]) -> LoadedModel:
    """The exported program's module, read weights-only after the archive's check."""
    if os.environ.get(safe_torch.FLAG) != "1":
        raise RuntimeError(f"{safe_torch.FLAG} is not set; refusing to read a torch.export file")
    precheck(path, name, formats.BY_NAME[formats.TORCH_EXPORT])
    import_output_types(path)  # a Hugging Face ModelOutput in the outputs: its library type
    try:
        with path.open("rb") as fh:  # a file object: blobs are named by hash, not *.pt2
            ep = torch.export.load(fh)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met a Python object
        why = re.search(r"WeightsUnpickler error: ([^.]*)", str(e))
        raise LoadError(
            "Unsafe model archive",
            f"{name}: a pickled member holds Python objects, not only tensors, and was "
            f"refused unread ({why.group(1) if why else 'weights-only load failed'})",
        ) from e
    except STOPS:
        raise
    except Exception as e:
        raise LoadError(
            "Unreadable model archive",
            f"{name}: torch.export.load could not read the archive ({type(e).__name__}: "
            f"{first_line(e)}){_output_type_hint(path)}",
        ) from e
    return LoadedModel(ep.module(), formats.TORCH_EXPORT, _export_input_shape(ep))


def _output_type_hint(path: Path) -> str:
    """Why an archive that passed the safety check does not load, when its outputs are the
    reason: torch.export.load rebuilds a program's output structure only from types registered
    for serialization, and Hugging Face's ModelOutput classes are not."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".json") and info.file_size < 64 << 20:
                    text = zf.read(info).decode("utf-8", "replace")
                    found = re.search(r"transformers\.modeling_outputs\.\w+", text)
                    if found:
                        return (
                            f"; the model returns {found.group(0)}, which torch.export cannot "
                            "load back: export it with return_dict=False (model.config."
                            "return_dict = False) so it returns a tuple, or upload the "
                            "save_pretrained files (config.json + model.safetensors) instead"
                        )
    except (OSError, zipfile.BadZipFile):
        pass
    return ""
