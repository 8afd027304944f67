"""Torch-free inspection of uploaded files: what format they are and whether they are whole.

Nothing here unpickles or imports torch: zip archives are read through their directory,
safetensors and .npy through their documented headers. An inspector either returns metadata
for the blob record or raises `Refused` with a message that says what to do instead.
"""

from __future__ import annotations

from pathlib import Path


class Refused(Exception):
    """The file is not accepted. `status` is 415 for a format the service does not take
    (a pickle, a torch.save file, unknown bytes) and 422 for an accepted format whose content
    is broken or incomplete (corrupt zip, truncated file, missing arrays)."""

    def __init__(self, status: int, slug: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.field = field  # the request field at fault, when one is


def read_head(path: Path, label: str) -> tuple[int, bytes]:
    """The file's size and first 16 bytes, enough to tell every accepted format apart; an
    empty file is refused here, once for every inspector."""
    size = path.stat().st_size
    if size == 0:
        raise Refused(422, "empty", f"{label}: the file is empty")
    with path.open("rb") as fh:
        return size, fh.read(16)
