"""Log a finished job or trajectory to the active MLflow run (`pip install
'sharpness-client[mlflow]'`), so sharpness sits next to the training run's own metrics:

    with mlflow.start_run():
        job = client.measure(model, data, measures=["lambda_max", "trace"])
        log_to_mlflow(job, client)

What is logged, under `prefix` ("sharpness." by default):
- metrics: each result whose value is a number (`sharpness.lambda_max`), its error bar
  (`.low` and `.high` from the 95% interval, or `.error_estimate`), a list value one step per
  entry (top_eigenvalues), the evaluation's loss, accuracy and gap; for a trajectory, λmax,
  the stability ratio, loss and accuracy at each checkpoint's step;
- params: each measure's parameters (`sharpness.lambda_max.max_iter`), the model and dataset
  ids, the loss and mode;
- tags: `sharpness.job_id` (or `sharpness.trajectory_id`) and `sharpness.url`, the service;
- artifacts, under `sharpness/`: the spectral density PNG of a job with a spectral_density
  result, the trajectory PNG of a trajectory (with `client`; the service draws them).

MLflow is imported on the first call only: the SDK itself does not depend on it.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sharpness_client.client import Client
from sharpness_client.types import Job, MeasureResult, Trajectory

ARTIFACT_DIR = "sharpness"


def log_to_mlflow(
    record: Job | Trajectory,
    client: Client | None = None,
    *,
    prefix: str = "sharpness.",
    plots: bool = True,
) -> str:
    """Log `record` to the active MLflow run (one is started when none is active, and left
    open) and return the run's id. `client` fetches the PNGs (none without it, or with
    `plots=False`) and names the service in the `url` tag."""
    mlflow = _mlflow()
    run = mlflow.active_run() or mlflow.start_run()
    kind = "job" if isinstance(record, Job) else "trajectory"
    tags = {f"{prefix}{kind}_id": record.id}
    if client is not None:
        tags[f"{prefix}url"] = client.base_url
    mlflow.set_tags(tags)
    if isinstance(record, Job):
        mlflow.log_params(job_params(record, prefix))
        for name, value, step in job_metrics(record, prefix):
            mlflow.log_metric(name, value, step=step)
    else:
        mlflow.log_params(trajectory_params(record, prefix))
        for name, value, step in trajectory_metrics(record, prefix):
            mlflow.log_metric(name, value, step=step)
    if client is not None and plots:
        _log_plots(mlflow, record, client)
    return str(run.info.run_id)


def job_params(job: Job, prefix: str = "sharpness.") -> dict[str, str]:
    """Each measure's parameters and what the job measured, as MLflow params (text)."""
    params = {
        f"{prefix}model": job.spec.model,
        f"{prefix}dataset": job.spec.dataset.id or job.spec.dataset.uri or "",
        f"{prefix}loss": job.spec.loss,
        f"{prefix}mode": job.spec.mode,
    }
    for m in job.spec.measures:
        for key, value in m.params.items():
            params[f"{prefix}{m.name}.{key}"] = str(value)
    return params


def trajectory_params(trajectory: Trajectory, prefix: str = "sharpness.") -> dict[str, str]:
    """The trajectory spec's plain fields (learning rate, optimizer, measure settings)."""
    spec = trajectory.spec.model_dump(mode="json")
    plain = (str, int, float, bool)
    return {f"{prefix}trajectory.{k}": str(v) for k, v in spec.items() if isinstance(v, plain)}


def job_metrics(job: Job, prefix: str = "sharpness.") -> list[tuple[str, float, int]]:
    """(name, value, step) for each number of the job's results and evaluation."""
    out: list[tuple[str, float, int]] = []
    for name, result in job.results.items():
        out += _result_metrics(f"{prefix}{name}", result)
    evaluation = job.evaluation or {}
    for split, figures in (("train", evaluation), ("test", evaluation.get("test") or {})):
        out += _numbers(f"{prefix}evaluation.{split}", figures, ("loss", "accuracy"))
    out += _numbers(f"{prefix}evaluation.gap", evaluation.get("gap") or {}, ("loss", "accuracy"))
    return out


def trajectory_metrics(
    trajectory: Trajectory, prefix: str = "sharpness."
) -> list[tuple[str, float, int]]:
    """λmax, the stability ratio, loss and accuracy at each checkpoint (step: its training
    step, else its index)."""
    out: list[tuple[str, float, int]] = []
    for p in trajectory.points:
        step = p.step if p.step is not None else p.index
        figures = {
            "lambda_max": p.lambda_max,
            "stability_ratio": p.stability_ratio,
            "loss": p.loss,
            "accuracy": p.accuracy,
        }
        out += [(n, v, step) for n, v, _ in _numbers(f"{prefix}trajectory", figures, figures)]
    return out


def _result_metrics(name: str, result: MeasureResult) -> list[tuple[str, float, int]]:
    value = _number(result.value)
    if value is None:
        if isinstance(result.value, list):
            numbers = [_number(v) for v in result.value]
            return [(name, v, i) for i, v in enumerate(numbers) if v is not None]
        return []
    out = [(name, value, 0)]
    ci = result.diagnostics.get("ci95")
    if isinstance(ci, list) and len(ci) == 2:
        out += _numbers(name, {"low": ci[0], "high": ci[1]}, ("low", "high"))
    out += _numbers(name, result.diagnostics, ("error_estimate",))
    return out


def _numbers(name: str, figures: Mapping[str, Any], keys: Any) -> list[tuple[str, float, int]]:
    found = ((k, _number(figures.get(k))) for k in keys)
    return [(f"{name}.{k}", v, 0) for k, v in found if v is not None]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _log_plots(mlflow: Any, record: Job | Trajectory, client: Client) -> None:
    """The service's PNGs of the record, as artifacts under sharpness/."""
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(record, Job):
            if "spectral_density" not in record.results:
                return
            path = Path(tmp) / "spectral_density.png"
            client.jobs.plot(record.id, "spectral_density", path)
        else:
            path = Path(tmp) / "trajectory.png"
            client.trajectories.plot(record.id, path)
        mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)


def _mlflow() -> Any:
    """The mlflow module, imported here on purpose: an optional dependency of the SDK."""
    try:
        import mlflow
    except ImportError:
        raise ImportError(
            "logging to MLflow needs mlflow: pip install 'sharpness-client[mlflow]'"
        ) from None
    return mlflow
