"""Trajectory records in Redis: the run-record layout of tasks.store.records under their own keys
(tasks.store.keys: `trajectory:{id}`, `trajectories`, `idem:trajectory:{key}` and the
per-status indexes under `trajectories:`), stored as tasks.store.codec.TRAJECTORY says: the
shared run fields, points and overlaps (JSON lists), and `progress:{i}` per checkpoint.

Ended trajectories expire after SHARPNESS_RETENTION_DAYS like jobs; their runs are counted in
the same `metrics:*` hashes with kind `trajectory`.

A `RecordStore` like the JobStore: creation with idempotency, the run lock, the cancel flag,
`mark_running`, field-level updates and the atomic, never-leave-terminal `finish` are shared;
only the keys, the record shape and the points differ. Eigenvectors are never stored here
(they stay in worker memory).
"""

from __future__ import annotations

import json
from typing import Any

from tasks.contract.spec import (
    EigenvectorOverlap,
    MeasureProgress,
    Trajectory,
    TrajectoryPoint,
    TrajectorySpec,
)
from tasks.store import codec
from tasks.store.keys import TRAJECTORIES
from tasks.store.records import RecordStore


class TrajectoryStore(RecordStore[Trajectory, TrajectorySpec]):
    KEYS = TRAJECTORIES
    CODEC = codec.TRAJECTORY

    def _initial_fields(self, spec: TrajectorySpec) -> dict[str, Any]:
        fields: dict[str, Any] = self.CODEC.encode(points=[], overlaps=[])
        for i in range(len(spec.checkpoints)):
            name, value = self.CODEC.prefixed_field("progress", i, MeasureProgress())
            fields[name] = value
        return fields

    def _decode(self, record_id: str, raw: dict[str, str]) -> Trajectory:
        return Trajectory(**self.CODEC.decode(record_id, raw))

    def _restart_fields(self, raw: dict[str, str]) -> dict[str, Any]:
        """A requeued trajectory starts over: progress reset, the lost run's points dropped."""
        return {**super()._restart_fields(raw), **self.CODEC.encode(points=[], overlaps=[])}

    # ------------------------------------------------------------- update
    def add_point(
        self,
        record_id: str,
        point: TrajectoryPoint,
        overlap: EigenvectorOverlap | None,
        epoch: int | None = None,
    ) -> bool:
        """Append one checkpoint's result (and its overlap with the previous) to the record;
        with `epoch` (a run's partial result), only while the record is at that epoch: False
        when refused.

        Only the run that holds the record's epoch appends, so read-modify-write of the two
        JSON lists is safe; the hash fields are written together, fenced by the epoch."""
        raw = self.r.hmget(self.key(record_id), ["points", "overlaps"])
        points = json.loads(raw[0] or "[]")
        overlaps = json.loads(raw[1] or "[]")
        points = [p for p in points if p["index"] != point.index] + [point.model_dump()]
        if overlap is not None:
            overlaps = [o for o in overlaps if o["end"] != overlap.end] + [overlap.model_dump()]
        return self.set_fields(record_id, epoch, points=points, overlaps=overlaps)

    def reset_results(self, record_id: str, epoch: int | None = None) -> bool:
        """A redelivered run starts over: drop the points a dead worker left behind."""
        return self.set_fields(record_id, epoch, points=[], overlaps=[])
