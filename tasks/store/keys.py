"""The Redis key layout of every store, spelled in this one module.

Every other module of the store (and `service.studies.store`) builds its keys from here, so the
layout below is the whole of what the service keeps in Redis besides kombu's own keys.

Layout (prefix `sharpness:`):
    job:{id}            hash: spec, status, queue, created_at, started_at, finished_at, results,
                        evaluation, error, worker, device, versions, attempts, cancel_requested,
                        epoch, attempt_log, idem, and one field `progress:{measure}` per measure
                        (JSON); the fields and how each is stored: tasks.store.codec
    trajectory:{id}     hash: the same shared fields, points and overlaps (JSON lists) and
                        `progress:{i}` per checkpoint
    jobs, trajectories  sorted sets of ids scored by creation time (listing, pagination)
    idem:{key}          job id created under an Idempotency-Key (24 h);
                        idem:trajectory:{key} for trajectories
    enqueued:{id}       set when the record's one Celery message is sent under an
                        Idempotency-Key (24 h), so racing resubmits enqueue it once
    lock:{id}           held by the one worker running the record (SET NX with expiry); jobs
                        and trajectories share it (ids are unique uuids)
    workers:{hostname}  heartbeat hash with device and last_seen (expires)
    workers             sorted set of worker hostnames by last heartbeat (10 min memory):
                        the workers list and `celery_worker_up` without a SCAN over all keys
    running:{kind}      set of the ids of records in status running (the reaper's worklist)

Per-status indexes (`{index}` is `jobs` or `trajectories`; tasks.store.indexes):
    {index}:status:{status}   sorted set of the ids in that status, scored by creation time
    {index}:queued:{queue}    queued ids routed to that queue, scored by creation time
    {index}:ended             terminal ids scored by the time they expire (tasks.store.retention)
    {index}:label:["k","v"]   ids of the records labelled k=v (the pair as JSON), by creation time
    {index}:labels            hash id -> JSON list of that record's label index keys
    indexed:{kind}            index version marker; absent: the indexes are rebuilt once
    indexing:{kind}           so that one gateway rebuilds while others go on serving

Metrics (tasks.store.metrics):
    metrics:ended               hash `{kind}|{outcome}|{queue}` -> runs ended that way
    metrics:run_seconds         hash `{kind}|{outcome}|{queue}|{le}` -> per-bucket run times
    metrics:queue_wait_seconds  hash `{kind}|{queue}|{le}` -> per-bucket queue waits

Studies (service.studies.store):
    study:{id}          JSON of the study record
    study:index         sorted set of study ids scored by creation time
    study:job:{job_id}  sorted set of the studies a job belongs to, by creation time
    study:idem:{key}    study id created under an Idempotency-Key (24 h)

Kombu's Redis transport keeps `unacked` (unacknowledged messages by delivery tag),
`unacked_index` (their times) and one list per queue and priority step (tasks.store.broker).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tasks.contract.spec import JobStatus

PREFIX = "sharpness:"
WORKERS = f"{PREFIX}workers"
METRIC_ENDED = f"{PREFIX}metrics:ended"
METRIC_RUN_SECONDS = f"{PREFIX}metrics:run_seconds"
METRIC_QUEUE_WAIT = f"{PREFIX}metrics:queue_wait_seconds"

# kombu's Redis transport: unacknowledged messages by delivery tag, and their times
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
# and a queue's lists: the queue's name for priority 0, name + separator + step for the others
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITIES = (3, 6, 9)


def lock_key(record_id: str) -> str:
    """The run lock of a record (jobs and trajectories share the name: ids are unique)."""
    return f"{PREFIX}lock:{record_id}"


def enqueued_key(record_id: str) -> str:
    """The claim on sending a record's one Celery message."""
    return f"{PREFIX}enqueued:{record_id}"


def worker_key(hostname: str) -> str:
    """A worker's heartbeat hash."""
    return f"{PREFIX}workers:{hostname}"


def queue_lists(queue: str) -> tuple[str, ...]:
    """Kombu's lists of one queue: priority 0 first, then each priority step."""
    return (queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITIES))


@dataclass(frozen=True)
class RecordKeys:
    """The keys of one kind of run record."""

    kind: str  # the record's name in keys and messages: "job", "trajectory"
    index: str  # sorted set of ids by creation time
    idem: str  # prefix of the Idempotency-Key -> id keys

    def record(self, record_id: str) -> str:
        return f"{PREFIX}{self.kind}:{record_id}"

    def running(self) -> str:
        return f"{PREFIX}running:{self.kind}"

    def status(self, status: JobStatus | str) -> str:
        return f"{self.index}:status:{JobStatus(status).value}"

    def queued(self, queue: str) -> str:
        return f"{self.index}:queued:{queue}"

    def ended(self) -> str:
        return f"{self.index}:ended"

    def label(self, key: str, value: str) -> str:
        return f"{self.index}:label:{json.dumps([key, value], separators=(',', ':'))}"

    def labels(self) -> str:
        return f"{self.index}:labels"

    def indexed(self) -> str:
        return f"{PREFIX}indexed:{self.kind}"

    def indexing(self) -> str:
        return f"{PREFIX}indexing:{self.kind}"


JOBS = RecordKeys(kind="job", index=f"{PREFIX}jobs", idem=f"{PREFIX}idem:")
TRAJECTORIES = RecordKeys(
    kind="trajectory", index=f"{PREFIX}trajectories", idem=f"{PREFIX}idem:trajectory:"
)


@dataclass(frozen=True)
class StudyKeys:
    """The keys of the study records."""

    prefix: str = f"{PREFIX}study:"

    def study(self, study_id: str) -> str:
        return f"{self.prefix}{study_id}"

    @property
    def index(self) -> str:
        return f"{self.prefix}index"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def idem(self) -> str:
        return f"{self.prefix}idem:"


STUDIES = StudyKeys()


@dataclass(frozen=True)
class OwnerKeys:
    """Who owns each record and upload (tasks.store.owners). `kind` is a record kind (job,
    trajectory, study) or a blob kind (models, datasets, optimizer_states)."""

    prefix: str = f"{PREFIX}owner:"

    def owners(self, kind: str) -> str:
        """Hash: record id -> the owning tenant's name."""
        return f"{self.prefix}{kind}"

    def owned(self, kind: str, tenant: str) -> str:
        """Sorted set: the ids a tenant owns (or holds, for blobs), scored by creation time."""
        return f"{self.prefix}{kind}:by:{tenant}"

    def holders(self, kind: str, blob_id: str) -> str:
        """Hash: tenant name -> the size it holds of one content-addressed upload."""
        return f"{self.prefix}{kind}:holders:{blob_id}"

    def deleted(self, kind: str) -> str:
        """Hash: deleted record id -> JSON {"deleted_by", "deleted_at"}."""
        return f"{self.prefix}{kind}:deleted"

    def storage(self) -> str:
        """Hash: tenant name -> bytes of uploads it holds (its storage quota's use)."""
        return f"{self.prefix}storage"


OWNERS = OwnerKeys()
