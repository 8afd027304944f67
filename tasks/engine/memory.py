"""How much memory an iterative measure may plan for, and the error when it cannot have it.

The memory model of a Lanczos measure: the model, its autograd graph (one batch's, or every
batch's with the cached backend) and the operator's two buffers in the model's dtype (the
direction and the product's per-parameter pieces), a fixed number of working vectors of the
model's size (`working_bytes`: `WORKING_FLOAT64` float64 vectors — the product, reduced in
place, or while the wanted Ritz vectors are checked their products H·3y and H·y — and
`WORKING_IN_BASIS_DTYPE` in the basis' dtype — the next column w/β and the Ritz vector y;
a step multiplies the basis' own column), and the basis: `max_basis` columns in the basis
dtype. Every other pass over vectors (the three-term recurrence, block Gram–Schmidt, a thick
restart, Ritz vectors) works in place or a block of rows at a time. Only the basis grows with
what is asked, so only the basis is sized from the memory available: an explicit budget
(`memory_budget_bytes`, for basis and working vectors together) or, by default,
`BASIS_SHARE` of what the device can still give this process (cgroup and RLIMIT headroom,
/proc/meminfo MemAvailable, torch.cuda.mem_get_info) for the basis alone; the rest is left to
the working vectors, the graph and the allocator's slack.

A basis the memory cannot hold need not shrink: with `storage="auto"` (the default) it is
spilled whole to a file (tasks.engine.file_columns) when the asked-for columns do not fit in
memory and do fit in `SPILL_SHARE` of the spill directory's free disk; the process then holds
only the working vectors (one more in the basis' dtype: the column being multiplied, read
from the file) and the block of rows a pass reads, at the price of reading the basis
from the page cache (or the disk) at every step. `storage="memory"` keeps the basis in memory
and shrinks it to what fits (more restarts); `"file"` always spills.

When the smallest basis that can make progress (the wanted vectors and two more) does not fit,
`InsufficientMemory` says how much would be needed, how much there is, and what to change,
before a single product is computed: the run never dies for memory it could have planned for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tasks.engine.batches import available_bytes
from tasks.engine.file_columns import free_bytes, spill_directory

#: where a basis is held: in memory, in a file, or in memory when it fits and a file otherwise
Storage = Literal["auto", "memory", "file"]

#: float64 vectors of the model's size a Lanczos run holds besides its basis (see above)
WORKING_FLOAT64 = 2

#: vectors in the basis' dtype it holds besides
WORKING_IN_BASIS_DTYPE = 2

#: share of the available memory the basis may take when no budget is given; the rest is the
#: gradient graph's, the working vectors' and the allocator's
BASIS_SHARE = 0.25

#: share of the spill directory's free disk a spilled basis may take
SPILL_SHARE = 0.5

GiB = float(1 << 30)


class InsufficientMemory(MemoryError):
    """A measure needs more memory than it may use: `need_bytes` against `have_bytes`."""

    def __init__(self, need_bytes: int, have_bytes: int, what: str, fix: str) -> None:
        self.need_bytes = int(need_bytes)
        self.have_bytes = int(have_bytes)
        self.what = what
        self.fix = fix
        super().__init__(
            f"{what} needs {_size(self.need_bytes)} ({self.need_bytes} bytes) but "
            f"{_size(self.have_bytes)} ({self.have_bytes} bytes) are available to it; {fix}"
        )


def _size(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= 1 << 28 else f"{n / float(1 << 20):.1f} MiB"


def itemsize(dtype: torch.dtype) -> int:
    """Bytes of one number of `dtype`."""
    return torch.empty((), dtype=dtype).element_size()


#: ... and one more when the basis is spilled: the column being multiplied, read from the file
WORKING_IN_BASIS_DTYPE_SPILLED = 1


def working_bytes(dim: int, basis_dtype: torch.dtype, spilled: bool = False) -> int:
    """Bytes of a Lanczos run's working vectors (not its basis) for `dim` parameters."""
    vectors = WORKING_IN_BASIS_DTYPE + (WORKING_IN_BASIS_DTYPE_SPILLED if spilled else 0)
    return dim * (WORKING_FLOAT64 * 8 + vectors * itemsize(basis_dtype))


