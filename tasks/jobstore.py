"""Job records in Redis, shared by the gateway (creates, reads, cancels) and the worker.

Layout (prefix `sharpness:`):
    job:{id}            hash: spec, status, queue, created_at, started_at, finished_at, results,
                        evaluation, error, worker, device, versions, attempts, cancel_requested,
                        and one field `progress:{measure}` per measure (JSON)
    jobs                sorted set of ids scored by creation time (listing, pagination)
    idem:{key}          job id created under an Idempotency-Key (24 h)
    lock:{id}           held by the one worker running the job (SET NX with expiry)
    workers:{hostname}  heartbeat hash with device and last_seen (expires)

Every update is a field-level HSET, so the gateway's cancel flag and the worker's progress
never overwrite each other. Records carry no expiry: they survive gateway restarts, and with
AOF on, Redis restarts.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

from tasks.spec import Job, JobSpec, JobStatus, MeasureProgress, MeasureResult, Problem

PREFIX = "sharpness:"


def now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True))

    # --------------------------------------------------------------- keys
    @staticmethod
    def key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    # ------------------------------------------------------------- create
    def create(self, spec: JobSpec, queue: str, idempotency_key: str | None = None) -> Job:
        """Write a queued job; with an idempotency key, return the job made earlier under it."""
        if idempotency_key:
            existing = self.r.get(f"{PREFIX}idem:{idempotency_key}")
            if existing and (job := self.get(existing)) is not None:
                return job
        job = Job(
            id=uuid.uuid4().hex, status=JobStatus.queued, spec=spec, queue=queue, created_at=now()
        )
        fields = {
            "spec": spec.model_dump_json(),
            "status": job.status.value,
            "queue": queue,
            "created_at": job.created_at.isoformat(),
            "attempts": 0,
            "cancel_requested": 0,
        }
        for m in spec.measures:
            fields[f"progress:{m.name}"] = MeasureProgress().model_dump_json()
        pipe = self.r.pipeline()
        pipe.hset(self.key(job.id), mapping=fields)
        pipe.zadd(f"{PREFIX}jobs", {job.id: job.created_at.timestamp()})
        if idempotency_key:
            pipe.set(f"{PREFIX}idem:{idempotency_key}", job.id, ex=86_400, nx=True)
        pipe.execute()
        if idempotency_key:  # another request may have won the race for the same key
            winner = self.r.get(f"{PREFIX}idem:{idempotency_key}")
            if winner and winner != job.id:
                self.delete(job.id)
                return self.get(winner)  # type: ignore[return-value]
        return job

    def delete(self, job_id: str) -> None:
        self.r.delete(self.key(job_id))
        self.r.zrem(f"{PREFIX}jobs", job_id)

    # --------------------------------------------------------------- read
    def get(self, job_id: str) -> Job | None:
        raw = self.r.hgetall(self.key(job_id))
        if not raw:
            return None
        return self._decode(job_id, raw)

    def status(self, job_id: str) -> JobStatus | None:
        value = self.r.hget(self.key(job_id), "status")
        return JobStatus(value) if value else None

    @staticmethod
    def _decode(job_id: str, raw: dict[str, str]) -> Job:
        def load(name: str) -> Any:
            return json.loads(raw[name]) if raw.get(name) else None

        progress = {
            k.split(":", 1)[1]: MeasureProgress.model_validate_json(v)
            for k, v in raw.items()
            if k.startswith("progress:")
        }
        return Job(
            id=job_id,
            status=JobStatus(raw["status"]),
            spec=JobSpec.model_validate_json(raw["spec"]),
            queue=raw.get("queue", "cpu"),
            created_at=datetime.fromisoformat(raw["created_at"]),
            started_at=datetime.fromisoformat(raw["started_at"]) if raw.get("started_at") else None,
            finished_at=(
                datetime.fromisoformat(raw["finished_at"]) if raw.get("finished_at") else None
            ),
            progress=progress,
            results={
                k: MeasureResult.model_validate(v) for k, v in (load("results") or {}).items()
            },
            evaluation=load("evaluation"),
            error=Problem.model_validate(load("error")) if raw.get("error") else None,
            worker=raw.get("worker") or None,
            device=raw.get("device") or None,
            versions=load("versions") or {},
            attempts=int(raw.get("attempts", 0)),
            cancel_requested=raw.get("cancel_requested") == "1",
        )

    def list(
        self,
        status: JobStatus | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first. The cursor is the id of the last job of the previous page."""
        index = f"{PREFIX}jobs"
        start = 0
        if cursor:
            rank = self.r.zrevrank(index, cursor)
            if rank is None:
                raise ValueError("cursor does not name a job")
            start = rank + 1
        items: list[Job] = []
        chunk = max(limit * 4, 100)
        last_seen: str | None = None
        while len(items) < limit:
            ids = self.r.zrevrange(index, start, start + chunk - 1)
            if not ids:
                return items, None
            for job_id in ids:
                last_seen = job_id
                job = self.get(job_id)
                start += 1
                if job is None:
                    continue
                if status is not None and job.status != status:
                    continue
                if labels and any(job.spec.labels.get(k) != v for k, v in labels.items()):
                    continue
                items.append(job)
                if len(items) == limit:
                    break
        more = self.r.zcard(index) > start
        return items, (last_seen if more else None)

    def count_by_status(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        for job_id in self.r.zrange(f"{PREFIX}jobs", 0, -1):
            value = self.r.hget(self.key(job_id), "status")
            if value:
                counts[value] = counts.get(value, 0) + 1
        return counts

    # ------------------------------------------------------------- update
    def set_fields(self, job_id: str, **fields: Any) -> None:
        encoded = {
            k: (v if isinstance(v, str | int | float) else json.dumps(v, default=str))
            for k, v in fields.items()
        }
        self.r.hset(self.key(job_id), mapping=encoded)

    def request_cancel(self, job_id: str) -> Job | None:
        """Flag a job for cancellation; a queued job is cancelled at once."""
        job = self.get(job_id)
        if job is None or job.status.terminal:
            return job
        self.r.hset(self.key(job_id), "cancel_requested", 1)
        if job.status == JobStatus.queued:
            self.finish(job_id, JobStatus.cancelled, only_if={JobStatus.queued})
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self.key(job_id), "cancel_requested") == "1"

    def acquire(self, job_id: str, worker: str, ttl_s: int) -> bool:
        """Take the per-job run lock; False if another live worker holds it."""
        return bool(self.r.set(f"{PREFIX}lock:{job_id}", worker, nx=True, ex=ttl_s))

    def release(self, job_id: str) -> None:
        self.r.delete(f"{PREFIX}lock:{job_id}")

    def mark_running(self, job_id: str, worker: str, device: str, versions: dict) -> None:
        self.r.hincrby(self.key(job_id), "attempts", 1)
        self.set_fields(
            job_id,
            status=JobStatus.running.value,
            started_at=now().isoformat(),
            worker=worker,
            device=device,
            versions=versions,
        )

    def set_progress(self, job_id: str, measure: str, progress: MeasureProgress) -> None:
        self.r.hset(self.key(job_id), f"progress:{measure}", progress.model_dump_json())

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        results: dict[str, Any] | None = None,
        error: Problem | None = None,
        evaluation: dict[str, Any] | None = None,
        only_if: set[JobStatus] | None = None,
    ) -> bool:
        """Move a job to a terminal state atomically; never leave a terminal state."""
        key = self.key(job_id)
        allowed = only_if or {JobStatus.queued, JobStatus.running}
        with self.r.pipeline() as pipe:
            for _ in range(10):
                try:
                    pipe.watch(key)
                    current = pipe.hget(key, "status")
                    if current is None or JobStatus(current) not in allowed:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    fields: dict[str, Any] = {
                        "status": status.value,
                        "finished_at": now().isoformat(),
                    }
                    if results is not None:
                        fields["results"] = json.dumps(results, default=str)
                    if error is not None:
                        fields["error"] = error.model_dump_json()
                    if evaluation is not None:
                        fields["evaluation"] = json.dumps(evaluation, default=str)
                    pipe.hset(key, mapping=fields)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    time.sleep(0.01)
        return False

    # ------------------------------------------------------------ workers
    def heartbeat(self, hostname: str, device: str, ttl_s: int = 30) -> None:
        key = f"{PREFIX}workers:{hostname}"
        self.r.hset(key, mapping={"device": device, "last_seen": now().isoformat()})
        self.r.expire(key, ttl_s)

    def workers(self) -> list[dict[str, str]]:
        out = []
        for key in self.r.scan_iter(f"{PREFIX}workers:*"):
            info = self.r.hgetall(key)
            if info:
                out.append({"hostname": key.split(":", 2)[2], **info})
        return sorted(out, key=lambda w: w["hostname"])
