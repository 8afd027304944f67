"""One job measured by several processes: `data_parallel` ranks, each with a shard of the data.

The process that runs the job (the worker's task process) starts the ranks with
torch.multiprocessing's *spawn* (never fork: a forked CUDA context is unusable, and the job's
process may have initialised CUDA already). Each rank loads the model and the dataset from the
blob store, keeps its shard (tasks.engine.distributed.shard), joins a process group (gloo on the
CPU, NCCL with one GPU per rank: cuda:0 … cuda:N-1 of the worker's visible devices) and waits
for measures. For each measure every rank runs the same deterministic estimator on all-reduced
products (tasks.engine.distributed); rank 0 sends progress and the result back, and the job
records it like a one-process result, with `diagnostics.world_size`.

`runner(rt, job, device)` gives a callable with tasks.engine.runner.run_measure's signature, so
the job's measure loop, hooks, cancellation and problems are unchanged. The ranks start at the
first measure and end after the last one, or at once when anything goes wrong:

- a rank that raises sends its error, and one that dies (killed, out of memory) is seen by its
  exit code: every rank is ended and the measure fails with that rank's error;
- cancel, drain, a lost lock or the soft time limit (the job's should_cancel) end the ranks;
  a cancel asked for is agreed on by every rank at the same iteration (an all-reduced flag), so
  they stop together and no collective is left waiting;
- a rank whose parent disappeared (the task process was killed) exits within a second;
- the rendezvous (a free TCP port on 127.0.0.1) and every collective have a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import process as mp_process
from multiprocessing.process import BaseProcess
from typing import Any

import torch
import torch.multiprocessing as mp

from tasks.contract.spec import Job
from tasks.engine import distributed
from tasks.engine.cancel import Cancelled
from tasks.engine.distributed import DEFAULT_TIMEOUT_S, DistributedProblem, free_port, shard
from tasks.engine.runner import run_measure
from tasks.settings import Settings
from tasks.store.blobs import BlobStore
from tasks.worker.datasets import fit_inputs_to_model
from tasks.worker.errors import DeviceUnavailable, RunError
from tasks.worker.loading import load_job_model, read_dataset

log = logging.getLogger(__name__)

#: multiprocessing's own process key type (its stubs leave it out)
_AUTHKEY_TYPE: type[bytes] = mp_process.AuthenticationString  # type: ignore[attr-defined]
#: How often the job's process looks at its ranks (replies, exit codes, the cancel flag).
POLL_S = 0.2
#: How long a rank that was asked to stop may take before it is killed.
STOP_GRACE_S = 5.0

#: how long a rank's error waits for a peer's death to show, which it may be the consequence
#: of: a killed rank's sockets close (failing its peers' collectives) a moment before its
#: exit can be collected, longer on a loaded machine
PEER_DEATH_S = 5.0


class RankFailed(Exception):
    """A rank raised or died; the message names the rank and its error."""


# ------------------------------------------------------------------------------- devices
def rank_devices(device: str, world_size: int) -> list[str]:
    """The device of each rank: the CPU for every rank of a CPU job; one GPU per rank for a
    CUDA job (refused with `device-unavailable` when the worker sees fewer GPUs)."""
    if not device.startswith("cuda"):
        return ["cpu"] * world_size
    count = torch.cuda.device_count()
    if count < world_size:
        raise DeviceUnavailable(
            "Not enough GPUs for data_parallel",
            f"data_parallel={world_size} needs {world_size} GPUs (one per process); this "
            f"worker sees {count}. Run the worker with more devices in CUDA_VISIBLE_DEVICES, "
            "or lower data_parallel",
        )
    return [f"cuda:{i}" for i in range(world_size)]


# ------------------------------------------------------------------------------- a rank
def _watch_parent(ppid: int) -> None:
    """End this rank when the process that started it is gone (it was killed)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != ppid:
            os._exit(3)


def _describe(rank: int, e: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rank": rank,
        "type": type(e).__name__,
        "message": str(e),
        "traceback": traceback.format_exc(limit=20),
    }
    if isinstance(e, RunError):
        out["problem"] = (e.title, e.detail, e.status, e.kind)
    return out


@dataclass
class _RankStore:
    """What a rank reads uploads through (tasks.worker.loading.Stored): no Redis."""

    settings: Settings
    blobs: BlobStore


def _load(rank: int, world: int, device: str, payload: dict[str, Any]) -> DistributedProblem:
    """This rank's DistributedProblem: the job's model and its shard of the job's dataset."""
    settings = payload["settings"]
    job = Job.model_validate_json(payload["job"])
    spec = job.spec
    rt = _RankStore(settings=settings, blobs=BlobStore(settings.blob_dir))
    model = load_job_model(rt, job)
    batches, _ = read_dataset(rt, spec, spec.dataset, "dataset", model.dtype)
    fit_inputs_to_model(model, batches, "dataset")  # decoder inputs from the labels, as probe does
    return DistributedProblem(
        model.module,
        shard(batches, rank, world),
        loss=spec.loss,
        mode=spec.mode,
        device=device,
        output_key=spec.output_key,
        class_dim=spec.class_dim,
        dropout_seed=spec.dropout_seed,
    )


