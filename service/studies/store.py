"""Study records in Redis, in the JobStore's style.

Keys (tasks.store.keys, `StudyKeys`):
    study:{id}          JSON of the StudyRecord (name, target, level, members as given)
    study:index         sorted set of study ids scored by creation time (listing)
    study:job:{job_id}  sorted set of the studies a job belongs to, by creation time (the
                        reverse index the job routes read to attach a prediction)
    study:idem:{key}    study id created under an Idempotency-Key (24 h), kept by the store's
                        Idempotency-Key records (tasks.store.idempotency)

A record holds only what the client gave; the analysis is recomputed from the member jobs
when read (service.py caches it), so it never goes stale as jobs finish.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime

import redis
from pydantic import BaseModel

from service.studies.schemas import StudyCreate, StudyJob, Target
from tasks.store.connection import text, texts
from tasks.store.idempotency import IdempotencyKeys
from tasks.store.keys import STUDIES

INDEX = STUDIES.index


class StudyRecord(BaseModel):
    id: str
    name: str
    created_at: datetime
    target: Target
    level: float
    jobs: list[StudyJob]


class StudyStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self.idempotency = IdempotencyKeys(client, STUDIES.idem)

    @staticmethod
    def key(study_id: str) -> str:
        return STUDIES.study(study_id)

    @staticmethod
    def job_key(job_id: str) -> str:
        return STUDIES.job(job_id)

    def create(
        self, body: StudyCreate, idempotency_key: str | None = None
    ) -> tuple[StudyRecord, bool]:
        """Store a new study; with a key used before (24 h), return the study made under it
        instead. The flag says whether this call created it."""
        idem = self.idempotency
        if idempotency_key and (existing := idem.holder(idempotency_key)):
            if found := self.get(existing):
                return found, False
        record = StudyRecord(
            id=uuid.uuid4().hex,
            name=body.name,
            created_at=datetime.now(UTC),
            target=body.target,
            level=body.level,
            jobs=body.jobs,
        )
        if idempotency_key and not idem.claim(idempotency_key, record.id):
            found = self.get(idem.holder(idempotency_key) or "")  # a concurrent request won
            if found is not None:
                return found, False
        score = record.created_at.timestamp()
        pipe = self.r.pipeline()
        pipe.set(self.key(record.id), record.model_dump_json())
        pipe.zadd(INDEX, {record.id: score})
        for member in record.jobs:
            pipe.zadd(self.job_key(member.job), {record.id: score})
        pipe.execute()
        return record, True

    def get(self, study_id: str) -> StudyRecord | None:
        raw = text(self.r.get(self.key(study_id)))
        return StudyRecord.model_validate_json(raw) if raw else None

    def delete(self, study_id: str) -> bool:
        record = self.get(study_id)
        if record is None:
            return False
        pipe = self.r.pipeline()
        pipe.delete(self.key(study_id))
        pipe.zrem(INDEX, study_id)
        for member in record.jobs:
            pipe.zrem(self.job_key(member.job), study_id)
        pipe.execute()
        return True

    def list(
        self, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[StudyRecord], str | None]:
        """Newest first; the cursor is the id of the last study of the previous page."""
        start = 0
        if cursor:
            rank = self.r.zrevrank(INDEX, cursor)
            if not isinstance(rank, int):
                raise ValueError("cursor does not name a study")
            start = rank + 1
        ids = texts(self.r.zrevrange(INDEX, start, start + limit - 1))
        records = [r for i in ids if (r := self.get(i)) is not None]
        more = self.r.zcard(INDEX) > start + len(ids)
        return records, (ids[-1] if more and ids else None)

    def studies_of(self, job_id: str) -> builtins.list[str]:
        """Ids of the studies a job is in, newest first."""
        return texts(self.r.zrevrange(self.job_key(job_id), 0, -1))
