"""`python -m bench.cancel_latency`: how long a cancel takes to stop a running job, per measure,
and how long the worker takes to answer `inspect active` while it computes.

Starts its own redis-server and one real worker (`python -m tasks.worker`: prefork pool, one
child), stores an MLP (float32, `--width` hidden units, two hidden layers) and `--examples`
examples in batches of `--batch`, sized so that one Hessian-vector product takes a second or
more (the time of one product, measured in this process with the child's torch threads, is
printed first). For each measure
kind (every registered measure; trace with each method; lambda_max per layer) it submits a
job that would run for minutes, waits until the record shows that measure running and then
`--into` seconds more (so the cancel lands mid-product), asks to cancel as the gateway does
(`RecordStore.request_cancel`) and times until the record reads `cancelled`.

During the first job it also times `app.control.inspect(timeout=…, limit=1).active()` (the
reply of the worker's main process, which must list the job) `--inspects` times.

The worker's child checks the cancel flag before each batch's forward pass and each backward
pass through a gradient graph (tasks.engine.cancel), and reads it from Redis at most every
0.5 s (tasks.worker.run.CANCEL_CHECK_EVERY_S): so the bound is about 0.5 s plus one batch's
forward or backward pass plus the final write. Torch kernels are not interruptible: one
batch's pass is the granularity. Prints a table; `--max-s` (default 2) is the bound it
checks: the exit status is 1 when any cancel or inspect took longer.
"""

# ruff: noqa: I001  (tasks.worker is imported before torch: it sets the weights-only guard)
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.worker.process import compute_threads
from tasks.worker.runtime import WorkerRuntime

import numpy as np
import torch
from torch import nn

from tasks.app import RUN_JOB_TASK, RUN_TRAJECTORY_TASK, make_celery
from tasks.store.local_redis import PrivateRedis
from tasks.settings import Settings
from tasks.contract.spec import JobSpec, JobStatus, TrajectorySpec
from tasks.store.trajectories import TrajectoryStore

ROOT = Path(__file__).resolve().parents[1]
MINUTES = 100_000  # iterations/products: far more than a run gets through before the cancel

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("lambda_max", "lambda_max", {"max_iter": 2_000, "tol": 1e-30}),
    ("lambda_max per_layer", "lambda_max", {"max_iter": 2_000, "tol": 1e-30, "per_layer": True}),
    ("top_eigenvalues", "top_eigenvalues", {"k": 5, "max_iter": 2_000, "tol": 1e-30}),
    ("trace hutchinson", "trace", {"method": "hutchinson", "num_hvps": MINUTES, "rtol": None}),
    ("trace hutch++", "trace", {"method": "hutch++", "num_hvps": 60, "rtol": None}),
    ("trace xtrace", "trace", {"method": "xtrace", "num_hvps": 60, "rtol": None}),
    ("trace krylov", "trace", {"method": "krylov", "num_hvps": 3_000, "rtol": None}),
    ("frobenius", "frobenius", {"num_hvps": MINUTES, "rtol": None}),
    ("spectral_density", "spectral_density", {"runs": 50, "steps": 200}),
    ("adaptive_sharpness", "adaptive_sharpness", {"iterations": 2_000, "restarts": 50}),
    ("pacbayes_flatness", "pacbayes_flatness", {"samples": 1_000, "depth": 50}),
    ("pacbayes_mag_flatness", "pacbayes_mag_flatness", {"samples": 1_000, "depth": 50}),
    ("pacbayes_orig", "pacbayes_orig", {"samples": 1_000, "depth": 50}),
    ("pacbayes_bound", "pacbayes_bound", {"samples": 1_000, "grid_size": 64}),
    ("output_margin", "output_margin", {}),
    ("weight_norms", "weight_norms", {}),
    ("preconditioned_lambda_max", "preconditioned_lambda_max", {"max_iter": 2_000, "tol": 1e-30}),
    ("trajectory", "trajectory", {"k": 5, "max_iter": 2_000, "tol": 1e-30}),
]


def make_model(width: int, inputs: int, classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(inputs, width),
        nn.Tanh(),
        nn.Linear(width, width),
        nn.Tanh(),
        nn.Linear(width, classes),
    )