def _rank_main(
    rank: int,
    world: int,
    port: int,
    device: str,
    payload: dict[str, Any],
    commands: Any,
    replies: Any,
    cancel: Any,
    ppid: int,
) -> None:
    """A rank: join the group, load, then run each measure the job's process sends (None
    ends it). Rank 0 replies with progress and results; any rank replies with its error."""
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    if device == "cpu":  # the ranks share the cores
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world))
    try:
        distributed.init_group(rank, world, device, port, timeout_s=payload["timeout_s"])
        problem = _load(rank, world, device, payload)
        replies.put(("ready", rank, None))
        while True:
            cmd = commands.get()
            if cmd is None:
                break
            name, params, hvp_backend, initial, state = cmd
            on_progress = None
            if rank == 0:

                def on_progress(info: dict[str, Any]) -> None:
                    replies.put(("progress", 0, info))

            should_cancel = distributed.collective_cancel(problem, cancel.is_set)
            try:
                res = run_measure(
                    problem,
                    name,
                    params,
                    on_progress,
                    should_cancel,
                    hvp_backend,
                    initial_params=initial,
                    optimizer_state=state,
                )
            except Cancelled:
                if rank == 0:
                    replies.put(("cancelled", 0, None))
                continue
            if rank == 0:
                replies.put(("result", 0, res))
    except BaseException as e:  # noqa: BLE001  every error goes back to the job's process
        replies.put(("error", rank, _describe(rank, e)))
    finally:
        distributed.destroy()


# ------------------------------------------------------------------------------- the ranks
class _StandIn(BaseProcess):
    """multiprocessing's main-process record (its _MainProcess), with a given key."""

    def __init__(self, authkey: bytes) -> None:  # noqa: D107  (no BaseProcess.__init__)
        self._identity = ()
        self._name = "MainProcess"
        self._parent_pid = None
        self._popen = None
        self._closed = False
        self._config = {"authkey": _AUTHKEY_TYPE(authkey), "semprefix": "/mp"}


@contextlib.contextmanager
def _may_have_children() -> Iterator[None]:
    """Let the job's process start the ranks when it runs in Celery's prefork pool.

    There the task runs in a billiard child that has made itself multiprocessing's current
    process: daemonic (its pool ends it with the worker; multiprocessing refuses children to a
    daemonic process, lest they be orphaned) and with billiard's own authentication key, which
    the spawn start method cannot pickle. While the ranks are made and started, a plain stand-in
    (not daemonic, the same key) is the current process. The ranks are never orphaned for
    long: each exits within a second of its parent (`_watch_parent`), and the runner ends them
    after the last measure or any failure."""
    me = mp_process._current_process  # type: ignore[attr-defined]
    plain = type(me._config.get("authkey")) is _AUTHKEY_TYPE
    if plain and not me._config.get("daemon"):
        yield
        return
    stand_in = _StandIn(bytes(me.authkey))
    mp_process._current_process = stand_in  # type: ignore[attr-defined]
    try:
        yield
    finally:
        mp_process._current_process = me  # type: ignore[attr-defined]


