"""Jobs with `data_parallel`: two gloo ranks on the CPU give the one-process results (λmax,
top-k, trace with the same seed, the evaluation) to float64 rounding, in the job's own process
and through a real `python -m tasks.worker`; a rank that dies fails the job at once and takes
the other ranks with it; a cancel stops every rank; the spec refuses what cannot be split."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from tasks.app import RUN_JOB_TASK, make_celery
from tasks.contract.spec import JobSpec, JobStatus
from tasks.settings import Settings
from tasks.worker.errors import DeviceUnavailable
from tasks.worker.job import execute
from tasks.worker.parallel import rank_devices
from tasks.worker.runtime import WorkerRuntime
from tests import artifacts as A
from tests.processes import spawn_worker, stop, worker_env
from tests.worker.blobs import put

REL = 1e-10
MEASURES = [
    {"name": "lambda_max", "params": {"tol": 1e-10}},
    {"name": "top_eigenvalues", "params": {"k": 3, "tol": 1e-10}},
    {"name": "trace", "params": {"method": "hutchinson", "num_hvps": 30, "seed": 5}},
]


@pytest.fixture
def rt(redis_url: str, tmp_path: Path) -> WorkerRuntime:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, heartbeat_s=1)
    return WorkerRuntime.create(f"dp-{uuid.uuid4().hex[:6]}@test", settings)


def inputs(rt: WorkerRuntime, tmp_path: Path, n: int = 45) -> dict[str, Any]:
    """A float64 MLP and a dataset of n examples in uneven batches of 16."""
    model = A.export(A.mlp(hidden=10), tmp_path / "m.pt2", 4, torch.float64)
    x, y = A.data(n=n, seed=1)
    npz = A.save_npz(tmp_path / "d.npz", x, y)
    return {
        "model": put(rt.blobs, "models", model, format="torch_export"),
        "dataset": {"id": put(rt.blobs, "datasets", npz, format="npz"), "batch_size": 16},
    }


def submit(rt: WorkerRuntime, base: dict[str, Any], measures: list, **kw: Any) -> str:
    spec = JobSpec.model_validate({**base, "measures": measures, "device": "cpu", **kw})
    return rt.store.create(spec, "cpu").id


def assert_same(one: Any, par: Any) -> None:
    """One-process and two-rank results agree to float64 rounding."""
    for m in MEASURES:
        a, b = one.results[m["name"]], par.results[m["name"]]
        assert a.diagnostics["world_size"] == 1 and b.diagnostics["world_size"] == 2
        va, vb = (
            torch.tensor(a.value, dtype=torch.float64),
            torch.tensor(b.value, dtype=torch.float64),
        )
        scale = float(va.abs().max())
        assert float((va - vb).abs().max()) <= REL * scale, (m["name"], a.value, b.value)
        assert a.hvps == b.hvps
    assert par.evaluation["num_examples"] == one.evaluation["num_examples"]
    assert par.evaluation["loss"] == pytest.approx(one.evaluation["loss"], rel=REL)


def rank_pids(parent: int) -> list[int]:
    """Processes started by `parent` with multiprocessing's spawn (the ranks)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.append(int(entry))
    return out


def wait_until(cond, timeout_s: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


# ------------------------------------------------------------------------------- in-process
def test_two_ranks_equal_one_process_in_the_job(rt: WorkerRuntime, tmp_path: Path) -> None:
    base = inputs(rt, tmp_path)
    one_id = submit(rt, base, MEASURES)
    par_id = submit(rt, base, MEASURES, data_parallel=2)
    assert execute(one_id, rt) == "succeeded"
    assert execute(par_id, rt) == "succeeded"
    one, par = rt.store.get(one_id), rt.store.get(par_id)
    assert_same(one, par)
    assert par.progress["trace"].state == "done" and par.progress["lambda_max"].iteration > 0
    wait_until(lambda: not rank_pids(os.getpid()), 30, "ranks left running")


def start_long_job(rt: WorkerRuntime, tmp_path: Path) -> tuple[str, threading.Thread, list[str]]:
    """A two-rank job that runs until stopped, executing on a thread, once it has progressed;
    returns its id, the thread and the list its outcome is appended to."""
    base = inputs(rt, tmp_path, n=64)
    long = [{"name": "trace", "params": {"method": "hutchinson", "num_hvps": 100000}}]
    job_id = submit(rt, base, long, data_parallel=2)
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(execute(job_id, rt)))
    worker.start()
    wait_until(lambda: (p := rt.store.get(job_id).progress.get("trace")) is not None
               and p.iteration > 5, what="no progress")  # fmt: skip
    return job_id, worker, outcome


def test_a_killed_rank_fails_the_job_and_ends_the_others(rt: WorkerRuntime, tmp_path: Path) -> None:
    job_id, worker, outcome = start_long_job(rt, tmp_path)
    pids = rank_pids(os.getpid())
    assert len(pids) == 2
    os.kill(max(pids), signal.SIGKILL)  # the rank started last: rank 1
    worker.join(60)
    assert outcome == ["failed"]
    job = rt.store.get(job_id)
    assert job.status == JobStatus.failed
    assert "rank 1 of 2" in job.error.detail and "signal 9" in job.error.detail
    wait_until(lambda: not rank_pids(os.getpid()), 30, "ranks left running")