def product_seconds(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Seconds of one Hessian-vector product over the whole dataset, in this process."""
    from tasks.engine.operator import HessianOperator
    from tasks.engine.problem import HessianProblem

    t = torch.from_numpy
    batches = [(t(x[i : i + batch]), t(y[i : i + batch])) for i in range(0, len(x), batch)]
    op = HessianOperator(HessianProblem(model, batches))
    v = torch.randn(op.dim, dtype=torch.float64)
    op.matvec(v)  # builds what the operator keeps
    start = time.perf_counter()
    op.matvec(v)
    return time.perf_counter() - start


def put(rt: WorkerRuntime, kind: str, path: Path, **meta: object) -> str:
    record, _ = rt.blobs.put_chunks(
        kind, [path.read_bytes()], 1 << 34, {"filename": path.name, **meta}
    )
    return record["id"]


def spec_for(model: str, data: str, batch: int, name: str, params: dict[str, Any]) -> JobSpec:
    body: dict[str, Any] = {
        "model": model,
        "dataset": {"id": data, "batch_size": batch},
        "measures": [{"name": name, "params": params}],
    }
    if name in ("pacbayes_bound", "weight_norms"):
        body["initial_model"] = model
    if name == "preconditioned_lambda_max":
        body["optimizer_state"] = OPTIMIZER_STATE
    return JobSpec.model_validate(body)


OPTIMIZER_STATE = ""  # set in main when the measure is run


def wait(store: Any, job_id: str, until: Any, proc: subprocess.Popen, timeout_s=600):
    deadline = time.monotonic() + timeout_s
    while not until(job := store.get(job_id)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker exited or timed out; job {job}")
        time.sleep(0.01)
    return job


def measuring(record: Any, name: str) -> bool:
    if record.status != JobStatus.running:
        return False
    if name == "trajectory":  # a list, one entry per checkpoint
        return any(p.state == "running" for p in record.progress)
    return record.progress[name].state == "running"


def time_inspect(app: Any, job_id: str, n: int) -> list[tuple[float, bool]]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        replies = app.control.inspect(timeout=10.0, limit=1).active() or {}
        seconds = time.perf_counter() - start
        listed = any(t["id"] == job_id for tasks in replies.values() for t in tasks)
        out.append((seconds, listed))
        time.sleep(0.5)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1536)
    ap.add_argument("--inputs", type=int, default=512)
    ap.add_argument("--examples", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--into", type=float, default=1.5, help="seconds into the measure")
    ap.add_argument("--inspects", type=int, default=10)
    ap.add_argument("--max-s", type=float, default=2.0)
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    a = ap.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="cancel-bench-"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.examples, a.inputs)).astype(np.float32)
    y = rng.integers(0, 10, a.examples).astype(np.int64)
    model = make_model(a.width, a.inputs, 10)
    torch.set_num_threads(compute_threads())  # as the worker's child computes
    print(
        f"one product: {product_seconds(model, x, y, a.batch):.2f} s "
        f"({sum(p.numel() for p in model.parameters()):,} parameters, {a.examples} examples "
        f"in batches of {a.batch})",
        flush=True,
    )

    server = PrivateRedis(tmp / "redis", aof=False).start()
    url = server.url
    env = {
        **os.environ,
        "SHARPNESS_REDIS_URL": url,
        "SHARPNESS_DATA_DIR": str(tmp),
        "SHARPNESS_HEARTBEAT_S": "1",
        "SHARPNESS_WORKER_QUEUES": "cpu",
        "SHARPNESS_WORKER_NAME": "bench@cancel",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    failures = 0
    try:
        rt = WorkerRuntime.create("bench@client", Settings(redis_url=url, data_dir=tmp))
        while "ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                raise SystemExit(log.read_text())
            time.sleep(0.2)
        ex = torch.export.export(
            model.eval(),
            (torch.zeros(4, a.inputs),),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        torch.export.save(ex, str(tmp / "m.pt2"))
        np.savez(tmp / "d.npz", inputs=x, targets=y)
        model_id = put(rt, "models", tmp / "m.pt2", format="torch_export")
        data_id = put(rt, "datasets", tmp / "d.npz", format="npz")
        global OPTIMIZER_STATE
        from safetensors.torch import save_file

        state = {f"exp_avg_sq.{n}": torch.rand_like(p) for n, p in model.named_parameters()}
        save_file({**state, "step": torch.tensor([100.0])}, str(tmp / "adam.safetensors"))
        OPTIMIZER_STATE = put(rt, "optimizer_states", tmp / "adam.safetensors")

        app = make_celery(rt.settings)
        rows = []
        for label, name, params in CASES:
            if a.only and label not in a.only:
                continue
            if name == "trajectory":  # two checkpoints, each a Lanczos run of minutes
                store: Any = TrajectoryStore(rt.store.r)
                body = {
                    "checkpoints": [{"model": model_id, "learning_rate": 0.1}] * 2,
                    "dataset": {"id": data_id, "batch_size": a.batch},
                    **params,
                }
                job_id = store.create(TrajectorySpec.model_validate(body), "cpu").id
                task = RUN_TRAJECTORY_TASK
            else:
                store = rt.store
                spec = spec_for(model_id, data_id, a.batch, name, params)
                job_id = store.create(spec, "cpu").id
                task = RUN_JOB_TASK
            app.send_task(task, args=[job_id], task_id=job_id, queue="cpu")
            wait(store, job_id, lambda j, n=name: j.status.terminal or measuring(j, n), proc)
            if not rows and a.inspects:
                timings = time_inspect(app, job_id, a.inspects)
                secs = [s for s, _ in timings]
                listed = all(ok for _, ok in timings)
                print(
                    f"inspect active while computing: median {statistics.median(secs):.3f} s, "
                    f"max {max(secs):.3f} s over {len(secs)}; job listed every time: {listed}",
                    flush=True,
                )
                failures += max(secs) > a.max_s or not listed
            else:  # a measure of one pass over the data is cancelled as soon as it runs
                time.sleep(0.0 if name in ("output_margin", "weight_norms") else a.into)
            job = store.get(job_id)
            if job.status.terminal:
                why = f": {job.error.detail}" if job.error else ""
                print(f"{label:28s} ended {job.status.value} before the cancel{why}", flush=True)
                rows.append((label, None))
                continue
            start = time.monotonic()
            store.request_cancel(job_id)
            done = wait(store, job_id, lambda j: j.status.terminal, proc)
            seconds = time.monotonic() - start
            # a measure that ended on its own meanwhile had nothing left to stop
            ended = done.status in (JobStatus.cancelled, JobStatus.succeeded)
            ok = ended and seconds <= a.max_s
            failures += not ok
            rows.append((label, seconds))
            why = f" ({done.error.detail})" if done.error else ""
            print(f"{label:28s} {done.status.value:10s} {seconds:6.2f} s{why}", flush=True)
        measured = [s for _, s in rows if s is not None]
        if measured:  # succeeded meanwhile: counted too (the time until the record ended)
            print(
                f"cancel → cancelled: median {statistics.median(measured):.2f} s, "
                f"max {max(measured):.2f} s over {len(measured)} measure kinds; "
                f"load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
