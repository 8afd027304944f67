"""Which torch.export archives are safe to load: shared by the gateway (at upload) and the
worker (before torch.export.load). Torch-free: zipfile and json only.

torch.export.load hands "opaque object" constants straight to plain `pickle.loads` and custom
objects to the TorchScript unpickler — TORCH_FORCE_WEIGHTS_ONLY_LOAD does not cover either — so
an archive is accepted only when every constant is a tensor and it carries no compiled code.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import PurePosixPath


class UnsafeArchive(Exception):
    """The archive holds something that would run code or is unreadable; `title` says which."""

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail


def check_pt2(zf: zipfile.ZipFile, name: str) -> None:
    """Raise UnsafeArchive for pickled objects or tensors, non-tensor constants, compiled code."""
    names = zf.namelist()
    for member in names:
        parts = PurePosixPath(member).parts
        base = parts[-1] if parts else ""
        if base.startswith(("opaque_obj_", "custom_obj_")):
            raise UnsafeArchive(
                "Unsafe model archive",
                f"{name}: member {member!r} holds a pickled Python object; only tensors "
                "and the exported graph are accepted",
            )
        if "aotinductor" in parts or "executorch" in parts:
            raise UnsafeArchive(
                "Unsupported model archive",
                f"{name}: member {member!r} holds compiled code; upload the plain "
                "torch.export archive instead",
            )
    for member in names:
        is_constants = member.endswith("_constants_config.json")
        if not (is_constants or member.endswith("_weights_config.json")):
            continue
        try:
            config = json.loads(zf.read(member)).get("config", {})
            entries = [(str(fqn), dict(entry)) for fqn, entry in config.items()]
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
            raise UnsafeArchive(
                "Corrupt model archive", f"{name}: unreadable tensor config {member!r}"
            ) from e
        for fqn, entry in entries:
            if entry.get("use_pickle"):
                raise UnsafeArchive(
                    "Unsafe model archive",
                    f"{name}: {fqn!r} is stored as a pickle; torch.export.save writes plain "
                    "tensors, re-export the model",
                )
            if is_constants and not str(entry.get("path_name", "")).startswith("tensor_"):
                raise UnsafeArchive(
                    "Unsafe model archive",
                    f"{name}: constant {fqn!r} is not a tensor; only tensor constants are accepted",
                )
