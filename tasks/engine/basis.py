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

`peak_columns` records the most columns ever allocated at once, what tests and benchmarks
compare with a budget.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class Basis:
    """Orthonormal columns q₁ … q_n of length `dim`, appended in order."""

    def __init__(
        self,
        dim: int,
        device: Any = "cpu",
        capacity: int | None = None,
        chunk: int = 16,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.dim = dim
        self.device = torch.device(device)
        self.dtype = dtype
        self.capacity = capacity
        self.chunk = chunk
        self._chunks: list[Tensor] = []
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
        """Bytes held by the columns now (allocated, used or not)."""
        return sum(c.numel() * c.element_size() for c in self._chunks)

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
        self._chunks.append(torch.empty(self.dim, width, dtype=self.dtype, device=self.device))
        self._fill = 0
        self.peak_columns = max(self.peak_columns, self.allocated_columns)

    def _views(self) -> list[Tensor]:
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

    def project_out(self, W: Tensor, *, only_if_needed: bool = False) -> Tensor:
        """(I − QQᵀ)W for a vector or a matrix of columns, in two passes.

        With `only_if_needed` the second pass runs only when the first removed more than
        1 − 1/√2 of a column's norm (the Daniel–Gragg–Kaufman–Stewart test): otherwise the
        first pass lost no accuracy to cancellation and a second changes nothing that
        matters. Lanczos, which has already subtracted the two large components of its
        three-term recurrence, usually passes the test and saves half the basis' reads.
        """
        before = W.norm(dim=0) if only_if_needed else None
        W = self._one_pass(W)
        if before is not None and bool((W.norm(dim=0) > 0.7071067811865476 * before).all()):
            return W
        return self._one_pass(W)

    def _one_pass(self, W: Tensor) -> Tensor:
        if not self._chunks:
            return W
        if W.device == self.device and W.dtype == self.dtype:
            for C in self._views():
                W = W - C @ (C.T @ W)
            return W
        # a float32 or host-held basis: the arithmetic in float64 where the basis lives, its
        # columns widened a block of rows at a time (a float32 dot product over millions of
        # entries would lose 1e-4 of its accuracy)
        local = W.to(device=self.device, dtype=torch.float64)
        for C in self._views():
            local = local - self._times(C, self._transposed_times(C, local))
        return local.to(device=W.device, dtype=W.dtype)

    _ROWS = 1 << 16  # rows widened to float64 at once

    def _transposed_times(self, C: Tensor, X: Tensor) -> Tensor:
        """Cᵀ X in float64, C widened a block of rows at a time."""
        out = torch.zeros((C.shape[1], *X.shape[1:]), dtype=torch.float64, device=self.device)
        for a in range(0, self.dim, self._ROWS):
            out += C[a : a + self._ROWS].double().T @ X[a : a + self._ROWS]
        return out

    def _times(self, C: Tensor, S: Tensor) -> Tensor:
        """C S in float64, C widened a block of rows at a time."""
        if C.dtype == torch.float64:
            return C @ S
        out = torch.empty((self.dim, *S.shape[1:]), dtype=torch.float64, device=self.device)
        for a in range(0, self.dim, self._ROWS):
            out[a : a + self._ROWS] = C[a : a + self._ROWS].double() @ S
        return out

    def combine(self, S: Tensor) -> Tensor:
        """Q S: the basis times an n×k (or length-n) coefficient array, in float64."""
        out, offset = None, 0
        S = S.to(device=self.device, dtype=torch.float64)
        for C in self._views():
            part = self._times(C, S[offset : offset + C.shape[1]])
            out = part if out is None else out + part
            offset += C.shape[1]
        if out is None:
            shape = (self.dim, *S.shape[1:])
            return torch.zeros(shape, dtype=torch.float64, device=self.device)
        return out
