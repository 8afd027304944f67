"""The job task's logic in-process against a real Redis: guard, lock, cancel, limits, errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from tasks.contract.spec import JobSpec, JobStatus
from tasks.store.records import JobStore
from tasks.worker.job import execute
from tasks.worker.runtime import WorkerRuntime
from tests import artifacts as A
from tests.worker.blobs import put


def make_job(rt: WorkerRuntime, tmp_path: Path, measures: list, in_features: int = 4, **kw):
    model = A.export(A.mlp(), tmp_path / "m.pt2", 4, torch.float64)
    x, y = A.data(n=32, in_features=in_features)
    npz = A.save_npz(tmp_path / "d.npz", x, y)
    spec = JobSpec.model_validate(
        {
            "model": put(rt.blobs, "models", model, format="torch_export"),
            "dataset": {"id": put(rt.blobs, "datasets", npz, format="npz"), "batch_size": 16},
            "measures": measures,
            **kw,
        }
    )
    return rt.store.create(spec, "cpu")


def test_runs_and_records_everything(rt: WorkerRuntime, tmp_path: Path) -> None:
    job = make_job(
        rt, tmp_path, [{"name": "lambda_max"}, {"name": "frobenius", "params": {"num_hvps": 20}}]
    )
    assert execute(job.id, rt) == "succeeded"
    done = rt.store.get(job.id)
    assert done.status == JobStatus.succeeded and done.attempts == 1
    assert set(done.results) == {"lambda_max", "frobenius"}
    assert done.results["lambda_max"].converged
    assert done.progress["lambda_max"].state == "done" and done.progress["frobenius"].iteration > 0
    # Lanczos reports its residual bound as it goes: the last one is the result's
    lam = done.results["lambda_max"].diagnostics
    assert done.progress["lambda_max"].bound == pytest.approx(lam["residual_bound"], rel=1e-12)
    assert done.progress["frobenius"].bound is None  # a trace estimate has no such bound
    assert done.evaluation["num_examples"] == 32 and 0 <= done.evaluation["accuracy"] <= 1
    assert done.device == "cpu" and done.worker == "test-worker@here"
    assert {"python", "torch", "numpy", "celery", "service"} <= set(done.versions)
    assert rt.store.r.get(f"sharpness:lock:{job.id}") is None  # released
    # a redelivered message of a finished job never runs it again
    assert execute(job.id, rt) == "skipped"
    assert rt.store.get(job.id).attempts == 1


def test_lock_held_by_live_worker(rt: WorkerRuntime, tmp_path: Path) -> None:
    job = make_job(rt, tmp_path, [{"name": "lambda_max"}])
    rt.store.acquire(job.id, "other@host", 60)
    assert execute(job.id, rt) == "locked"
    assert rt.store.get(job.id).status == JobStatus.queued


def test_expired_lock_of_dead_worker_is_taken_over(rt: WorkerRuntime, tmp_path: Path) -> None:
    job = make_job(rt, tmp_path, [{"name": "lambda_max"}])
    rt.store.acquire(job.id, "dead@host", 1)
    assert execute(job.id, rt) == "succeeded"


def test_cancel_before_start(rt: WorkerRuntime, tmp_path: Path) -> None:
    job = make_job(rt, tmp_path, [{"name": "lambda_max"}])
    rt.store.r.hset(rt.store.key(job.id), "cancel_requested", 1)
    assert execute(job.id, rt) == "cancelled"
    assert rt.store.get(job.id).attempts == 0


LONG = [{"name": "lambda_max"}, {"name": "spectral_density", "params": {"runs": 100}}]


def test_cancel_while_running_keeps_partial_results(rt: WorkerRuntime, tmp_path: Path) -> None:
    job = make_job(rt, tmp_path, LONG)

    def cancel_when_running() -> None:
        while rt.store.get(job.id).progress["spectral_density"].state != "running":
            time.sleep(0.05)
        rt.store.request_cancel(job.id)

    t = threading.Thread(target=cancel_when_running)
    t.start()
    assert execute(job.id, rt) == "cancelled"
    t.join()
    done = rt.store.get(job.id)
    assert done.status == JobStatus.cancelled and "lambda_max" in done.results


def test_soft_time_limit(rt: WorkerRuntime, tmp_path: Path) -> None:
    rt.settings.soft_time_limit_s = 1
    job = make_job(rt, tmp_path, [{"name": "spectral_density", "params": {"runs": 100}}])
    assert execute(job.id, rt) == "failed"
    err = rt.store.get(job.id).error
    assert err.title == "Time limit exceeded" and "spectral_density" in err.detail


def test_shape_mismatch_fails_with_shapes(rt: WorkerRuntime, tmp_path: Path) -> None:
    job = make_job(rt, tmp_path, [{"name": "lambda_max"}], in_features=5)
    assert execute(job.id, rt) == "failed"
    err = rt.store.get(job.id).error
    assert err.status == 422 and "(5,) per example" in err.detail


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(rt: WorkerRuntime, tmp_path: Path) -> None:
    job = make_job(rt, tmp_path, [{"name": "lambda_max"}], device="cuda")
    assert execute(job.id, rt) == "failed"
    assert "no CUDA device" in rt.store.get(job.id).error.detail


def test_missing_job_is_skipped(rt: WorkerRuntime) -> None:
    assert execute("0" * 32, rt) == "skipped"
    assert JobStore.from_url(rt.settings.redis_url).get("0" * 32) is None


def test_job_with_adam_state_measures_the_preconditioned_sharpness(
    rt: WorkerRuntime, tmp_path: Path
) -> None:
    """`optimizer_state` on a job reaches preconditioned_lambda_max: λmax(P⁻¹H) against the
    dense P^{-1/2} H P^{-1/2} of the same float64 model."""
    from safetensors.torch import save_file

    from tasks.engine.problem import HessianProblem
    from tests.engine.reference import dense_hessian
    from tests.worker.test_trajectory_job import _adam_run

    xn, yn = A.data(n=32)
    x, y = torch.from_numpy(xn).double(), torch.from_numpy(yn)
    ((model, state),) = _adam_run([7], x, y)
    save_file(state, str(tmp_path / "s.safetensors"))
    sid = put(rt.blobs, "optimizer_states", tmp_path / "s.safetensors")
    spec = JobSpec.model_validate(
        {
            "model": put(
                rt.blobs,
                "models",
                A.export(model, tmp_path / "a.pt2", 4, torch.float64),
                format="torch_export",
            ),
            "dataset": {
                "id": put(
                    rt.blobs, "datasets", A.save_npz(tmp_path / "d.npz", xn, yn), format="npz"
                ),
                "batch_size": 16,
            },
            "optimizer_state": sid,
            "measures": [
                {
                    "name": "preconditioned_lambda_max",
                    "params": {"beta1": 0.9, "beta2": 0.99, "eps": 1e-6, "tol": 1e-9},
                }
            ],
        }
    )
    job = rt.store.create(spec, "cpu")
    assert execute(job.id, rt) == "succeeded", rt.store.get(job.id).error
    H = dense_hessian(HessianProblem(model, [(x, y)]))
    t = float(state["step"])
    v = torch.cat([state[f"exp_avg_sq.{n}"].reshape(-1) for n, _ in model.named_parameters()])
    P = (1 - 0.9**t) * ((v / (1 - 0.99**t)).sqrt() + 1e-6)
    M = H / P.sqrt()[:, None] / P.sqrt()[None, :]
    exact = float(torch.linalg.eigvalsh(0.5 * (M + M.T))[-1])
    got = rt.store.get(job.id).results["preconditioned_lambda_max"].value
    assert got == pytest.approx(exact, rel=1e-7)


def test_a_killed_childs_attempt_is_ended_before_the_next_run(
    rt: WorkerRuntime, tmp_path: Path
) -> None:
    """The record still says running (its child was SIGKILLed, the worker redelivered the
    message): the next run ends that attempt as worker-lost, then runs its own, or fails the
    record once SHARPNESS_MAX_ATTEMPTS runs were started."""
    job = make_job(rt, tmp_path, [{"name": "lambda_max"}])
    rt.store.mark_running(job.id, "killed@host", "cpu", {})
    assert execute(job.id, rt) == "succeeded"
    done = rt.store.get(job.id)
    assert [(a.attempt, a.worker, a.outcome) for a in done.attempt_history] == [
        (1, "killed@host", "worker-lost"),
        (2, rt.hostname, "succeeded"),
    ]

    spent = make_job(rt, tmp_path, [{"name": "lambda_max"}])
    for _ in range(rt.settings.max_attempts):
        rt.store.mark_running(spent.id, "killed@host", "cpu", {})
    assert execute(spent.id, rt) == "failed"
    failed = rt.store.get(spent.id)
    assert failed.status == JobStatus.failed and failed.error.type.endswith(":worker-lost")
    assert failed.attempts == rt.settings.max_attempts


def test_the_evaluation_pass_hears_a_cancel_before_each_batch() -> None:
    """The job's evaluation (before its first measure) stops at a cancel as a measure does:
    Cancelled after no more than one batch, never a "data does not fit" problem."""
    from tasks.engine.cancel import Cancelled
    from tasks.engine.problem import HessianProblem
    from tasks.worker.job import evaluate

    x, y = (torch.from_numpy(a) for a in A.data(n=40, seed=0))
    batches = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 40, 10)]
    problem = HessianProblem(A.mlp(hidden=6), batches, loss="cross_entropy")
    asked: list[int] = []

    def should_cancel() -> bool:
        asked.append(1)
        return len(asked) >= 2  # the second batch is never computed

    with pytest.raises(Cancelled):
        evaluate(problem, "the dataset", should_cancel)
    assert len(asked) == 2
    assert evaluate(problem, "the dataset", lambda: False)["num_examples"] == 40
