"""Basis columns held in a file instead of memory: the spill of a basis that the memory the
run may use cannot hold.

A Lanczos basis is `max_basis` vectors of the model's size: 40 float32 columns of a
110M-parameter model are 16.5 GiB, four times the model and its gradient graph together.
Every pass over the basis reads it a block of rows at a time (tasks.engine.basis), so it need
not be resident: `FileColumns` keeps dim × width numbers in an unlinked temporary file, each
column contiguous, and answers the few ways `Basis` touches a chunk of columns with explicit
reads and writes (pread/pwrite): a block of rows (`C[a:b]`, a fresh dim-block × width
tensor), one column (`C[:, j]`, a fresh vector), a leading slice of columns (`C[:, :w]`, a
view of the same file) and writes of a block of rows or of whole columns. The process then
holds only what a pass is working on; the operating system keeps as much of the file in its
page cache as it can spare (reclaimable, and not the worker's resident memory) and reads the
rest from disk.

The arithmetic is the same as in memory: `Basis` widens the same blocks of rows to float64
either way, and only the order of the float64 sums differs (a block read from the file is
column-major), so a run with its basis in a file gives the numbers of one in memory to
rounding (tests/engine/test_file_columns.py), as fast: a pass over 8 float32 columns of 20M
numbers took 0.44 s from the page cache against 0.48 s in memory, one thread.

The file is deleted when it is closed, and it is closed when the chunk is dropped (a
truncated basis, a finished run, a worker that died).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch
from torch import Tensor


def spill_directory(directory: str | None = None) -> str:
    """Where spilled bases go: `directory`, or the system's temporary directory (TMPDIR)."""
    return directory or tempfile.gettempdir()


def free_bytes(directory: str | None = None) -> int:
    """Bytes free on the file system of the spill directory."""
    return shutil.disk_usage(spill_directory(directory)).free


class _File:
    """An unlinked temporary file of a fixed size, shared by a chunk and its views."""

    def __init__(self, directory: str | None, nbytes: int) -> None:
        self.handle = tempfile.TemporaryFile(dir=spill_directory(directory))
        os.ftruncate(self.handle.fileno(), nbytes)
        self.fd = self.handle.fileno()

    def read(self, out: Tensor, offset: int) -> None:
        view = out.numpy().data.cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"short read from a spilled basis at byte {offset + done}")
            done += got

    def write(self, data: Tensor, offset: int) -> None:
        view = data.contiguous().numpy().data.cast("B")
        done = 0
        while done < len(view):
            done += os.pwritev(self.fd, [view[done:]], offset + done)

    def __del__(self) -> None:
        self.handle.close()


class FileColumns:
    """dim × width numbers of `dtype` in a file, column-major; the slice of `Basis`' chunk
    interface a pass over the basis uses (module docstring)."""

    def __init__(
        self,
        dim: int,
        width: int,
        dtype: torch.dtype,
        directory: str | None = None,
        *,
        _file: _File | None = None,
        _first: int = 0,
    ) -> None:
        self.dtype = dtype
        self.shape = (dim, width)
        self.device = torch.device("cpu")
        self._item = torch.empty((), dtype=dtype).element_size()
        self._file = _file or _File(directory, dim * width * self._item)
        self._first = _first  # the file's column this chunk's column 0 is

    def numel(self) -> int:
        return 0  # nothing of it is held in memory

    def element_size(self) -> int:
        return self._item

    @property
    def file_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * self._item

    def _offset(self, column: int, row: int = 0) -> int:
        return ((self._first + column) * self.shape[0] + row) * self._item

    def __getitem__(self, key: object) -> Tensor | FileColumns:
        dim, width = self.shape
        if isinstance(key, slice):  # a block of rows of every column
            a, b, _ = key.indices(dim)
            block = torch.empty(width, b - a, dtype=self.dtype)
            for j in range(width):
                self._file.read(block[j], self._offset(j, a))
            # a transposed view, not a row-major copy (which would cost as much again as the
            # read): widened, it multiplies as fast as a block in memory, in another order
            return block.T
        if isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None):
            which = key[1]
            if isinstance(which, int):  # one column
                column = torch.empty(dim, dtype=self.dtype)
                self._file.read(column, self._offset(which % width))
                return column
            if isinstance(which, slice) and which.step in (None, 1):
                start, stop, _ = which.indices(width)
                return FileColumns(
                    dim, stop - start, self.dtype, _file=self._file, _first=self._first + start
                )
        raise TypeError(f"a spilled basis chunk cannot be indexed by {key!r}")

    def __setitem__(self, key: object, value: Tensor) -> None:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"a spilled basis chunk cannot be written at {key!r}")
        rows, cols = key
        dim, width = self.shape
        if not (isinstance(rows, slice) and isinstance(cols, slice)):
            raise TypeError(f"a spilled basis chunk cannot be written at {key!r}")
        a, b, _ = rows.indices(dim)
        c0, c1, _ = cols.indices(width)
        value = value.to(device="cpu", dtype=self.dtype).reshape(b - a, c1 - c0)
        for j in range(c1 - c0):
            self._file.write(value[:, j], self._offset(c0 + j, a))
