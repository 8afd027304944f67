"""Trajectory records in Redis: the JobStore layout under their own keys.

    trajectory:{id}     hash: spec, status, queue, created_at, started_at, finished_at, error,
                        worker, device, versions, attempts, cancel_requested, points (JSON
                        list), overlaps (JSON list), and `progress:{i}` per checkpoint (JSON)
    trajectories        sorted set of ids scored by creation time
    idem:trajectory:{key}   trajectory id created under an Idempotency-Key (24 h)
    lock:{id}           the run lock, shared with jobs (ids are unique uuids)

A subclass of JobStore: the run lock, the cancel flag, `mark_running`, field-level updates and
the atomic, never-leave-terminal `finish` are the job's, unchanged; only the key, the record
shape and the listing differ. Eigenvectors are never stored here (they stay in worker memory).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from tasks.jobstore import PREFIX, JobStore, now
from tasks.spec import (
    EigenvectorOverlap,
    JobStatus,
    MeasureProgress,
    Problem,
    Trajectory,
    TrajectoryPage,
    TrajectoryPoint,
    TrajectorySpec,
)

INDEX = f"{PREFIX}trajectories"


class TrajectoryStore(JobStore):
    @staticmethod
    def key(job_id: str) -> str:
        return f"{PREFIX}trajectory:{job_id}"

    # ------------------------------------------------------------- create
    def create(  # type: ignore[override]
        self, spec: TrajectorySpec, queue: str, idempotency_key: str | None = None
    ) -> Trajectory:
        idem = f"{PREFIX}idem:trajectory:{idempotency_key}" if idempotency_key else None
        if idem and (existing := self.r.get(idem)) and (found := self.get(existing)):
            return found
        t = Trajectory(
            id=uuid.uuid4().hex, status=JobStatus.queued, spec=spec, queue=queue, created_at=now()
        )
        fields: dict[str, Any] = {
            "spec": spec.model_dump_json(),
            "status": t.status.value,
            "queue": queue,
            "created_at": t.created_at.isoformat(),
            "attempts": 0,
            "cancel_requested": 0,
            "points": "[]",
            "overlaps": "[]",
        }
        for i in range(len(spec.checkpoints)):
            fields[f"progress:{i}"] = MeasureProgress().model_dump_json()
        pipe = self.r.pipeline()
        pipe.hset(self.key(t.id), mapping=fields)
        pipe.zadd(INDEX, {t.id: t.created_at.timestamp()})
        if idem:
            pipe.set(idem, t.id, ex=86_400, nx=True)
        pipe.execute()
        if idem and (winner := self.r.get(idem)) and winner != t.id:  # lost a race on the key
            self.delete(t.id)
            return self.get(winner)  # type: ignore[return-value]
        return self.get(t.id) or t

    def delete(self, job_id: str) -> None:
        self.r.delete(self.key(job_id))
        self.r.zrem(INDEX, job_id)

    # --------------------------------------------------------------- read
    def get(self, job_id: str) -> Trajectory | None:  # type: ignore[override]
        raw = self.r.hgetall(self.key(job_id))
        return self._decode(job_id, raw) if raw else None

    @staticmethod
    def _decode(job_id: str, raw: dict[str, str]) -> Trajectory:  # type: ignore[override]
        def load(name: str) -> Any:
            return json.loads(raw[name]) if raw.get(name) else None

        def when(name: str) -> datetime | None:
            return datetime.fromisoformat(raw[name]) if raw.get(name) else None

        progress = sorted(
            (int(k.split(":", 1)[1]), MeasureProgress.model_validate_json(v))
            for k, v in raw.items()
            if k.startswith("progress:")
        )
        return Trajectory(
            id=job_id,
            status=JobStatus(raw["status"]),
            spec=TrajectorySpec.model_validate_json(raw["spec"]),
            queue=raw.get("queue", "cpu"),
            created_at=datetime.fromisoformat(raw["created_at"]),
            started_at=when("started_at"),
            finished_at=when("finished_at"),
            progress=[p for _, p in progress],
            points=[TrajectoryPoint.model_validate(p) for p in load("points") or []],
            overlaps=[EigenvectorOverlap.model_validate(o) for o in load("overlaps") or []],
            error=Problem.model_validate(load("error")) if raw.get("error") else None,
            worker=raw.get("worker") or None,
            device=raw.get("device") or None,
            versions=load("versions") or {},
            attempts=int(raw.get("attempts", 0)),
            cancel_requested=raw.get("cancel_requested") == "1",
        )

    def list(  # type: ignore[override]
        self,
        status: JobStatus | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TrajectoryPage:
        """Newest first; the cursor is the id of the last item of the previous page."""
        start = 0
        if cursor:
            rank = self.r.zrevrank(INDEX, cursor)
            if rank is None:
                raise ValueError("cursor does not name a trajectory")
            start = rank + 1
        items: list[Trajectory] = []
        ids = self.r.zrevrange(INDEX, start, -1)
        last: str | None = None
        for tid in ids:
            if len(items) == limit:
                break
            last = tid
            t = self.get(tid)
            if t is None or (status is not None and t.status != status):
                continue
            if labels and any(t.spec.labels.get(k) != v for k, v in labels.items()):
                continue
            items.append(t)
        more = last is not None and last != ids[-1]
        return TrajectoryPage(items=items, next_cursor=last if more else None)

    # ------------------------------------------------------------- update
    def add_point(
        self, job_id: str, point: TrajectoryPoint, overlap: EigenvectorOverlap | None
    ) -> None:
        """Append one checkpoint's result (and its overlap with the previous) to the record.

        Only the one running worker (it holds the lock) appends, so read-modify-write of the
        two JSON lists is safe; the hash fields are written together."""
        raw = self.r.hmget(self.key(job_id), ["points", "overlaps"])
        points = json.loads(raw[0] or "[]")
        overlaps = json.loads(raw[1] or "[]")
        points = [p for p in points if p["index"] != point.index] + [point.model_dump()]
        if overlap is not None:
            overlaps = [o for o in overlaps if o["end"] != overlap.end] + [overlap.model_dump()]
        self.set_fields(job_id, points=points, overlaps=overlaps)

    def reset_results(self, job_id: str) -> None:
        """A redelivered run starts over: drop the points a dead worker left behind."""
        self.set_fields(job_id, points=[], overlaps=[])

    def count_by_status(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        for tid in self.r.zrange(INDEX, 0, -1):
            value = self.r.hget(self.key(tid), "status")
            if value:
                counts[value] = counts.get(value, 0) + 1
        return counts
