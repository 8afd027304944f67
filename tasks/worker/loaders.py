"""Load uploaded models and datasets without ever running code that came with them.

Models (meta["format"], set by the gateway when the file was uploaded):
    torch_export   torch.export.load, under TORCH_FORCE_WEIGHTS_ONLY_LOAD=1, after a pre-check of
                   the archive that refuses members torch would unpickle with plain `pickle`
                   (opaque objects) or the TorchScript unpickler (custom objects), which the
                   flag does not cover.
    torchscript    torch.jit.load(map_location="cpu"): TorchScript's own restricted unpickler.
    safetensors    tensors only, plus an architecture from tasks.worker.zoo and its config.
Anything else (a pickled nn.Module, a bare state_dict .pt) is refused with how to export.

Datasets are read by tasks.worker.datasets.

Every problem raises LoadError carrying an RFC 9457 status (422: the upload is at fault) and a
detail that names the file, the field or the parameter.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.artifacts.checks import UnsafeArchive, check_pt2, check_torchscript
from tasks.contract import problem_types
from tasks.worker import safe_torch, zoo

HOW_TO_EXPORT = (
    "Upload one of: a torch.export archive (ep = torch.export.export(model.eval(), (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)); torch.export.save(ep, 'model.pt2')), "
    "a TorchScript archive (torch.jit.save(torch.jit.script(model), 'model.pt')), or "
    "safetensors weights (safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) "
    "with a zoo architecture name and config."
)


class LoadError(Exception):
    """The model or data cannot be used; `status` 422 means the client's input is at fault."""

    def __init__(self, title: str, detail: str, status: int = 422, kind: str = "invalid-input"):
        super().__init__(detail)
        self.title = title
        self.detail = detail
        self.status = status
        self.kind = kind
        self.type = problem_types.uri(kind)


@dataclass
class LoadedModel:
    module: nn.Module
    format: str
    input_shape: str | None = None  # what the model expects, when the archive says it

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32


def first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


# ------------------------------------------------------------------------------------ models
def _precheck(path: Path, name: str, check=check_pt2) -> None:
    """Refuse what the gateway refuses at upload (tasks.artifacts.checks), again before torch
    reads the file: members torch.export.load would unpickle outside weights-only, pickles
    naming more than tensors and TorchScript classes, injected code, unsafe zip members."""
    try:
        with zipfile.ZipFile(path) as zf:
            check(zf, name)
    except UnsafeArchive as e:
        raise LoadError(e.title, e.detail) from e
    except zipfile.BadZipFile as e:
        raise LoadError("Corrupt model archive", f"{name}: not a valid zip archive ({e})") from e


def _export_input_shape(ep: Any) -> str | None:
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            if val is not None and hasattr(val, "shape"):
                return "(" + ", ".join(str(d) for d in val.shape) + ")"
    return None


def _load_export(path: Path, name: str) -> LoadedModel:
    if os.environ.get(safe_torch.FLAG) != "1":
        raise RuntimeError(f"{safe_torch.FLAG} is not set; refusing to read a torch.export file")
    _precheck(path, name)
    from tasks.worker.hf_models import import_output_types

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
    except Exception as e:
        raise LoadError(
            "Unreadable model archive",
            f"{name}: torch.export.load could not read the archive ({type(e).__name__}: "
            f"{first_line(e)}){_output_type_hint(path)}",
        ) from e
    return LoadedModel(ep.module(), "torch_export", _export_input_shape(ep))


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


def _load_torchscript(path: Path, name: str) -> LoadedModel:
    _precheck(path, name, check_torchscript)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise LoadError(
            "Unreadable model archive",
            f"{name}: not a TorchScript archive ({type(e).__name__}). {HOW_TO_EXPORT}",
        ) from e
    return LoadedModel(module, "torchscript")


def _load_safetensors_model(path: Path, name: str, meta: dict[str, Any]) -> LoadedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    arch = meta.get("architecture")
    if not arch:
        raise LoadError(
            "Architecture missing",
            f"{name}: safetensors holds only weights; give an architecture "
            f"({', '.join(sorted(zoo.ARCHITECTURES))}) and its config when uploading",
        )
    try:
        module = zoo.build(arch, meta.get("config"))
    except zoo.ZooError as e:
        raise LoadError("Bad architecture", f"{name}: {e}") from e
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise LoadError("Unreadable weights", f"{name}: not a safetensors file ({e})") from e
    try:
        module.load_state_dict(zoo.align_keys(module, state), strict=True)
    except RuntimeError as e:
        raise LoadError(
            "Weights do not fit the architecture",
            f"{name}: weights do not match architecture {arch!r}: {e}",
        ) from e
    return LoadedModel(module, "safetensors")


def check_finite(module: nn.Module, name: str) -> None:
    """NaN or Inf weights make every measure meaningless: refuse them, naming the tensor."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for pname, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise LoadError(
                "Non-finite weights",
                f"{name}: parameter {pname!r} holds {bad} NaN or Inf value(s)",
            )


def load_model(path: str | os.PathLike, meta: dict[str, Any]) -> LoadedModel:
    """Load a stored model blob by its recorded format; refuse anything else."""
    p = Path(path)
    name = meta.get("filename") or p.name
    fmt = meta.get("format")
    if fmt == "torch_export":
        loaded = _load_export(p, name)
    elif fmt == "torchscript":
        loaded = _load_torchscript(p, name)
    elif fmt == "safetensors":
        loaded = _load_safetensors_model(p, name, meta)
    elif fmt == "huggingface":
        from tasks.worker.hf_models import load_hf_model

        loaded = load_hf_model(p, meta)
    else:
        raise LoadError("Unsupported model format", f"{name}: format {fmt!r}. {HOW_TO_EXPORT}")
    check_finite(loaded.module, name)
    return loaded
