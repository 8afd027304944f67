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
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sharpness_client._files import FileInput
from sharpness_client._http import Request
from sharpness_client._optimizer_state import optimizer_state_bytes, optimizer_state_from_torch
from sharpness_client._spec import (
    CheckpointLike,
    DatasetLike,
    OptimizerLike,
    build_trajectory_spec,
)
from sharpness_client.resources._base import (
    Awaiting,
    Out,
    Png,
    SharedPng,
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


State = TypeVar("State")


class _TrajectoryMethods(SharedPng[Out, Png], Generic[Out, Png, State]):
    """Trajectories' and AsyncTrajectories' create, plot and optimizer states (`_state`: the
    state's record, or a coroutine of it)."""

    path = "/v1/trajectories"

    if TYPE_CHECKING:  # each client's own

        def _state(self, req: Request) -> State: ...

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

    def upload_optimizer_state(
        self,
        file: FileInput | None = None,
        *,
        optimizer: Any = None,
        model: Any = None,
        exp_avg_sq: Mapping[str, Any] | None = None,
        step: int | None = None,
        filename: str | None = None,
    ) -> State:
        """Upload Adam's state at one checkpoint: a .safetensors (`step`,
        `exp_avg_sq.<name>`), or built from a torch Adam/AdamW `optimizer` and its `model`,
        or from `exp_avg_sq` by parameter name and `step` (numpy needed). Idempotent."""
        return self._state(_state_request(file, optimizer, model, exp_avg_sq, step, filename))

    def get_optimizer_state(self, id: str) -> State:
        return self._state(Request("GET", f"{STATES}/{id}"))

    def plot(self, id: str, path: str | os.PathLike[str] | None = None) -> Png:
        """The trajectory's PNG (λmax·η/2 and the overlaps), written to `path` if given."""
        return self._png(f"{self.path}/{id}/plot.png", path)


class Trajectories(_TrajectoryMethods[Trajectory, bytes, OptimizerStateInfo], Runs[Trajectory]):
    record = Trajectory

    def _state(self, req: Request) -> OptimizerStateInfo:
        return OptimizerStateInfo.model_validate(self._http.send(req).json())


class AsyncTrajectories(
    _TrajectoryMethods[Awaiting[Trajectory], Awaiting[bytes], Awaiting[OptimizerStateInfo]],
    AsyncRuns[Trajectory],
):
    record = Trajectory

    async def _state(self, req: Request) -> OptimizerStateInfo:
        return OptimizerStateInfo.model_validate((await self._http.send(req)).json())