class Ranks:
    """The started ranks of one job, as the job's process sees them."""

    def __init__(self, devices: list[str], payload: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.world = len(devices)
        self.replies = ctx.Queue()
        self.cancel = ctx.Event()
        self.commands = [ctx.Queue() for _ in devices]
        port = free_port()
        with _may_have_children():
            self.procs = self._start(ctx, devices, payload, port)
        log.info("started %d data-parallel ranks (pids %s)", self.world, self.pids)

    def _start(self, ctx: Any, devices: list[str], payload: dict[str, Any], port: int) -> list:
        procs = [
            ctx.Process(
                target=_rank_main,
                args=(
                    rank,
                    self.world,
                    port,
                    dev,
                    payload,
                    self.commands[rank],
                    self.replies,
                    self.cancel,
                    os.getpid(),
                ),
                name=f"sharpness-rank-{rank}",
                daemon=True,
            )
            for rank, dev in enumerate(devices)
        ]
        for p in procs:
            p.start()
        return procs

    @property
    def pids(self) -> list[int | None]:
        return [p.pid for p in self.procs]

    def _failed(self, info: dict[str, Any]) -> BaseException:
        log.error("data-parallel rank %s failed:\n%s", info["rank"], info["traceback"])
        if "problem" in info:
            title, detail, status, kind = info["problem"]
            return RunError(title, detail, status, kind)
        message = f"rank {info['rank']} of {self.world}: {info['type']}: {info['message']}"
        if info["type"] in ("MemoryError", "OutOfMemoryError"):
            return MemoryError(message)
        if info["type"] == "NotImplementedError":
            return NotImplementedError(message)
        return RankFailed(message)

    def _dead(self, killed_only: bool = False) -> BaseException | None:
        """A rank that ended while a measure was in flight (`killed_only`: by a signal or
        a non-zero exit code; a rank that reported its error exits with 0)."""
        for rank, p in enumerate(self.procs):
            if p.exitcode is not None and (p.exitcode != 0 or not killed_only):
                how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
                return RankFailed(
                    f"rank {rank} of {self.world} (pid {p.pid}) ended with {how} before "
                    "answering (killed, or out of memory)"
                )
        return None

    def _peer_death(self) -> BaseException | None:
        """A rank killed or out of memory, waited for up to PEER_DEATH_S: the cause of the
        error another rank reported, if that error is the consequence of its death."""
        deadline = time.monotonic() + PEER_DEATH_S
        while True:
            dead = self._dead(killed_only=True)
            if dead is not None or time.monotonic() >= deadline:
                return dead
            time.sleep(0.05)

    def _last_word(self) -> BaseException | None:
        """The error a rank sent just before it ended, if it is still on its way."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                kind, _, body = self.replies.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "error":
                return self._failed(body)
        return None

    def measure(
        self,
        name: str,
        params: Any,
        hvp_backend: str,
        initial: Any,
        state: Any,
        on_progress: Any,
        should_cancel: Any,
    ) -> dict[str, Any]:
        """Run measure `name` on every rank; rank 0's result. Raises Cancelled when a cancel
        was agreed on, the rank's error when one failed, whatever should_cancel raises."""
        self.cancel.clear()
        for q in self.commands:
            q.put((name, params, hvp_backend, initial, state))
        while True:
            try:
                kind, _, body = self.replies.get(timeout=POLL_S)
            except queue.Empty:
                kind, body = None, None
            if kind == "result":
                return body
            if kind == "progress" and on_progress is not None:
                on_progress(body)
            elif kind == "cancelled":
                raise Cancelled("cancelled by request")
            elif kind == "error":
                # a peer that died makes the others' collectives fail: name the one that died
                raise self._peer_death() or self._failed(body)
            if kind is None:
                dead = self._dead()
                if dead is not None:  # a killed rank is the cause; else what it last said
                    raise self._dead(killed_only=True) or self._last_word() or dead
            if should_cancel is not None and should_cancel():
                self.cancel.set()  # every rank stops at its next iteration

    def close(self) -> None:
        """End every rank: ask, then terminate, then kill; never waits unbounded."""
        for q in self.commands:
            try:
                q.put_nowait(None)
            except Exception:  # noqa: BLE001  a broken queue: the ranks are ended below
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(STOP_GRACE_S)
            if p.is_alive():
                p.kill()
                p.join(STOP_GRACE_S)
        for q in [self.replies, *self.commands]:
            q.cancel_join_thread()
            q.close()


class ParallelRunner:
    """run_measure's signature, each call run by the job's `data_parallel` ranks.

    `problem` (the job process's own, whole-data problem) is used only to check the dataset
    holds an example per rank; initial parameters and optimizer state are sent to the ranks."""

    def __init__(self, rt: Any, job: Job, device: str) -> None:
        self.world = job.spec.data_parallel
        self.devices = rank_devices(device, self.world)
        self.last = job.spec.measures[-1].name
        self.payload = {
            "settings": rt.settings,
            "job": job.model_dump_json(),
            "timeout_s": DEFAULT_TIMEOUT_S,
        }
        self.ranks: Ranks | None = None

    def __call__(
        self,
        problem: Any,
        name: str,
        params: Any = None,
        on_progress: Any = None,
        should_cancel: Any = None,
        hvp_backend: str = "auto",
        *,
        initial_params: Any = None,
        optimizer_state: Any = None,
    ) -> dict[str, Any]:
        if problem.num_examples < self.world:
            raise RunError(
                "Too few examples for data_parallel",
                f"data_parallel={self.world} needs at least one example per process; the "
                f"dataset holds {problem.num_examples}",
            )
        try:
            if self.ranks is None:
                self.ranks = Ranks(self.devices, self.payload)
            result = self.ranks.measure(
                name,
                params,
                hvp_backend,
                _host(initial_params),
                _host(optimizer_state),
                on_progress,
                should_cancel,
            )
        except BaseException:
            self.close()
            raise
        if name == self.last:
            self.close()
        return result

    def close(self) -> None:
        if self.ranks is not None:
            ranks, self.ranks = self.ranks, None
            ranks.close()

    def __del__(self) -> None:
        self.close()


def _host(tensors: dict[str, Any] | None) -> dict[str, Any] | None:
    """Tensors sent to the ranks go through host shared memory."""
    if tensors is None:
        return None
    return {k: v.detach().cpu() for k, v in tensors.items()}


def runner(rt: Any, job: Job, device: str) -> ParallelRunner:
    """The measure call of a job with `data_parallel` > 1 (see ParallelRunner)."""
    return ParallelRunner(rt, job, device)