def test_cancel_stops_every_rank(rt: WorkerRuntime, tmp_path: Path) -> None:
    job_id, worker, outcome = start_long_job(rt, tmp_path)
    rt.store.set_fields(job_id, cancel_requested=1)
    worker.join(60)
    assert outcome == ["cancelled"]
    assert rt.store.get(job_id).status == JobStatus.cancelled
    wait_until(lambda: not rank_pids(os.getpid()), 30, "ranks left running")


def test_more_ranks_than_examples_is_a_problem(rt: WorkerRuntime, tmp_path: Path) -> None:
    base = inputs(rt, tmp_path, n=3)
    job_id = submit(rt, base, MEASURES[:1], data_parallel=4)
    assert execute(job_id, rt) == "failed"
    err = rt.store.get(job_id).error
    assert err.status == 422 and err.type.endswith("invalid-input")
    assert "one example per process" in err.detail


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this worker has two GPUs")
def test_cuda_ranks_need_as_many_gpus() -> None:
    assert rank_devices("cpu", 3) == ["cpu"] * 3
    with pytest.raises(DeviceUnavailable) as e:
        rank_devices("cuda:0", 2)
    assert e.value.kind == "device-unavailable" and e.value.status == 503
    assert "needs 2 GPUs" in e.value.detail


def test_spec_field() -> None:
    base = {"model": "a" * 64, "dataset": {"id": "b" * 64}}
    assert JobSpec.model_validate({**base, "measures": [{"name": "trace"}]}).data_parallel == 1
    with pytest.raises(ValidationError):
        JobSpec.model_validate({**base, "measures": [{"name": "trace"}], "data_parallel": 0})
    with pytest.raises(ValidationError, match="adaptive_sharpness"):
        JobSpec.model_validate(
            {**base, "measures": [{"name": "adaptive_sharpness"}], "data_parallel": 2}
        )
    # the SDK sends the field only when given
    from sharpness_client._spec import build_spec

    assert "data_parallel" not in build_spec("a" * 64, "b" * 64, ["trace"]).model_dump(
        exclude_unset=True
    )
    sent = build_spec("a" * 64, "b" * 64, ["trace"], data_parallel=2)
    assert sent.model_dump(exclude_unset=True)["data_parallel"] == 2
    assert JobSpec.model_validate(sent.model_dump(exclude_unset=True)).data_parallel == 2


# ------------------------------------------------------------------------------- a real worker
def test_through_a_real_worker(rt: WorkerRuntime, tmp_path: Path) -> None:
    """`python -m tasks.worker` takes both jobs from the queue; its task process starts the
    ranks."""
    base = inputs(rt, tmp_path)
    log = tmp_path / "worker.log"
    proc = spawn_worker(worker_env(rt.settings.redis_url, rt.settings.data_dir), log)
    try:
        app = make_celery(rt.settings)
        ids = [submit(rt, base, MEASURES), submit(rt, base, MEASURES, data_parallel=2)]
        for job_id in ids:
            app.send_task(RUN_JOB_TASK, args=[job_id], task_id=job_id, queue="cpu")

        def finished() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited\n{log.read_text()[-4000:]}")
            return all(rt.store.get(i).status.terminal for i in ids)

        wait_until(finished, 240, f"jobs not finished\n{log.read_text()[-4000:]}")
        one, par = (rt.store.get(i) for i in ids)
        assert par.status == JobStatus.succeeded, (par.error, log.read_text()[-4000:])
        assert_same(one, par)
    finally:
        stop(proc)


def test_ranks_make_decoder_inputs_from_the_labels(rt: WorkerRuntime, tmp_path: Path) -> None:
    """A T5 checkpoint and a dataset with no decoder inputs (input_ids, attention_mask and
    -100-padded labels): each rank shifts the labels into decoder inputs as the one-process job
    does, so two ranks measure the one-process λmax."""
    import numpy as np

    from tests import hf_checkpoints as H
    from tests import hf_seq2seq as S

    folder = H.save(S.t5(seed=4), tmp_path / "t5")
    (tmp_path / "t5.zip").write_bytes(H.zip_folder(folder))
    arrays = S.seq2seq_arrays(S.t5(seed=4), n=6)
    kept = {k: v for k, v in arrays.items() if not k.startswith("decoder_")}
    np.savez(tmp_path / "s2s.npz", **kept)
    base = {
        "model": put(rt.blobs, "models", tmp_path / "t5.zip", format="huggingface"),
        "dataset": {
            "id": put(rt.blobs, "datasets", tmp_path / "s2s.npz", format="npz"),
            "batch_size": 2,
        },
    }
    measures = [{"name": "lambda_max", "params": {"seed": 3}}]
    one_id = submit(rt, base, measures)
    par_id = submit(rt, base, measures, data_parallel=2)
    assert execute(one_id, rt) == "succeeded", rt.store.get(one_id).error
    assert execute(par_id, rt) == "succeeded", rt.store.get(par_id).error
    one, par = rt.store.get(one_id), rt.store.get(par_id)
    a, b = one.results["lambda_max"], par.results["lambda_max"]
    assert b.diagnostics["world_size"] == 2 and a.converged and b.converged
    tol = 4 * max(a.diagnostics["error_estimate"], b.diagnostics["error_estimate"])
    assert abs(a.value - b.value) <= tol, (a.value, b.value, tol)
    wait_until(lambda: not rank_pids(os.getpid()), 30, "ranks left running")
