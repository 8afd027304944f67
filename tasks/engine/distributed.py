"""One measure across several processes: the data sharded, every sum over it all-reduced.

The objective is the mean loss over every counted target of the whole dataset (tasks.engine.
problem): L = Σ_b (m_b / M) ℓ_b with M the counted targets of all ranks together. Each rank
holds a shard of the batches and weights its own batches by m_b / M, the GLOBAL M, so its loss,
gradient and Hessian-vector products are partial sums whose sum over ranks is exactly the
one-process value. `DistributedProblem` all-reduces those partial sums (torch.distributed,
SUM): `evaluate` (loss, accuracy), `gradient`, and every product of the operator a measure
asks for (`across_ranks` wraps it in `AllReducedOperator`).

Every rank then runs the same deterministic estimator (Lanczos, Hutchinson, SLQ: probes come
from CPU generators seeded with the measure's seed) on identical all-reduced products, so the
ranks stay in step and agree; rank 0 reports. The only difference from one process is the order
in which float64 partial sums are added: the answers agree to float64 rounding.

Sharding (`shard`) keeps the single-process batches whenever there are at least as many batches
as ranks: contiguous runs of whole batches, balanced by examples. With fewer batches than ranks
the examples are split contiguously into near-equal ranges, each cut at the original batch
edges. A lazily read dataset (tasks.engine.batches.BatchSource) stays lazy: a shard reads only
its own rows.

Process-group helpers (`init_group`, `free_port`, `destroy`) set up gloo on CPU or NCCL with one
GPU per rank, with a timeout on the rendezvous and on every collective. No Celery, Redis or
FastAPI here: the worker starts the ranks (tasks.worker.parallel).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from tasks.engine.batches import BatchSource
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.problem import Batch, HessianProblem

__all__ = [
    "AllReducedOperator",
    "DistributedProblem",
    "ShardSource",
    "backend_for",
    "collective_cancel",
    "destroy",
    "free_port",
    "init_group",
    "shard",
    "shard_ranges",
]

#: Rendezvous and per-collective timeout. A collective waits at most this long for a slow or
#: dead peer; the worker watches its ranks and ends them all as soon as one fails.
DEFAULT_TIMEOUT_S = 1800.0


# ----------------------------------------------------------------------------- process group
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (bound to port 0 and released) for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def backend_for(device: str | torch.device) -> str:
    """NCCL for CUDA (one GPU per rank), gloo on the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_group(
    rank: int,
    world_size: int,
    device: str | torch.device,
    master_port: int,
    master_addr: str = "127.0.0.1",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Join the default process group as `rank` of `world_size` (TCP rendezvous on
    master_addr:master_port); CUDA ranks first make their own GPU the current device."""
    device = torch.device(device)
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    dist.init_process_group(
        backend_for(device),
        init_method=f"tcp://{master_addr}:{master_port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
        **kwargs,
    )


def destroy() -> None:
    """Leave the default process group, if joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _all_sum(t: Tensor, group: Any = None) -> Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


# ----------------------------------------------------------------------------- sharding
def shard_ranges(sizes: Sequence[int], rank: int, world_size: int) -> list[tuple[int, int]]:
    """The example ranges [start, stop) that rank `rank` of `world_size` holds, given the
    single-process batch sizes: whole batches when there are at least as many batches as ranks
    (contiguous runs balanced by examples), else a near-equal contiguous split of the examples
    cut at the batch edges. Every example belongs to exactly one rank."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    edges = [0]
    for n in sizes:
        edges.append(edges[-1] + int(n))
    total = edges[-1]
    if total < world_size:
        raise ValueError(
            f"data_parallel={world_size} needs at least one example per process; the dataset "
            f"holds {total}"
        )
    if len(sizes) >= world_size:
        # rank r takes the batches whose first example falls in its equal share of examples;
        # every rank gets at least one batch (a batch per rank at the least)
        cut = [0]
        for r in range(1, world_size):
            target = total * r / world_size
            i = min(
                range(cut[-1] + 1, len(sizes) - (world_size - r) + 1),
                key=lambda j: abs(edges[j] - target),
            )
            cut.append(i)
        cut.append(len(sizes))
        return [(edges[i], edges[i + 1]) for i in range(cut[rank], cut[rank + 1])]
    start = total * rank // world_size
    stop = total * (rank + 1) // world_size
    return [
        (max(a, start), min(b, stop))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
        if min(b, stop) > max(a, start)
    ]


class ShardSource(BatchSource):
    """The rows of a BatchSource that one rank holds, in batches cut at `ranges`: still read
    lazily, one batch when it is used."""

    def __init__(self, source: BatchSource, ranges: Sequence[tuple[int, int]]) -> None:
        rows = sum(b - a for a, b in ranges)
        super().__init__(
            size=rows,
            batch_size=max(b - a for a, b in ranges),
            read=source._read,
            read_targets=source._read_targets,
            nbytes=source.nbytes * rows // max(source.size, 1),
        )
        self.ranges = list(ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def _bounds(self, index: int) -> tuple[int, int]:
        return self.ranges[index]


def shard(
    batches: Sequence[Batch | tuple[Any, Tensor]], rank: int, world_size: int
) -> Sequence[Batch]:
    """Rank `rank`'s share of `batches` (see `shard_ranges`): a list of Batch for a list, a
    lazy ShardSource for a BatchSource."""
    if isinstance(batches, BatchSource):
        return ShardSource(batches, shard_ranges(batches.sizes(), rank, world_size))
    whole = [b if isinstance(b, Batch) else Batch(inputs=b[0], targets=b[1]) for b in batches]
    sizes = [b.size for b in whole]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    out = []
    for a, b in shard_ranges(sizes, rank, world_size):
        i = max(j for j, s in enumerate(starts) if s <= a)
        piece = whole[i]
        lo, hi = a - starts[i], b - starts[i]
        out.append(piece if (lo, hi) == (0, piece.size) else piece.slice(lo, hi))
    return out


# ----------------------------------------------------------------------------- the operator
class AllReducedOperator:
    """A rank's operator whose products are summed over every rank: with each rank's batches
    weighted by m_b / M (global M), the sum is the whole dataset's product. Every rank must
    call matvec/matmat the same number of times, in the same order (they run the same
    deterministic estimator). Other attributes (backend, graph_estimate) are the local
    operator's."""

    def __init__(self, inner: LinearOperator, group: Any = None) -> None:
        self.inner = inner
        self.group = group
        self.dim = inner.dim
        self.dtype = inner.dtype
        self.device = inner.device
        self.reductions = 0

    @property
    def hvps(self) -> int:
        return self.inner.hvps

    @property
    def seconds(self) -> float:
        return self.inner.seconds

    def matvec(self, v: Tensor) -> Tensor:
        self.reductions += 1
        return _all_sum(self.inner.matvec(v).contiguous(), self.group)

    def matmat(self, V: Tensor) -> Tensor:
        self.reductions += 1
        return _all_sum(self.inner.matmat(V).contiguous(), self.group)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)


