"""An orthonormal basis that grows by columns without ever copying itself, within a budget.

Lanczos with full reorthogonalisation keeps every Lanczos vector: dim × n numbers, 88 MB per
float64 vector for an 11M-parameter network. Growing one tensor with torch.cat copies the
whole basis at every step, so memory peaks at twice the basis and the copies cost O(dim·n²).
Here the columns live in chunks of at most `chunk` columns, allocated as needed and never
larger than the stated capacity (appending past it is an error, not a silent reallocation);
appending writes the new columns only. Projections run chunk by chunk (block Gram–Schmidt),
twice ("twice is enough") or, on request, a second time only when the first lost accuracy, so
the basis stays orthonormal to working precision.

A bounded solver (thick-restart Lanczos) replaces the basis by a few combinations of its
columns, Q ← QY, in place (`transform`): rows are processed in blocks of about
2·dim/(n + p) rows, so the work space is about two vectors, never a second basis.

The basis may be held in float32 (half the memory; its columns are then orthonormal to about
1e-7) or on another device than the vectors it is used with (the host, while the operator
runs on a GPU): the arithmetic is done in float64 where the basis lives, widening its columns
2¹⁶ rows at a time, and results come back on the caller's device.

With `spill` the columns live in a file instead (tasks.engine.file_columns): every pass
reads the same blocks of rows it would read in memory, so the numbers are the same, and the
process holds only the block it works on.

`peak_columns` records the most columns ever allocated at once, what tests and benchmarks
compare with a budget.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tasks.engine.file_columns import FileColumns


class Basis:
    """Orthonormal columns q₁ … q_n of length `dim`, appended in order."""

    def __init__(
        self,
        dim: int,
        device: Any = "cpu",
        capacity: int | None = None,
        chunk: int = 16,
        dtype: torch.dtype = torch.float64,
        spill: bool = False,
        spill_dir: str | None = None,
    ) -> None:
        self.dim = dim
        self.device = torch.device("cpu" if spill else device)
        self.spill = spill  # columns in a file (in spill_dir), not in memory
        self.spill_dir = spill_dir
        self.dtype = dtype
        self.capacity = capacity
        self.chunk = chunk
        self._chunks: list[Any] = []  # dim × width Tensors, or FileColumns when spilled
        self._fill = 0  # columns used in the last chunk
        self.size = 0
        self.peak_columns = 0  # most columns allocated at once

    @classmethod
    def of(cls, Q: Tensor) -> Basis:
        """A basis over the (orthonormal) columns of Q, without copying them."""
        basis = cls(Q.shape[0], Q.device, capacity=Q.shape[1], dtype=Q.dtype)
        basis._chunks, basis._fill, basis.size = [Q], Q.shape[1], Q.shape[1]
        basis.peak_columns = Q.shape[1]
        return basis

    def __len__(self) -> int:
        return self.size

    @property
    def allocated_columns(self) -> int:
        return sum(c.shape[1] for c in self._chunks)

    @property
    def nbytes(self) -> int:
        """Bytes of memory held by the columns now (allocated, used or not; none when
        spilled)."""
        return sum(c.numel() * c.element_size() for c in self._chunks)

    @property
    def file_bytes(self) -> int:
        """Bytes of the columns held in a file now (spilled)."""
        return sum(c.file_bytes for c in self._chunks if isinstance(c, FileColumns))

    def append(self, Q: Tensor) -> None:
        """Append a column (a vector) or the columns of a dim×b matrix."""
        cols = Q.reshape(self.dim, -1)
        if self.capacity is not None and self.size + cols.shape[1] > self.capacity:
            raise ValueError(
                f"the basis holds at most {self.capacity} columns; cannot add "
                f"{cols.shape[1]} to {self.size}"
            )
        cols = cols.to(dtype=self.dtype, device=self.device)
        start = 0
        while start < cols.shape[1]:
            if not self._chunks or self._fill == self._chunks[-1].shape[1]:
                self._new_chunk(cols.shape[1] - start)
            last = self._chunks[-1]
            take = min(cols.shape[1] - start, last.shape[1] - self._fill)
            last[:, self._fill : self._fill + take] = cols[:, start : start + take]
            self._fill += take
            self.size += take
            start += take

    def _new_chunk(self, wanted: int) -> None:
        width = max(self.chunk, wanted)
        if self.capacity is not None:
            width = max(min(width, self.capacity - self.allocated_columns), wanted)
        if self.spill:
            self._chunks.append(FileColumns(self.dim, width, self.dtype, self.spill_dir))
        else:
            self._chunks.append(torch.empty(self.dim, width, dtype=self.dtype, device=self.device))
        self._fill = 0
        self.peak_columns = max(self.peak_columns, self.allocated_columns)

    def _views(self) -> list[Any]:
        views = self._chunks[:-1]
        if self._chunks:
            views = [*views, self._chunks[-1][:, : self._fill]]
        return views

    def truncate(self, n: int) -> None:
        """Keep the first n columns; chunks wholly past them are freed."""
        if not 0 <= n <= self.size:
            raise ValueError(f"cannot truncate a basis of {self.size} columns to {n}")
        kept: list[Tensor] = []
        offset = 0
        for c in self._chunks:
            if offset >= n:
                break
            kept.append(c)
            offset += c.shape[1]
        self._chunks = kept
        self._fill = n - (offset - kept[-1].shape[1]) if kept else 0
        self.size = n

    def drop_oldest_chunk(self) -> int:
        """Forget the oldest chunk of columns (a sliding window); returns how many went."""
        if len(self._chunks) <= 1:
            return 0
        gone = self._chunks.pop(0).shape[1]
        self.size -= gone
        return gone

    def transform(self, Y: Tensor) -> None:
        """Q ← Q Y in place for an n×p coefficient matrix (p ≤ n); the basis keeps p columns.

        Rows are combined a block at a time, so the extra memory is about two vectors."""
        n, p = Y.shape
        if n != self.size or p > n:
            raise ValueError(f"expected a {self.size}×p matrix with p ≤ {self.size}, got {n}×{p}")
        Y = Y.to(device=self.device, dtype=torch.float64)
        views = self._views()
        rows = max(1, (2 * self.dim) // (n + p))
        for a in range(0, self.dim, rows):
            b = min(a + rows, self.dim)
            block = torch.cat([C[a:b] for C in views], dim=1).to(torch.float64) @ Y
            offset = 0
            for C in views:
                if offset >= p:
                    break
                w = min(C.shape[1], p - offset)
                C[a:b, :w] = block[:, offset : offset + w].to(self.dtype)
                offset += w
            del block
        self.truncate(p)

    def project_out(
        self, W: Tensor, *, only_if_needed: bool = False, overwrite: bool = False
    ) -> Tensor:
        """(I − QQᵀ)W for a vector or a matrix of columns, in two passes.

        With `only_if_needed` the second pass runs only when the first removed more than
        1 − 1/√2 of a column's norm (the Daniel–Gragg–Kaufman–Stewart test): otherwise the
        first pass lost no accuracy to cancellation and a second changes nothing that
        matters. Lanczos, which has already subtracted the two large components of its
        three-term recurrence, usually passes the test and saves half the basis' reads.

        With `overwrite` W itself is updated and returned (a float64 W where the basis lives
        is then never copied: the pass subtracts a block of rows at a time); otherwise W is
        left as it was.
        """
        before = W.norm(dim=0) if only_if_needed else None
        W = self._one_pass(W, overwrite)
        if before is not None and bool((W.norm(dim=0) > 0.7071067811865476 * before).all()):
            return W
        return self._one_pass(W, overwrite=True)

    def _one_pass(self, W: Tensor, overwrite: bool = False) -> Tensor:
        if not self._chunks:
            return W
        # the arithmetic in float64 where the basis lives; a float32 basis is widened a block
        # of rows at a time (a float32 dot product over millions of entries would lose 1e-4
        # of its accuracy)
        here = W.device == self.device and W.dtype == torch.float64
        local = W if here and overwrite else W.to(self.device, torch.float64, copy=True)
        for C in self._views():
            self._subtract_times(C, self._transposed_times(C, local), local)
        if local is W:
            return W
        if overwrite:
            return W.copy_(local)
        return local.to(device=W.device, dtype=W.dtype)

    _ROWS = 1 << 16  # rows widened to float64 at once

    def _transposed_times(self, C: Any, X: Tensor) -> Tensor:
        """Cᵀ X in float64, C widened a block of rows at a time."""
        if C.dtype == torch.float64 and isinstance(C, Tensor):
            return C.T @ X
        out = torch.zeros((C.shape[1], *X.shape[1:]), dtype=torch.float64, device=self.device)
        for a in range(0, self.dim, self._ROWS):
            out += C[a : a + self._ROWS].double().T @ X[a : a + self._ROWS]
        return out

    def _subtract_times(self, C: Any, S: Tensor, out: Tensor, alpha: float = 1.0) -> None:
        """out −= alpha · C S in place (float64 out), C widened a block of rows at a time: no
        vector of the model's size is allocated."""
        if C.dtype == torch.float64 and isinstance(C, Tensor):
            if out.ndim == 1:
                out.addmv_(C, S, alpha=-alpha)
            else:
                out.addmm_(C, S, alpha=-alpha)
            return
        for a in range(0, self.dim, self._ROWS):
            out[a : a + self._ROWS].sub_(C[a : a + self._ROWS].double() @ S, alpha=alpha)

    def column(self, j: int) -> Tensor:
        """Column j (−1: the last) in the basis' dtype and device: a strided view of its chunk,
        not a copy (read it; a write would change the basis); read afresh when spilled."""
        j = j % self.size if j < 0 else j
        for C in self._views():
            if j < C.shape[1]:
                return C[:, j]
            j -= C.shape[1]
        raise IndexError("column index past the basis")

    def dot(self, j: int, w: Tensor) -> float:
        """q_j · w in float64, q_j widened a block of rows at a time."""
        q = self.column(j)
        if q.dtype == torch.float64:
            return float(q @ w)
        total = 0.0
        for a in range(0, self.dim, self._ROWS):
            total += float(q[a : a + self._ROWS].double() @ w[a : a + self._ROWS])
        return total

    def subtract(self, j: int, alpha: float, w: Tensor) -> None:
        """w −= alpha · q_j in place (float64 w), without a vector of the model's size."""
        q = self.column(j)
        if q.dtype == torch.float64:
            w.sub_(q, alpha=alpha)
            return
        for a in range(0, self.dim, self._ROWS):
            w[a : a + self._ROWS].sub_(q[a : a + self._ROWS].double(), alpha=alpha)

    def subtract_combination(self, S: Tensor, w: Tensor) -> None:
        """w −= Q S in place for a length-n coefficient vector S (float64 w)."""
        S = S.to(device=self.device, dtype=torch.float64)
        offset = 0
        for C in self._views():
            self._subtract_times(C, S[offset : offset + C.shape[1]], w)
            offset += C.shape[1]

    def combine(self, S: Tensor) -> Tensor:
        """Q S: the basis times an n×k (or length-n) coefficient array, in float64 (one
        output of the model's size, accumulated in place)."""
        S = S.to(device=self.device, dtype=torch.float64)
        out = torch.zeros((self.dim, *S.shape[1:]), dtype=torch.float64, device=self.device)
        offset = 0
        for C in self._views():
            self._subtract_times(C, S[offset : offset + C.shape[1]], out, alpha=-1.0)
            offset += C.shape[1]
        return out
