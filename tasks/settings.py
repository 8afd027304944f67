"""Settings shared by the gateway and the workers, from the environment (prefix SHARPNESS_).

Both sides must agree on the Redis URL and the blob directory, so they read one model.
Torch-free: the gateway imports it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHARPNESS_", extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Broker, result backend and job registry. `make run` starts a private "
        "Redis and sets this for you unless you set it yourself.",
    )
    data_dir: Path = Field(
        default=Path("var"), description="Blobs (models, datasets) and the private Redis' AOF."
    )
    max_upload_bytes: int = Field(
        default=5 * 1024**3,
        ge=1,
        description="Upload size cap (5 GiB: a 1B-parameter float32 model and its headers). "
        "Uploads stream to disk as they arrive, so the gateway's memory does not grow with it.",
    )
    data_root: Path | None = Field(
        default=None,
        description="file:// dataset and model URIs must resolve below this directory; "
        "unset: refused.",
    )
    uri_schemes: list[str] = Field(
        default=["file"], description="Allowed dataset and model URI schemes (file, http, https)."
    )
    uri_allow_hosts: list[str] = Field(
        default=[],
        description="Hosts of http(s) dataset and model URIs fetched whatever address they "
        "resolve to "
        '(an internal data server), e.g. ["data.internal"]; every other host must resolve '
        "only to global addresses (loopback, private, link-local, multicast, reserved and "
        "unspecified ones are refused).",
    )
    max_uri_bytes: int = Field(
        default=5 * 1024**3,
        ge=1,
        description="Cap on the data behind one URI: a dataset file, or all the files of a "
        "model registered by reference (5 GiB: a 1B-parameter float32 model).",
    )
    soft_time_limit_s: int = Field(default=3_300, ge=1, description="Job soft time limit.")
    hard_time_limit_s: int = Field(default=3_600, ge=1, description="Job hard time limit.")
    visibility_timeout_s: int | None = Field(
        default=None,
        ge=1,
        description="Seconds before Redis redelivers an unacknowledged job (a worker died). "
        "Default: the hard time limit plus 600; must exceed the hard time limit.",
    )
    heartbeat_s: int = Field(default=5, ge=1, description="Worker heartbeat period.")
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Runs a record may start: a run whose worker stops beating (about three "
        "heartbeats) is requeued until this many were started, then failed (worker-lost).",
    )
    worker_queues: str = Field(
        default="",
        description="Queues a worker consumes: 'cpu', 'gpu' or both (default: "
        "'gpu,cpu' when CUDA is visible, else 'cpu').",
    )
    api_key: str | None = Field(
        default=None, description="When set, requests need 'Authorization: Bearer <key>'."
    )
    tenants_file: Path | None = Field(
        default=None,
        description='A JSON ({"tenants": [...]}) or TOML ([[tenants]]) file naming the tenants: '
        "each a name, the SHA-256 hex digest of its bearer key (key_sha256), a role (user, ops, "
        "admin) and optional quotas (max_active_runs, max_storage_bytes, "
        "max_requests_per_minute). See docs/ops.md; `python -m service.keys new NAME` makes a key.",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Days a job or trajectory record (and its Idempotency-Key) is kept after "
        "it ends (succeeded, failed, cancelled); queued and running records never expire. "
        "Fractions are allowed (0.5 = 12 hours).",
    )
    gateway_workers: int | None = Field(
        default=None,
        ge=1,
        description="Gateway processes `make gateway` and `make run` start (service.serve: "
        "uvicorn processes, a listening socket each). Default: min(4, CPU count).",
    )

    @model_validator(mode="after")
    def _soft_before_hard(self) -> Settings:
        """Celery arms the hard time limit only when the soft one fires, so a soft limit at or
        past the hard one would leave a hung run alive until the soft limit."""
        if self.soft_time_limit_s >= self.hard_time_limit_s:
            raise ValueError(
                f"SHARPNESS_SOFT_TIME_LIMIT_S ({self.soft_time_limit_s}) must be less than "
                f"SHARPNESS_HARD_TIME_LIMIT_S ({self.hard_time_limit_s}): set the soft limit "
                "lower, leaving the run time to stop on its own (a minute or more)"
            )
        return self

    @property
    def retention_s(self) -> float:
        return self.retention_days * 86_400

    @property
    def gateway_processes(self) -> int:
        return self.gateway_workers or max(1, min(4, os.cpu_count() or 1))

    @property
    def visibility_timeout(self) -> int:
        v = self.visibility_timeout_s or self.hard_time_limit_s + 600
        if v <= self.hard_time_limit_s:
            raise ValueError(
                "SHARPNESS_VISIBILITY_TIMEOUT_S must exceed SHARPNESS_HARD_TIME_LIMIT_S, or a "
                "healthy long job would be redelivered and run twice"
            )
        return v

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


@lru_cache
def get_settings() -> Settings:
    return Settings()