def memory_available(device: torch.device | str) -> int:
    """Bytes the device can still give this process now: on the host also within the
    cgroup's limit (a container's memory.max), which MemAvailable does not see."""
    device = torch.device(device)
    have = available_bytes(device)
    if device.type == "cpu":
        cgroup = cgroup_headroom()
        if cgroup is not None:
            have = min(have, cgroup)
    return have


#: (limit, usage) files of cgroup v2, then v1
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    ),
)


def cgroup_headroom() -> int | None:
    """The cgroup's memory limit less its usage; None without a limit."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(0, int(limit) - usage)
    return None


@dataclass(frozen=True)
class BasisPlan:
    """The basis columns a run may hold (`columns`), the bytes it planned with (`have_bytes`,
    the explicit budget or the share of the available memory) and whether memory, not the
    asked-for size, set the number (`limited_by_memory`), and whether the columns go to a
    file in `spill_dir` (`spill`) because memory could not hold them."""

    columns: int
    have_bytes: int
    column_bytes: int
    working_bytes: int
    limited_by_memory: bool
    spill: bool = False
    spill_dir: str | None = None


def plan_basis(
    dim: int,
    asked: int,
    minimum: int,
    dtype: torch.dtype,
    device: torch.device | str,
    budget_bytes: int | None = None,
    storage: Storage = "auto",
    spill_dir: str | None = None,
) -> BasisPlan:
    """How many of the `asked` columns of `dim` numbers in `dtype` fit, never more than asked,
    and where they are held.

    With an explicit `budget_bytes` the basis and the working vectors share it. Without one
    the basis may take `BASIS_SHARE` of the available memory, and the run is refused only
    when the working vectors and the `minimum` columns do not fit in all of it: the smallest
    basis that can make progress is granted whenever memory holds it. When the asked-for
    columns do not fit in memory (`storage="auto"`), or always (`"file"`), they are spilled
    to a file if the working vectors fit in memory and the columns in `SPILL_SHARE` of the
    spill directory's free disk. InsufficientMemory when fewer than `minimum` columns fit."""
    column = max(dim * itemsize(dtype), 1)
    working = working_bytes(dim, dtype)
    need = working + minimum * column
    if budget_bytes is not None:
        have = int(budget_bytes)
        fits = max(0, (have - working) // column)
        how = "raise memory_budget_bytes"
    else:
        have = memory_available(device)
        fits = max(int(BASIS_SHARE * have) // column, minimum) if need <= have else 0
        how = "free memory on the worker, give it more, or measure fewer parameters (`parameters`)"
    if storage == "file" or (storage == "auto" and fits < asked):
        spilled = _spill_plan(dim, asked, minimum, column, working + column, have, spill_dir)
        if spilled is not None:
            return spilled
        if storage == "file":
            raise InsufficientMemory(
                working + column + minimum * column,
                min(have, int(SPILL_SHARE * free_bytes(spill_dir))),
                f"a spilled Lanczos basis of {minimum} vectors of {dim:,} "
                f"{_dtype_name(dtype)} numbers in {spill_directory(spill_dir)} and its "
                f"working vectors ({_size(working + column)}) in memory",
                "free disk in the spill directory (TMPDIR) or memory on the worker, or use "
                "basis_storage='auto'",
            )
    if fits < minimum:
        raise InsufficientMemory(
            need,
            have,
            f"the Lanczos basis of {minimum} vectors of {dim:,} {_dtype_name(dtype)} numbers "
            f"and its working vectors ({_size(working)})",
            f"{how}; basis_dtype='float32' halves a float64 basis",
        )
    columns = min(asked, int(fits))
    return BasisPlan(columns, have, column, working, limited_by_memory=columns < asked)


def _spill_plan(
    dim: int, asked: int, minimum: int, column: int, working: int, have: int, spill_dir: str | None
) -> BasisPlan | None:
    """The asked-for columns (or as many as the disk holds, at least `minimum`) in a file, the
    working vectors in memory; None when either does not fit."""
    if working > have:
        return None
    on_disk = int(SPILL_SHARE * free_bytes(spill_dir)) // column
    columns = min(asked, on_disk)
    if columns < minimum:
        return None
    return BasisPlan(
        columns,
        have,
        column,
        working,
        limited_by_memory=columns < asked,
        spill=True,
        spill_dir=spill_dir,
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
