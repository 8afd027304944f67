"""Checks made before any request body is parsed: the caller's key on /v1 and /metrics (which
tenant it is, service.tenants) and its requests-per-minute limit, a size cap on JSON
bodies (413) and a cap on their nesting depth (422), so an unauthenticated, oversized or
pathologically nested body costs the gateway no memory and no recursion.

A pure ASGI middleware: it answers from the headers alone, and for a JSON body sent without
Content-Length (chunked) it counts bytes as they arrive and answers 413 past the cap. Every
JSON body's brackets are counted as it streams in (outside strings); one nested deeper than
MAX_JSON_DEPTH gets the same `body:` 422 as any body that is not a usable JSON object, before
a parser could run out of stack on it.
Uploads (multipart) keep their own, larger cap (SHARPNESS_MAX_UPLOAD_BYTES, in the routers).
"""

from __future__ import annotations

import re
from typing import Any

from service.problems import problem_response
from service.tenants.quotas import RequestLimiter
from service.tenants.registry import OPEN, Role, Tenant, Tenants
from tasks.contract.problem_types import uri
from tasks.contract.spec import Problem

MAX_JSON_BYTES = 4 * 1024 * 1024  # a job spec is a few kB; a study lists at most a few thousand
MAX_JSON_DEPTH = 64  # a job spec nests 4 levels, a study 5; json.loads recurses per level

_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


def _is_json(content_type: str) -> bool:
    """A media type FastAPI parses as JSON: application/json or application/*+json."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class _Depth:
    """The nesting depth of a JSON text fed in chunks: brackets outside strings, with the
    escapes inside them skipped. `feed` returns True once the depth passes `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit, self.depth, self.in_string, self.escaped_at = limit, 0, False, -1

    def feed(self, chunk: bytes) -> bool:
        for m in _STRUCTURE.finditer(chunk):
            c, at = m.group(), m.start()
            if self.in_string:
                if at == self.escaped_at:  # the character a backslash escapes
                    self.escaped_at = -1
                elif c == b"\\":
                    self.escaped_at = at + 1
                elif c == b'"':
                    self.in_string = False
            elif c == b'"':
                self.in_string = True
            elif c in (b"[", b"{"):
                self.depth += 1
                if self.depth > self.limit:
                    return True
            elif c in (b"]", b"}"):
                self.depth -= 1
        # an escape pending at the chunk's end applies to the next chunk's first byte
        self.escaped_at = 0 if self.escaped_at == len(chunk) else -1
        return False


def _problem(status: int, slug: str, detail: str, title: str, headers=None):
    return problem_response(
        Problem(type=uri(slug), title=title, status=status, detail=detail), headers
    )


METRICS = "/metrics"  # with a tenants file, for ops and admin keys only


class Guard:
    def __init__(
        self,
        app: Any,
        settings: Any,
        max_json_bytes: int = MAX_JSON_BYTES,
        max_json_depth: int = MAX_JSON_DEPTH,
        tenants: Tenants | None = None,
        limiter: RequestLimiter | None = None,
    ) -> None:
        self.app, self.settings, self.cap = app, settings, max_json_bytes
        self.max_depth = max_json_depth
        self.tenants = tenants if tenants is not None else Tenants.from_settings(settings)
        self.limiter = limiter

    def _caller(self, path: str, headers: dict[str, str]) -> Tenant | Any:
        """The calling tenant, or the problem response that refuses the request."""
        protected = ("/v1", METRICS) if self.tenants.from_file else ("/v1",)
        if self.tenants.open or not path.startswith(protected):
            return OPEN  # /healthz, /readyz and the docs stay open
        given = headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        tenant = self.tenants.find(token) if token else None
        if tenant is None:
            return _problem(
                401,
                "unauthorized",
                "Authorization: send 'Authorization: Bearer <key>' with a configured API key",
                "Unauthorized",
                {"WWW-Authenticate": "Bearer"},
            )
        if path.startswith(METRICS) and tenant.role == Role.user:
            return _problem(
                403,
                "forbidden",
                f"Authorization: tenant {tenant.name} (user) may not read {METRICS}; it is for "
                "ops and admin keys",
                "Forbidden",
            )
        if self.limiter is not None:
            refused = self.limiter.hit(tenant)
            if refused is not None:
                return refused
        return tenant

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        caller = self._caller(scope["path"], headers)
        if not isinstance(caller, Tenant):
            return await caller(scope, receive, send)
        scope.setdefault("state", {})["tenant"] = caller
        if not _is_json(headers.get("content-type", "")):
            return await self.app(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.cap:
            return await self._too_large(scope, receive, send)
        seen, answered = 0, False
        depth = _Depth(self.max_depth)

        async def counted() -> dict:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > self.cap and not answered:
                    answered = True
                    await self._too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
                if not answered and depth.feed(body):
                    answered = True
                    await self._too_deep(scope, receive, send)
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

    async def _too_deep(self, scope: dict, receive: Any, send: Any) -> None:
        message = (
            f"the JSON is nested more than {self.max_depth} levels deep; send a JSON object "
            "with Content-Type: application/json (a job spec nests a few levels)"
        )
        problem = Problem(
            type=uri("validation"),
            title="Request validation failed",
            status=422,
            detail=f"body: {message}",
            instance=scope.get("path"),
            errors=[{"field": "body", "message": message, "type": "json_invalid"}],
        )
        await problem_response(problem)(scope, receive, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = _problem(
            413,
            "too-large",
            f"body: a JSON body may be at most {self.cap} bytes; send less (upload data and "
            "models with the upload routes)",
            "Request body too large",
        )
        await response(scope, receive, send)
