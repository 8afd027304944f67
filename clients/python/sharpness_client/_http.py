"""The one place requests are sent: auth, idempotency keys, retries, error mapping.

Every POST gets an `Idempotency-Key` (the caller's, or a fresh uuid4) that is reused on each
of its retries, so a job submitted twice because an answer was lost is one job. The sync and
async transports share everything but the sleeping and the sending.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from sharpness_client import __version__
from sharpness_client._files import FileSource
from sharpness_client._retry import RetryPolicy
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

    def __post_init__(self) -> None:
        if self.method == "POST":
            self.headers.setdefault("Idempotency-Key", uuid.uuid4().hex)

    def kwargs(self) -> tuple[dict[str, Any], Any]:
        """httpx arguments for one attempt, and the file to close after it (if any)."""
        kw: dict[str, Any] = {"headers": self.headers}
        if self.json is not None:
            kw["json"] = self.json
        if self.params:
            kw["params"] = self.params
        if self.data:
            kw["data"] = self.data
        if self.timeout is not None:
            kw["timeout"] = self.timeout
        to_close = None
        if self.file is not None:
            fh, owned = self.file.open()
            kw["files"] = {"file": (self.file.filename, fh, "application/octet-stream")}
            to_close = fh if owned else None
        return kw, to_close


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

    def _retry(self, req: Request, attempt: int, resp: httpx.Response | None) -> float | None:
        """Seconds to wait before the next attempt, or None to stop here."""
        if req.file is not None and not req.file.retryable:
            return None
        if not self.policy.should_retry(attempt, resp):
            return None
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
            kw, to_close = req.kwargs()
            try:
                resp: httpx.Response | None = self.client.request(req.method, req.path, **kw)
                error: Exception | None = None
            except httpx.TransportError as e:
                resp, error = None, _transport_error(e, req)
            finally:
                if to_close is not None:
                    to_close.close()
            if resp is not None and resp.status_code < 400:
                return resp
            wait = self._retry(req, attempt, resp)
            if wait is None:
                raise error_for(resp) if resp is not None else error  # type: ignore[misc]
            time.sleep(wait)
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
            kw, to_close = req.kwargs()
            try:
                resp: httpx.Response | None = await self.client.request(req.method, req.path, **kw)
                error: Exception | None = None
            except httpx.TransportError as e:
                resp, error = None, _transport_error(e, req)
            finally:
                if to_close is not None:
                    to_close.close()
            if resp is not None and resp.status_code < 400:
                return resp
            wait = self._retry(req, attempt, resp)
            if wait is None:
                raise error_for(resp) if resp is not None else error  # type: ignore[misc]
            await asyncio.sleep(wait)
            attempt += 1

    async def close(self) -> None:
        await self.client.aclose()
