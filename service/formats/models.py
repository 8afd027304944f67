"""Tell an uploaded model's format from its bytes: torch.export, TorchScript or safetensors.

Everything else is refused with the export recipe, because the common mistakes (torch.save
of a module or of a state_dict, a raw pickle) would otherwise only fail, or worse run, in a
worker. The check reads zip directories and headers only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from service.formats import Refused, archive, safetensors
from tasks.pt2_check import UnsafeArchive, check_pt2

HOW_TO_EXPORT = (
    "export it with torch.export.export(model.eval(), (example,), dynamic_shapes=...) and "
    "torch.export.save(program, 'model.pt2'), or save it as TorchScript with "
    "torch.jit.save(torch.jit.script(model), 'model.pt'), or upload safetensors weights "
    "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) with an "
    "'architecture' form field naming a built-in architecture and its 'config'"
)


def inspect_model(path: Path, label: str, max_uncompressed: int) -> dict[str, Any]:
    """Metadata for the blob record: {"format": ...} plus a few facts about the file."""
    size = path.stat().st_size
    if size == 0:
        raise Refused(422, "empty", f"{label}: the file is empty")
    with path.open("rb") as fh:
        head = fh.read(16)
    if archive.is_zip(head):
        return _zip_model(path, label, max_uncompressed)
    # safetensors first: its 8-byte length may well start with 0x80, like a pickle
    if safetensors.looks_like(head, size):
        tensors = safetensors.read_header(path, label)
        return {
            "format": "safetensors",
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
        names = archive.relative_names(zf)
        root = archive.top_folder(zf)
        if "archive_format" in names and root is not None:
            fmt = zf.read(f"{root}/archive_format")[:64].decode("ascii", "replace").strip()
            if fmt != "pt2":
                raise Refused(
                    415, "unknown-format", f"{label}: archive_format is {fmt!r}, not 'pt2'"
                )
            if not any(n.startswith("models/") and n.endswith(".json") for n in names):
                raise Refused(
                    422,
                    "corrupt",
                    f"{label}: a .pt2 archive without models/*.json (no exported program)",
                )
            try:
                check_pt2(zf, label)
            except UnsafeArchive as e:
                raise Refused(415, "unsafe-archive", e.detail) from e
            return {"format": "torch_export"}
        has_code = any(n.startswith("code/") for n in names)
        if has_code and "data.pkl" in names and "constants.pkl" in names:
            return {"format": "torchscript"}
        if "data.pkl" in names:
            raise Refused(
                415,
                "torch-save",
                f"{label}: this looks like torch.save of a module or state_dict, which only "
                f"loads by unpickling; {HOW_TO_EXPORT}",
            )
        if any(n.endswith(".npy") for n in zf.namelist()):
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
