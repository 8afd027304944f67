"""Tell an uploaded model's format from its bytes: torch.export, TorchScript, safetensors, or a
Hugging Face checkpoint (a zip of the folder `save_pretrained` writes).

Everything else is refused with the export recipe, because the common mistakes (torch.save
of a module or of a state_dict, a raw pickle) would otherwise only fail, or worse run, in a
worker. The check reads zip directories, headers and JSON only: a torch.export program whose
batch dimension was fixed at export is refused here, with the fix, rather than when a job runs.

The formats are tasks.artifacts.formats': a zip archive's format is recognised there, by its
members, and inspected here by the format's entry in `_ARCHIVE_INSPECTORS`, which runs the
format's safety check, the one the worker runs again before torch opens the file.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.blobs.formats import Refused, archive, read_head, safetensors
from tasks.artifacts import formats
from tasks.artifacts import hf_checkpoint as hf
from tasks.artifacts.checks import UnsafeArchive

DYNAMIC_BATCH = "dynamic_shapes=({0: torch.export.Dim('batch')},)"

HOW_TO_EXPORT = (
    "export it with torch.export: program = torch.export.export(model.eval(), (example,), "
    f"{DYNAMIC_BATCH}); torch.export.save(program, 'model.pt2') (the SDK's "
    "client.models.from_module does both). A Hugging Face transformers model can be uploaded "
    "as its save_pretrained folder instead (config.json and model.safetensors, zipped); "
    "weights of a built-in architecture as safetensors "
    "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) with an "
    "'architecture' form field and its 'config'"
)


def inspect_model(path: Path, label: str, max_uncompressed: int) -> dict[str, Any]:
    """Metadata for the blob record: {"format": ...} plus a few facts about the file."""
    size, head = read_head(path, label)
    if archive.is_zip(head):
        return _zip_model(path, label, max_uncompressed)
    # safetensors first: its 8-byte length may well start with 0x80, like a pickle
    if safetensors.looks_like(head, size):
        tensors = safetensors.read_header(path, label)
        return {
            "format": formats.SAFETENSORS,
            "tensors": len(tensors),
            "parameters": sum(math.prod(t["shape"]) for t in tensors.values()),
        }
    if head[:1] == b"\x80":
        raise Refused(
            415,
            "pickle",
            f"{label}: this is a raw Python pickle (protocol {head[1]}); uploaded bytes are "
            f"never unpickled. Instead, {HOW_TO_EXPORT}",
        )
    raise Refused(
        415,
        "unknown-format",
        f"{label}: not a torch.export archive (.pt2), a TorchScript archive or safetensors. "
        f"To upload a model, {HOW_TO_EXPORT}",
    )


def _zip_model(path: Path, label: str, max_uncompressed: int) -> dict[str, Any]:
    with archive.open_checked(path, label, max_uncompressed) as zf:
        names = zf.namelist()
        fmt = formats.archive_format(names)
        if fmt is not None:
            return _ARCHIVE_INSPECTORS[fmt.name](fmt, zf, label)
        inner = formats.relative_names(names)
        if "data.pkl" in inner:
            raise Refused(
                415,
                "torch-save",
                f"{label}: this looks like torch.save of a module or state_dict, which only "
                f"loads by unpickling; {HOW_TO_EXPORT}",
            )
        if any(n.endswith(".npy") for n in names):
            raise Refused(
                415,
                "dataset-not-model",
                f"{label}: an .npz of arrays is a dataset; upload it to POST /v1/datasets",
            )
    raise Refused(
        415,
        "unknown-format",
        f"{label}: a zip archive that is neither torch.export (.pt2) nor TorchScript. "
        f"To upload a model, {HOW_TO_EXPORT}",
    )


def _check(fmt: formats.ModelFormat, zf: zipfile.ZipFile, label: str) -> None:
    """The format's safety check (the one the worker runs again), as the upload's refusal."""
    if fmt.check is None:
        return
    try:
        fmt.check(zf, label)
    except UnsafeArchive as e:
        raise Refused(e.status, e.slug, e.detail, "file") from e


def _torch_export(fmt: formats.ModelFormat, zf: zipfile.ZipFile, label: str) -> dict[str, Any]:
    """A .pt2 archive: its archive_format, an exported program, a dynamic batch dimension."""
    names = zf.namelist()
    root = formats.top_folder(names)
    assert root is not None  # formats.archive_format recognised it by its top folder
    written = zf.read(f"{root}/archive_format")[:64].decode("ascii", "replace").strip()
    if written != formats.PT2_ARCHIVE_FORMAT:
        raise Refused(
            415,
            "unknown-format",
            f"{label}: archive_format is {written!r}, not {formats.PT2_ARCHIVE_FORMAT!r}",
        )
    inner = formats.relative_names(names)
    if not any(n.startswith("models/") and n.endswith(".json") for n in inner):
        raise Refused(
            422,
            "corrupt",
            f"{label}: a .pt2 archive without models/*.json (no exported program)",
        )
    _check(fmt, zf, label)
    _refuse_static_batch(zf, root, label)
    return {"format": fmt.name}


def _torchscript(fmt: formats.ModelFormat, zf: zipfile.ZipFile, label: str) -> dict[str, Any]:
    _check(fmt, zf, label)
    return {"format": fmt.name}


def _refuse_static_batch(zf: zipfile.ZipFile, root: str, label: str) -> None:
    """422 when a user input's first dimension was fixed at export: the service runs the model
    on batches of other sizes (the last batch of a dataset, the probe), which such a program
    refuses. Read from the serialized program's JSON; a layout not understood passes."""
    for member in zf.namelist():
        if not (member.startswith(f"{root}/models/") and member.endswith(".json")):
            continue
        try:
            program = json.loads(zf.read(member))
            graph = program["graph_module"]["graph"]
            specs = program["graph_module"]["signature"]["input_specs"]
            values = graph["tensor_values"]
        except (KeyError, TypeError, ValueError, RecursionError):
            continue
        fixed = []
        for spec in specs:
            arg = (spec.get("user_input") or {}).get("arg") or {} if isinstance(spec, dict) else {}
            name = (arg.get("as_tensor") or {}).get("name") if isinstance(arg, dict) else None
            sizes = (values.get(name) or {}).get("sizes") if name else None
            if isinstance(sizes, list) and sizes and isinstance(sizes[0], dict):
                if "as_int" in sizes[0]:
                    fixed.append((name, sizes[0]["as_int"]))
        if fixed:
            which = ", ".join(f"{n!r} (batch {b})" for n, b in fixed)
            raise Refused(
                422,
                "static-batch",
                f"{label}: the program was exported with a fixed batch size for input {which}, "
                "so it cannot run on batches of any other size. Re-export it with a dynamic "
                f"batch: torch.export.export(model.eval(), (example,), {DYNAMIC_BATCH}) "
                "with an example batch of at least 2 (client.models.from_module does this)",
            )


