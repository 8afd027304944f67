"""Open a zip archive by its directory and check every member's CRC, without extracting.

Members that would land outside a folder they were extracted to (`..`, absolute paths, drive
letters), symlinks and names given twice are refused (tasks.artifacts.checks, which the worker
runs too).

A truncated upload loses the central directory at the end of the file, and flipped bytes
fail a member's CRC; both are refused here, before a worker ever opens the file. The sum of
the members' declared sizes is capped so a small zip cannot expand into a huge one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from service.blobs.formats import Refused
from tasks.artifacts.checks import UnsafeArchive, check_members

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGIC


def open_checked(path: Path, label: str, max_uncompressed: int) -> zipfile.ZipFile:
    """A ZipFile whose directory parsed and whose members all pass their CRC check."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise Refused(
            422,
            "corrupt-zip",
            f"{label}: starts like a zip archive but its directory is missing or damaged "
            f"({e}); the file is corrupt or the upload was truncated",
        ) from e
    try:
        try:
            check_members(zf, label)
        except UnsafeArchive as e:
            raise Refused(e.status, e.slug, e.detail, "file") from e
        total = sum(i.file_size for i in zf.infolist())
        if total > max_uncompressed:
            raise Refused(
                422,
                "zip-too-large",
                f"{label}: members expand to {total} bytes, above the {max_uncompressed}-byte cap",
            )
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
            raise Refused(422, "corrupt-zip", f"{label}: damaged zip archive ({e})") from e
        if bad is not None:
            raise Refused(
                422, "corrupt-zip", f"{label}: member {bad!r} fails its CRC check (corrupt file)"
            )
    except BaseException:
        zf.close()
        raise
    return zf
