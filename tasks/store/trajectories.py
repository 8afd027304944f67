"""Trajectory records in Redis: the run-record layout of tasks.store.records under their own keys.

    trajectory:{id}     hash: spec, status, queue, created_at, started_at, finished_at, error,
                        worker, device, versions, attempts, cancel_requested, points (JSON
                        list), overlaps (JSON list), and `progress:{i}` per checkpoint (JSON)
    trajectories        sorted set of ids scored by creation time
    idem:trajectory:{key}   trajectory id created under an Idempotency-Key (24 h)
    enqueued:{id}, lock:{id}   as for jobs (ids are unique uuids)
    trajectories:status:{status}, trajectories:queued:{queue}, trajectories:ended
                        the per-status indexes, kept as for jobs (tasks.store.records)

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
from tasks.store.records import PREFIX, RecordStore


class TrajectoryStore(RecordStore[Trajectory, TrajectorySpec]):
    KIND = "trajectory"
    INDEX = f"{PREFIX}trajectories"
    IDEM = f"{PREFIX}idem:trajectory:"

    def _initial_fields(self, spec: TrajectorySpec) -> dict[str, Any]:
        fields: dict[str, Any] = {"points": "[]", "overlaps": "[]"}
        for i in range(len(spec.checkpoints)):
            fields[f"progress:{i}"] = MeasureProgress().model_dump_json()
        return fields

    def _decode(self, record_id: str, raw: dict[str, str]) -> Trajectory:
        progress = sorted((int(i), p) for i, p in self._progress(raw).items())
        return Trajectory(
            **self._common(record_id, raw),
            spec=TrajectorySpec.model_validate_json(raw["spec"]),
            progress=[p for _, p in progress],
            points=[
                TrajectoryPoint.model_validate(p) for p in json.loads(raw.get("points") or "[]")
            ],
            overlaps=[
                EigenvectorOverlap.model_validate(o)
                for o in json.loads(raw.get("overlaps") or "[]")
            ],
        )

    def _restart_fields(self, raw: dict[str, str]) -> dict[str, Any]:
        """A requeued trajectory starts over: progress reset, the lost run's points dropped."""
        return {**super()._restart_fields(raw), "points": "[]", "overlaps": "[]"}

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
