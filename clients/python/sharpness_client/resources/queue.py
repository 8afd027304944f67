"""`client.queue` (what waits, what runs, who works) and `client.measures` (the catalogue)."""

from __future__ import annotations

from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client.types import MeasureInfo, QueueStatus


class Queue:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def get(self) -> QueueStatus:
        """Queue depths (waiting, reserved), live workers with heartbeat ages, running jobs
        and the oldest queued job's wait."""
        return QueueStatus.model_validate(self._http.send(Request("GET", "/v1/queue")).json())


class AsyncQueue:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def get(self) -> QueueStatus:
        resp = await self._http.send(Request("GET", "/v1/queue"))
        return QueueStatus.model_validate(resp.json())


class Measures:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def list(self) -> list[MeasureInfo]:
        """Every measure the service knows, with the JSON schema of its params."""
        resp = self._http.send(Request("GET", "/v1/measures"))
        return [MeasureInfo.model_validate(m) for m in resp.json()]


class AsyncMeasures:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def list(self) -> list[MeasureInfo]:
        resp = await self._http.send(Request("GET", "/v1/measures"))
        return [MeasureInfo.model_validate(m) for m in resp.json()]
