"""Batches that stream: a dataset read one batch at a time, moved to the device per use.

A `BatchSource` is a sequence of `Batch` objects (len, indexing, iteration) that materialises
each batch only when it is asked for, from arrays that may be memory-mapped files; its targets
alone (small) can be read without the inputs, so the counted targets of every batch are known
up front. `HessianProblem` accepts one wherever it accepts a list of batches.

`DeviceBatches` is what a problem iterates on each product: batches kept resident on the
device when they fit, else taken from the source and copied to the device as they are used
(through pinned host memory and a non-blocking copy on CUDA), so at most a batch or two of
data is on the device at any time.

`available_bytes` says how much memory a device can still give: CUDA's free memory, or on the
host the smaller of MemAvailable and what the process's address-space / data rlimit leaves.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from tasks.engine.batch import Batch, Inputs, map_inputs

#: A source is kept resident on the device when it needs at most this share of the memory
#: the device has available (the rest is left to activations, graphs and the eigensolver).
RESIDENT_SHARE = 0.25


class BatchSource(Sequence[Batch]):
    """Batches `i*batch_size : (i+1)*batch_size` of `size` examples, each built on demand.

    `read(start, stop)` returns the Batch of those examples (host tensors, converted);
    `read_targets(start, stop)` returns only their targets; `nbytes` is the size of all the
    batches once converted (an estimate of what holding them would cost).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        read: Callable[[int, int], Batch],
        read_targets: Callable[[int, int], Tensor],
        nbytes: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.size = int(size)
        self.batch_size = int(batch_size)
        self._read = read
        self._read_targets = read_targets
        self.nbytes = int(nbytes)

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def _bounds(self, index: int) -> tuple[int, int]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"batch {index} of {n}")
        start = index * self.batch_size
        return start, min(start + self.batch_size, self.size)

    def __getitem__(self, index: int) -> Batch:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("a BatchSource is indexed by batch number, not sliced")
        return self._read(*self._bounds(index))

    def __iter__(self) -> Iterator[Batch]:
        for i in range(len(self)):
            yield self[i]

    def sizes(self) -> list[int]:
        return [stop - start for start, stop in map(self._bounds, range(len(self)))]

    def targets(self, index: int) -> Tensor:
        return self._read_targets(*self._bounds(index))

    def iter_targets(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self.targets(i)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type != "cuda":
        return batch.to(device)

    def move(t: Tensor) -> Tensor:
        if t.device.type == "cpu":
            t = t.pin_memory()
        return t.to(device, non_blocking=True)

    return Batch(map_inputs(batch.inputs, move), move(batch.targets))


def available_bytes(device: torch.device) -> int:
    """Memory the device can still give this process, in bytes."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    avail = _meminfo_available()
    limit = _rlimit_headroom()
    return int(min(x for x in (avail, limit) if x is not None)) if (avail or limit) else 1 << 62


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rlimit_headroom() -> int | None:
    """What RLIMIT_AS / RLIMIT_DATA leave above the process's current use."""
    best = None
    for which, used_key in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _ = resource.getrlimit(which)
        if soft == resource.RLIM_INFINITY:
            continue
        used = _status_kib(used_key) or 0
        room = max(0, soft - used)
        best = room if best is None else min(best, room)
    return best


class DeviceBatches(Sequence[Batch]):
    """The batches of a problem as the products see them, on `device`.

    A list (of Batch or (inputs, targets) pairs) is moved to the device at once, as before.
    A BatchSource is moved whole when it needs at most RESIDENT_SHARE of the device's
    available memory (or `resident` says so), else each batch is materialised and copied to
    the device when it is used, and dropped after.
    """

    def __init__(
        self,
        batches: Sequence[Batch | tuple[Inputs, Tensor]],
        device: torch.device,
        resident: bool | None = None,
    ) -> None:
        self.device = device
        self.source: BatchSource | None = None
        self._resident: list[Batch] | None = None
        if isinstance(batches, BatchSource):
            if resident is None:
                resident = batches.nbytes <= RESIDENT_SHARE * available_bytes(device)
            if resident:
                self._resident = [_to_device(b, device) for b in batches]
            else:
                self.source = batches
        else:
            self._resident = [
                (b if isinstance(b, Batch) else Batch(inputs=b[0], targets=b[1])).to(device)
                for b in batches
            ]

    @property
    def streaming(self) -> bool:
        return self.source is not None

    def __len__(self) -> int:
        return len(self._resident) if self._resident is not None else len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Batch:  # type: ignore[override]
        if self._resident is not None:
            return self._resident[index]
        return _to_device(self.source[index], self.device)  # type: ignore[index]

    def __iter__(self) -> Iterator[Batch]:
        if self._resident is not None:
            yield from self._resident
            return
        source = self.source
        assert source is not None
        if self.device.type != "cuda":
            for i in range(len(source)):
                yield source[i]  # on the host already: one batch at a time
            return
        # copy the next batch while the current one computes (pinned, non-blocking)
        ahead = _to_device(source[0], self.device) if len(source) else None
        for i in range(len(source)):
            current = ahead
            ahead = _to_device(source[i + 1], self.device) if i + 1 < len(source) else None
            yield current  # type: ignore[misc]

    def sizes(self) -> list[int]:
        if self._resident is not None:
            return [b.size for b in self._resident]
        return self.source.sizes()  # type: ignore[union-attr]

    def targets(self) -> Iterator[Tensor]:
        """Each batch's targets on the device, reading no inputs when streaming."""
        if self._resident is not None:
            for b in self._resident:
                yield b.targets
            return
        for t in self.source.iter_targets():  # type: ignore[union-attr]
            yield t.to(self.device)

    def __repr__(self) -> str:
        how = "streaming" if self.streaming else "resident"
        return f"DeviceBatches({len(self)} batches, {how}, {self.device})"
