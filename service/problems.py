"""RFC 9457 problem details for every error the gateway answers.

One shape for all failures (a refused upload, a bad job spec, an unknown route, a Redis
outage, a bug) lets clients handle errors in one place: `type` says which kind of problem
(a URN per kind, every one defined once in tasks.contract.problem_types, which the worker uses
too), `detail` names the field or the file at fault, and validation errors add an
`errors` list.
"""

from __future__ import annotations

import difflib
import logging
import re
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tasks.contract.measures import catalogue
from tasks.contract.problem_types import uri
from tasks.contract.spec import Problem

log = logging.getLogger("sharpness.gateway")

MEDIA_TYPE = "application/problem+json"

# Titles for statuses raised by the framework itself (unknown route, wrong method).
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


class ProblemError(Exception):
    """Raised anywhere in a request; becomes a problem+json answer."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.errors = errors
        self.headers = headers

    def problem(self, instance: str | None = None) -> Problem:
        return Problem(
            type=uri(self.slug),
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
        )


def field_error(field: str, message: str, kind: str = "value_error") -> dict[str, Any]:
    """One entry of a problem's `errors` list."""
    return {"field": field, "message": message, "type": kind}


def invalid(field: str, message: str, slug: str = "invalid-field") -> ProblemError:
    """A 422 naming one field, in the same shape as a schema validation error."""
    return ProblemError(422, slug, f"{field}: {message}", errors=[field_error(field, message)])


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'measures', 0, 'params', 'k') → 'measures.0.params.k'; query/path keep their
    prefix ('query.limit') so the client knows where to look."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def _object_at(schema: dict[str, Any], path: list[Any], components: dict[str, Any]) -> dict:
    """The object schema that `path` (field names and list indices) leads to, or {}."""
    schema = _resolve(schema, components)
    for part in path:
        options = [_resolve(s, components) for s in schema.get("anyOf", [schema])]
        step = {}
        for option in options:
            if isinstance(part, int) and "items" in option:
                step = _resolve(option["items"], components)
            elif isinstance(part, str) and part in option.get("properties", {}):
                step = _resolve(option["properties"][part], components)
            if step:
                break
        schema = step
        if not schema:
            return {}
    options = [_resolve(s, components) for s in schema.get("anyOf", [schema])]
    return next((o for o in options if o.get("properties")), {})


def _allowed_names(request: Request | None, body: Any, loc: list[Any]) -> list[str]:
    """The field names allowed where an unknown one was sent: a measure's parameters from
    the catalogue, else the properties of the request body's schema at that place."""
    path = loc[1:-1] if loc and loc[0] == "body" else []
    if len(path) == 3 and path[0] == "measures" and path[2] == "params":
        try:
            name = body["measures"][path[1]]["name"]
            return list(catalogue.measures()[name].params.model_fields)
        except (KeyError, IndexError, TypeError):
            return []
    if request is None or not loc or loc[0] != "body":
        return []
    route = request.scope.get("route")
    try:
        spec = request.app.openapi()
        operation = spec["paths"][route.path][request.method.lower()]
        content = operation["requestBody"]["content"]
        schema = next(iter(content.values()))["schema"]
    except (AttributeError, KeyError, StopIteration, TypeError):
        return []
    components = spec.get("components", {}).get("schemas", {})
    return list(_object_at(schema, path, components).get("properties", {}))


_ID_NOUNS = {
    "jobs": "job",
    "trajectories": "trajectory",
    "studies": "study",
    "models": "model",
    "datasets": "dataset",
    "optimizer-states": "optimizer state",
}


def _bad_id(e: dict[str, Any], request: Request | None) -> str:
    """A path id of the wrong form, in words: "'abc' is not a job id (32 hex characters)"."""
    value = str(e.get("input", ""))
    width = re.search(r"\{(\d+)\}", str((e.get("ctx") or {}).get("pattern", "")))
    noun = "record"
    if request is not None:
        parts = request.url.path.strip("/").split("/")
        if value in parts and parts.index(value) > 0:
            noun = _ID_NOUNS.get(parts[parts.index(value) - 1], noun)
    if width is None:
        return f"{value!r} is not a {noun} id"
    form = f"{width.group(1)} hex characters"
    if width.group(1) == "64":
        form += ": the sha256 its upload returned"
    return f"{value!r} is not a {noun} id ({form})"


