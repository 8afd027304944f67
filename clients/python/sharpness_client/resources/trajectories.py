"""`client.trajectories`: checkpoints of one training run → λmax·η/2 and eigenvector rotation.

t = client.trajectories.create(
    checkpoints=[(id0, 0.1), (id1, 0.1, 500), {"model": id2, "learning_rate": 0.05}],
    dataset=data_id, k=3, optimizer={"name": "sgd", "momentum": 0.9})
t = client.trajectories.wait(t.id)
[p.stability_ratio for p in t.points], [o.subspace_overlap for o in t.overlaps]
t.edge_analysis["summary"]
client.trajectories.plot(t.id, "trajectory.png")

Adam: upload each checkpoint's optimizer state and name it in the checkpoint —
state = client.trajectories.upload_optimizer_state(optimizer=opt, model=model)
checkpoints=[{"model": id0, "learning_rate": 1e-3, "optimizer_state": state.id}, ...],
optimizer={"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from sharpness_client._files import FileInput
from sharpness_client._http import Request
from sharpness_client._optimizer_state import optimizer_state_bytes, optimizer_state_from_torch
from sharpness_client._png import png_request, save
from sharpness_client._spec import (
    CheckpointLike,
    DatasetLike,
    OptimizerLike,
    build_trajectory_spec,
)
from sharpness_client.resources._base import (
    Awaiting,
    Out,
    Shared,
    create_request,
    upload_request,
)
from sharpness_client.resources._runs import AsyncRuns, Runs
from sharpness_client.types import OptimizerStateInfo, Trajectory, TrajectorySpec

STATES = "/v1/trajectories/optimizer-states"


def _state_request(
    file: FileInput | None,
    optimizer: Any,
    model: Any,
    exp_avg_sq: Mapping[str, Any] | None,
    step: int | None,
    filename: str | None,
) -> Request:
    if file is None:
        if optimizer is not None and model is not None:
            file = optimizer_state_from_torch(optimizer, model)
        elif exp_avg_sq is not None and step is not None:
            file = optimizer_state_bytes(exp_avg_sq, step)
        else:
            raise TypeError(
                "give a .safetensors file, or optimizer= and model= (a torch Adam and its "
                "model), or exp_avg_sq= (by parameter name) and step="
            )
        filename = filename or "optimizer_state.safetensors"
    return upload_request(STATES, file, filename, {})


def _spec(checkpoints: Any, dataset: Any, **options: Any) -> TrajectorySpec:
    if checkpoints is None or dataset is None:
        raise TypeError("give checkpoints= and dataset= (or a full spec=)")
    return build_trajectory_spec(checkpoints, dataset, **options)


class _TrajectoryMethods(Shared[Out]):
    """Trajectories' and AsyncTrajectories' create."""

    path = "/v1/trajectories"

    def create(
        self,
        *,
        checkpoints: Iterable[CheckpointLike] | None = None,
        dataset: DatasetLike | None = None,
        optimizer: OptimizerLike | None = None,
        k: int | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        batch_size: int | None = None,
        max_samples: int | None = None,
        loss: str | None = None,
        mode: str | None = None,
        device: str | None = None,
        labels: Mapping[str, str] | None = None,
        spec: TrajectorySpec | None = None,
        idempotency_key: str | None = None,
    ) -> Out:
        """Submit checkpoints in training order (202: queued). Each checkpoint is
        `(model, learning_rate)`, `(model, learning_rate, step)`, a mapping or a
        TrajectoryCheckpoint; `dataset` as for jobs.create. `optimizer`: "gd" (the server's
        default), {"name": "sgd", "momentum": β, "nesterov": bool} or {"name": "adam",
        "beta1", "beta2", "eps"} — adam needs each checkpoint's `optimizer_state` (see
        upload_optimizer_state)."""
        if spec is None:
            options = dict(k=k, tol=tol, max_iter=max_iter, optimizer=optimizer, labels=labels)
            options.update(loss=loss, mode=mode, device=device)
            options.update(batch_size=batch_size, max_samples=max_samples)
            spec = _spec(checkpoints, dataset, **options)
        return self._send(create_request(self.path, spec, idempotency_key))


class Trajectories(_TrajectoryMethods[Trajectory], Runs[Trajectory]):
    record = Trajectory

    def upload_optimizer_state(
        self,
        file: FileInput | None = None,
        *,
        optimizer: Any = None,
        model: Any = None,
        exp_avg_sq: Mapping[str, Any] | None = None,
        step: int | None = None,
        filename: str | None = None,
    ) -> OptimizerStateInfo:
        """Upload Adam's state at one checkpoint: a .safetensors (`step`,
        `exp_avg_sq.<name>`), or built from a torch Adam/AdamW `optimizer` and its `model`,
        or from `exp_avg_sq` by parameter name and `step` (numpy needed). Idempotent."""
        req = _state_request(file, optimizer, model, exp_avg_sq, step, filename)
        return OptimizerStateInfo.model_validate(self._http.send(req).json())

    def get_optimizer_state(self, id: str) -> OptimizerStateInfo:
        resp = self._http.send(Request("GET", f"{STATES}/{id}"))
        return OptimizerStateInfo.model_validate(resp.json())

    def plot(self, id: str, path: str | os.PathLike[str] | None = None) -> bytes:
        """The trajectory's PNG (λmax·η/2 and the overlaps), written to `path` if given."""
        return save(self._http.send(png_request(f"/v1/trajectories/{id}/plot.png")).content, path)


class AsyncTrajectories(_TrajectoryMethods[Awaiting[Trajectory]], AsyncRuns[Trajectory]):
    record = Trajectory

    async def upload_optimizer_state(
        self,
        file: FileInput | None = None,
        *,
        optimizer: Any = None,
        model: Any = None,
        exp_avg_sq: Mapping[str, Any] | None = None,
        step: int | None = None,
        filename: str | None = None,
    ) -> OptimizerStateInfo:
        req = _state_request(file, optimizer, model, exp_avg_sq, step, filename)
        return OptimizerStateInfo.model_validate((await self._http.send(req)).json())

    async def get_optimizer_state(self, id: str) -> OptimizerStateInfo:
        resp = await self._http.send(Request("GET", f"{STATES}/{id}"))
        return OptimizerStateInfo.model_validate(resp.json())

    async def plot(self, id: str, path: str | os.PathLike[str] | None = None) -> bytes:
        resp = await self._http.send(png_request(f"/v1/trajectories/{id}/plot.png"))
        return save(resp.content, path)