def _hf_checkpoint(fmt: formats.ModelFormat, zf: zipfile.ZipFile, label: str) -> dict[str, Any]:
    """A zip of a save_pretrained folder: config.json with a model_type, safetensors weights
    whose headers are whole; no pickled weights, no code."""
    try:
        where = hf.layout(zf, label)
        config = hf.parse_config(zf.read(where.member(hf.CONFIG)), label)
    except hf.BadCheckpoint as e:
        raise Refused(e.status, e.slug, e.detail) from e
    tensors: dict[str, dict[str, Any]] = {}
    for member in where.weights:
        with zf.open(member) as fh:
            tensors.update(
                safetensors.read_header_from(fh, zf.getinfo(member).file_size, f"{label}: {member}")
            )
    if not tensors:
        raise Refused(422, "empty", f"{label}: the safetensors hold no tensors")
    _check(fmt, zf, label)  # the checkpoint's own checks are hf_checkpoint.layout's
    return {
        "format": fmt.name,
        "config": config,
        "tensors": len(tensors),
        "parameters": sum(math.prod(t["shape"]) for t in tensors.values()),
    }


def hf_from_fields(config_text: str, label: str) -> dict[str, Any]:
    """Bare model.safetensors with config.json sent in the 'config' field."""
    try:
        return hf.parse_config(config_text, label, "config")
    except hf.BadCheckpoint as e:
        raise Refused(e.status, e.slug, e.detail) from e


#: the gateway's inspection of each zip-archive format, after its safety check
_ARCHIVE_INSPECTORS: dict[
    str, Callable[[formats.ModelFormat, zipfile.ZipFile, str], dict[str, Any]]
] = {
    formats.HUGGINGFACE: _hf_checkpoint,
    formats.TORCH_EXPORT: _torch_export,
    formats.TORCHSCRIPT: _torchscript,
}
