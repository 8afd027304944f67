"""The one place requests are sent: auth, idempotency keys, retries, error mapping.

A submit (`Request(..., idempotent=True)`: jobs, trajectories, studies) carries an
`Idempotency-Key`, the caller's or a fresh uuid4 made once per call and sent on each of its
retries, so a run submitted twice because an answer was lost (a gateway process killed after
making the record) is one run. A POST is retried only when the service makes it once however
often it arrives: with that key, or by its nature (`repeatable=True`: uploads stored by
content, a cancel); any other POST is sent once. The sync and async transports share
everything but the sleeping and the sending.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from sharpness_client._files import FileSource
from sharpness_client._retry import RetryPolicy
from sharpness_client._version import __version__
from sharpness_client.errors import APIConnectionError, APITimeoutError, error_for

log = logging.getLogger("sharpness_client")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0


def resolve_config(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Arguments win over SHARPNESS_URL / SHARPNESS_API_KEY, which win over the default."""
    url = base_url or os.environ.get("SHARPNESS_URL") or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get("SHARPNESS_API_KEY") or None
    return url.rstrip("/"), key


@dataclass
class Request:
    """One logical call; `send` may turn it into several HTTP attempts."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | list[tuple[str, Any]] | None = None
    data: dict[str, str] | None = None
    file: FileSource | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    # a submit the service deduplicates by Idempotency-Key: one is made unless given
    idempotent: bool = False
    # a POST the service makes once however often it arrives, without a key (by content)
    repeatable: bool = False

    def __post_init__(self) -> None:
        if self.idempotent and not self.headers.get("Idempotency-Key"):
            self.headers["Idempotency-Key"] = uuid.uuid4().hex

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key") or None

    @property
    def safe_to_retry(self) -> bool:
        """Sending it again makes nothing twice: not a POST, or a POST the service makes once
        (under its Idempotency-Key, or by its nature); and its body can be sent again."""
        if self.file is not None and not self.file.retryable:
            return False
        return self.method != "POST" or self.repeatable or self.idempotency_key is not None

    @contextmanager
    def attempt(self) -> Iterator[dict[str, Any]]:
        """httpx arguments for one attempt; a file opened for it is closed after it."""
        kw: dict[str, Any] = {"headers": self.headers}
        if self.json is not None:
            kw["json"] = self.json
        if self.params:
            kw["params"] = self.params
        if self.data:
            kw["data"] = self.data
        if self.timeout is not None:
            kw["timeout"] = self.timeout
        if self.file is None:
            yield kw
            return
        fh, owned = self.file.open()
        kw["files"] = {"file": (self.file.filename, fh, "application/octet-stream")}
        try:
            yield kw
        finally:
            if owned:
                fh.close()


def _headers(api_key: str | None) -> dict[str, str]:
    h = {"User-Agent": f"sharpness-client/{__version__}", "Accept": "application/json"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def _transport_error(exc: httpx.TransportError, req: Request) -> APIConnectionError:
    where = f"{req.method} {req.path}"
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{where} timed out: {exc or type(exc).__name__}")
    return APIConnectionError(f"{where}: could not reach the service: {exc}")


class _Base:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout,
        max_retries: int,
    ) -> None:
        self.base_url, self.api_key = resolve_config(base_url, api_key)
        self.timeout = timeout
        self.policy = RetryPolicy(max_retries=max_retries)

    def _settle(
        self, req: Request, attempt: int, outcome: httpx.Response | httpx.TransportError
    ) -> httpx.Response | float:
        """The answer when it is final (an error raised), else the seconds to wait before the
        next attempt."""
        resp = outcome if isinstance(outcome, httpx.Response) else None
        if resp is not None and resp.status_code < 400:
            return resp
        if not self.policy.should_retry(attempt, resp, repeatable=req.safe_to_retry):
            if isinstance(outcome, httpx.TransportError):
                raise _transport_error(outcome, req)
            raise error_for(outcome)
        wait = self.policy.delay(attempt, resp)
        why = f"status {resp.status_code}" if resp is not None else "connection error"
        log.info("%s %s: %s, retry %d in %.2f s", req.method, req.path, why, attempt + 1, wait)
        return wait


class SyncHTTP(_Base):
    def __init__(self, *args: Any, http_client: httpx.Client | None = None) -> None:
        super().__init__(*args)
        self.client = http_client or httpx.Client(
            base_url=self.base_url, headers=_headers(self.api_key), timeout=self.timeout
        )

    def send(self, req: Request) -> httpx.Response:
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                with req.attempt() as kw:
                    outcome = self.client.request(req.method, req.path, **kw)
            except httpx.TransportError as e:
                outcome = e
            done = self._settle(req, attempt, outcome)
            if isinstance(done, httpx.Response):
                return done
            time.sleep(done)
            attempt += 1

    def close(self) -> None:
        self.client.close()


class AsyncHTTP(_Base):
    def __init__(self, *args: Any, http_client: httpx.AsyncClient | None = None) -> None:
        super().__init__(*args)
        self.client = http_client or httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(self.api_key), timeout=self.timeout
        )

    async def send(self, req: Request) -> httpx.Response:
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                with req.attempt() as kw:
                    outcome = await self.client.request(req.method, req.path, **kw)
            except httpx.TransportError as e:
                outcome = e
            done = self._settle(req, attempt, outcome)
            if isinstance(done, httpx.Response):
                return done
            await asyncio.sleep(done)
            attempt += 1

    async def close(self) -> None:
        await self.client.aclose()
