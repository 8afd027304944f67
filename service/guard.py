"""Checks made before any request body is read: the API key on /v1, and a size cap on JSON
bodies (413), so an unauthenticated or oversized body costs the gateway no memory.

A pure ASGI middleware: it answers from the headers alone, and for a JSON body sent without
Content-Length (chunked) it counts bytes as they arrive and answers 413 past the cap.
Uploads (multipart) keep their own, larger cap (SHARPNESS_MAX_UPLOAD_BYTES, in the routers).
"""

from __future__ import annotations

import hmac
from typing import Any

from service.problems import problem_response
from tasks.problem_types import uri
from tasks.spec import Problem

MAX_JSON_BYTES = 4 * 1024 * 1024  # a job spec is a few kB; a study lists at most a few thousand


def _problem(status: int, slug: str, detail: str, title: str, headers=None):
    return problem_response(
        Problem(type=uri(slug), title=title, status=status, detail=detail), headers
    )


class Guard:
    def __init__(self, app: Any, settings: Any, max_json_bytes: int = MAX_JSON_BYTES) -> None:
        self.app, self.settings, self.cap = app, settings, max_json_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.settings.api_key
        if key and scope["path"].startswith("/v1"):
            given = headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                response = _problem(
                    401,
                    "unauthorized",
                    "Authorization: send 'Authorization: Bearer <key>' with the configured API key",
                    "Unauthorized",
                    {"WWW-Authenticate": "Bearer"},
                )
                return await response(scope, receive, send)
        if not headers.get("content-type", "").startswith("application/json"):
            return await self.app(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.cap:
            return await self._too_large(scope, receive, send)
        seen, answered = 0, False

        async def counted() -> dict:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.cap and not answered:
                    answered = True
                    await self._too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not answered:  # after our 413 the app's own answer is dropped
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not answered:
                raise

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = _problem(
            413,
            "too-large",
            f"body: a JSON body may be at most {self.cap} bytes; send less (upload data and "
            "models with the upload routes)",
            "Request body too large",
        )
        await response(scope, receive, send)
