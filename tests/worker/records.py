"""Run records whose uploads are never read: for tests of how the store and the worker's
main process treat a record (fencing, time limits), not of what a run measures."""

from __future__ import annotations

from tasks.contract.spec import TrajectorySpec
from tasks.store.trajectories import TrajectoryStore


def queued_trajectory(store: TrajectoryStore) -> str:
    """A queued two-checkpoint trajectory on the cpu queue; returns its id."""
    spec = TrajectorySpec.model_validate(
        {
            "checkpoints": [{"model": m * 64, "learning_rate": 0.1} for m in "ac"],
            "dataset": {"id": "b" * 64},
        }
    )
    return store.create(spec, "cpu").id
