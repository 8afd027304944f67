"""What can be uploaded: a path, bytes, or an open binary file, reopened for each retry.

httpx streams a file object in chunks, so a multi-gigabyte model is never read into memory;
bytes stay as they are. A retry needs the body again from its start: a path is reopened and a
seekable file rewound to where it stood, which is why uploads go through `FileSource` rather
than handing httpx the object once.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

FileInput = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


@dataclass
class FileSource:
    filename: str
    path: Path | None = None
    data: bytes | None = None
    handle: IO[bytes] | None = None
    start: int = 0

    @classmethod
    def of(cls, value: FileInput, filename: str | None = None) -> FileSource:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls(filename=filename or "upload.bin", data=bytes(value))
        if isinstance(value, (str, os.PathLike)):
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"no file at {path}")
            return cls(filename=filename or path.name, path=path)
        if hasattr(value, "read"):
            name = filename or Path(str(getattr(value, "name", "upload.bin"))).name
            start = value.tell() if _seekable(value) else 0
            return cls(filename=name, handle=value, start=start)
        raise TypeError(f"cannot upload a {type(value).__name__}: give a path, bytes or a file")

    @property
    def retryable(self) -> bool:
        """Whether the body can be sent again (a pipe or socket cannot be rewound)."""
        return self.handle is None or _seekable(self.handle)

    def open(self) -> tuple[IO[bytes], bool]:
        """A file positioned at the body's start, and whether the caller must close it."""
        if self.path is not None:
            return self.path.open("rb"), True
        if self.data is not None:
            return io.BytesIO(self.data), True
        assert self.handle is not None
        if _seekable(self.handle):
            self.handle.seek(self.start)
        return self.handle, False


def _seekable(handle: object) -> bool:
    try:
        return bool(handle.seekable())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
