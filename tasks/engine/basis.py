"""An orthonormal basis that grows by columns without ever copying itself.

Lanczos with full reorthogonalisation keeps every Lanczos vector: dim × n float64 numbers,
88 MB per step for an 11M-parameter network. Growing one tensor with torch.cat copies the
whole basis at every step, so memory peaks at twice the basis and the copies cost O(dim·n²).
Here the columns live in chunks of at most `chunk` columns, allocated as needed and never
larger than the stated capacity; appending writes the new columns only. Projections run
chunk by chunk (block Gram–Schmidt), twice ("twice is enough") or, on request, a second time
only when the first lost accuracy, so the basis stays orthonormal to working precision.
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
        self.device = device
        self.dtype = dtype
        self.capacity = capacity
        self.chunk = chunk
        self._chunks: list[Tensor] = []
        self._fill = 0  # columns used in the last chunk
        self.size = 0

    @classmethod
    def of(cls, Q: Tensor) -> Basis:
        """A basis over the (orthonormal) columns of Q, without copying them."""
        basis = cls(Q.shape[0], Q.device, capacity=Q.shape[1], dtype=Q.dtype)
        basis._chunks, basis._fill, basis.size = [Q], Q.shape[1], Q.shape[1]
        return basis

    def __len__(self) -> int:
        return self.size

    def append(self, Q: Tensor) -> None:
        """Append a column (a vector) or the columns of a dim×b matrix."""
        cols = Q.reshape(self.dim, -1).to(dtype=self.dtype, device=self.device)
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
            width = max(min(width, self.capacity - self.size), wanted)
        self._chunks.append(torch.empty(self.dim, width, dtype=self.dtype, device=self.device))
        self._fill = 0

    def _views(self) -> list[Tensor]:
        views = self._chunks[:-1]
        if self._chunks:
            views = [*views, self._chunks[-1][:, : self._fill]]
        return views

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
        for C in self._views():
            W = W - C @ (C.T @ W)
        return W

    def combine(self, S: Tensor) -> Tensor:
        """Q S: the basis times an n×k (or length-n) coefficient array."""
        out, offset = None, 0
        for C in self._views():
            part = C @ S[offset : offset + C.shape[1]]
            out = part if out is None else out + part
            offset += C.shape[1]
        if out is None:
            shape = (self.dim, *S.shape[1:])
            return torch.zeros(shape, dtype=self.dtype, device=self.device)
        return out