def _message(e: dict[str, Any], request: Request | None, body: Any) -> tuple[str, str]:
    """(field, message) for one pydantic error, worded to name the fix."""
    loc = list(e.get("loc", ()))
    field = _field_path(loc)
    kind = e.get("type")
    msg = str(e.get("msg", "invalid"))
    if kind == "extra_forbidden":
        unknown = str(loc[-1]) if loc else field
        names = _allowed_names(request, body, loc)
        if names:
            close = difflib.get_close_matches(unknown, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            msg = f"unknown field {unknown!r}; {hint}valid fields here: {', '.join(names)}"
        else:
            msg = f"unknown field {unknown!r}; remove it or check its spelling"
    elif kind == "json_invalid":
        where = loc[-1] if loc and isinstance(loc[-1], int) else None
        reason = (e.get("ctx") or {}).get("error", "")
        at = f" at character {where}" if where is not None else ""
        field = "body"
        msg = (
            f"the body is not valid JSON{at}"
            + (f" ({reason})" if reason else "")
            + "; send a JSON object with Content-Type: application/json"
        )
    elif kind == "string_pattern_mismatch" and loc and loc[0] == "path":
        msg = _bad_id(e, request)
    elif kind == "missing" and field == "body":
        msg = "the body is empty; send a JSON object with Content-Type: application/json"
    elif kind in ("model_attributes_type", "dict_type") and field == "body":
        msg = (
            "expected a JSON object; send the body as JSON with "
            "Content-Type: application/json (see /docs for its fields)"
        )
    return field, msg


def validation_problem(
    exc: RequestValidationError, instance: str, request: Request | None = None
) -> Problem:
    errors = []
    body = getattr(exc, "body", None)
    for e in exc.errors():
        field, msg = _message(e, request, body)
        errors.append({"field": field, "message": msg, "type": e.get("type")})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Problem(
        type=uri("validation"),
        title="Request validation failed",
        status=422,
        detail=detail,
        instance=instance,
        errors=errors,
    )


def allowed_methods(request: Request, starlette_allow: str | None = None) -> list[str]:
    """Every method the API serves on the request's path (a 405's `Allow`), read from the
    OpenAPI description, not only those of the one route Starlette matched first."""
    path = request.url.path
    methods = {m.strip().upper() for m in (starlette_allow or "").split(",") if m.strip()}
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in operations if m.upper() in _HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


_HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.problem(request.url.path), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(exc, request.url.path, request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        headers = getattr(exc, "headers", None)
        if status == 404 and exc.detail == "Not Found":
            detail = f"no route {request.url.path}; see /docs for the API"
        elif status == 405:
            allowed = allowed_methods(request, (headers or {}).get("Allow"))
            detail = (
                f"{request.method} is not allowed on {request.url.path}; allowed: "
                f"{', '.join(allowed)}"
            )
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        else:
            detail = str(exc.detail)
        problem = Problem(
            type="about:blank",
            title=_TITLES.get(status, "Error"),
            status=status,
            detail=detail,
            instance=request.url.path,
        )
        return problem_response(problem, headers)

    @app.exception_handler(redis.RedisError)
    async def _redis(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis unavailable on %s: %s", request.url.path, exc)
        problem = ProblemError(
            503, "redis-unavailable", f"the job store (Redis) did not answer: {exc}"
        ).problem(request.url.path)
        return problem_response(problem, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = ProblemError(
            500,
            "internal",
            f"unexpected {type(exc).__name__} while handling {request.method} "
            f"{request.url.path}; the gateway log has the traceback",
        ).problem(request.url.path)
        return problem_response(problem)