# ----------------------------------------------------------------------------- the problem
class DistributedProblem(HessianProblem):
    """A HessianProblem over this rank's shard whose sums are taken over every rank.

    Build it on every rank of an initialised process group with that rank's shard (`shard`);
    `num_examples`, `num_targets` and the batch weights are those of the whole dataset, and
    `local_examples` / `local_targets` this rank's. `world_size` and `rank` say where it runs."""

    def __init__(
        self,
        model: object,
        batches: Sequence[Any],
        loss: Any = "cross_entropy",
        mode: Any = "eval",
        parameters: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        *,
        group: Any = None,
        **kwargs: Any,
    ) -> None:
        if not dist.is_initialized():
            raise RuntimeError("DistributedProblem needs an initialised torch.distributed group")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        super().__init__(
            model=model,
            batches=batches,
            loss=loss,
            mode=mode,
            parameters=parameters,
            device=device,
            **kwargs,
        )

    def _totals(self, examples: int, targets: int) -> tuple[int, int]:
        """Counts of the whole dataset: this rank's summed over every rank (exact integers)."""
        self.local_examples, self.local_targets = examples, targets
        t = torch.tensor([examples, targets], dtype=torch.int64, device=self.device)
        _all_sum(t, self.group)
        return int(t[0]), int(t[1])

    def all_sum(self, t: Tensor) -> Tensor:
        """`t` (this rank's partial sum) summed over every rank, in place."""
        return _all_sum(t.contiguous(), self.group)

    def across_ranks(self, operator: LinearOperator) -> LinearOperator:
        return AllReducedOperator(operator, self.group)

    def evaluate(self) -> dict[str, float | None]:
        """Loss and accuracy of the whole dataset: with global weights and the global count
        of targets, each rank's figures are partial sums."""
        ev = super().evaluate()
        acc = ev["accuracy"]
        t = torch.tensor(
            [float(ev["loss"]), 0.0 if acc is None else float(acc)],  # type: ignore[arg-type]
            dtype=torch.float64,
            device=self.device,
        )
        self.all_sum(t)
        return {"loss": float(t[0]), "accuracy": None if acc is None else float(t[1])}

    def gradient(self) -> Tensor:
        return self.all_sum(super().gradient())

    def agree(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (a collective: call it on all)."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t.item())


def collective_cancel(
    problem: DistributedProblem, local: Callable[[], bool] | None
) -> Callable[[], bool]:
    """A should_cancel every rank answers alike: each rank's own answer (rank 0 usually asks
    the caller; others pass None) reduced with MAX, so all stop at the same step."""

    def should_cancel() -> bool:
        return problem.agree(bool(local()) if local is not None else False)

    return should_cancel
