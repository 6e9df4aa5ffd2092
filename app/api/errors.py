"""The ONE place where failures become HTTP: typed errors -> status + OpenAI-shaped error envelope.

Every error answer has the shape `{"error": {"message", "type", "code", "param"}}`; an upstream's own 4xx body is
passed through unchanged (gateway mode), because clients parse the upstream's wording.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from app import errors as e

log = logging.getLogger("tonewatch.errors")

# class -> (HTTP status, OpenAI error type); looked up along the MRO, so subclasses inherit their parent's row
_STATUS: dict[type[e.TonewatchError], tuple[int, str]] = {
    e.InvalidRequest: (400, "invalid_request_error"),
    e.Unauthorized: (401, "authentication_error"),
    e.Forbidden: (403, "permission_error"),
    e.NotYourSession: (403, "permission_error"),
    e.ModelNotFound: (404, "invalid_request_error"),
    e.NotFound: (404, "invalid_request_error"),
    e.Conflict: (409, "invalid_request_error"),
    e.PayloadTooLarge: (413, "invalid_request_error"),
    e.InvalidAdapter: (400, "invalid_request_error"),  # a bad adapter folder is a bad request, like any other
    e.QueueFull: (429, "rate_limit_error"),
    e.Cancelled: (499, "invalid_request_error"),
    e.NotSupportedByBackend: (501, "server_error"),
    e.UpstreamUnavailable: (502, "server_error"),
    e.GenerationFailed: (500, "server_error"),
    e.EngineUnavailable: (503, "server_error"),
    e.StoreDown: (503, "server_error"),
    e.QueueTimeout: (504, "timeout_error"),
    e.UpstreamTimeout: (504, "timeout_error"),
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


def error_body(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def status_of(exc: e.TonewatchError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500, "server_error"


def envelope(exc: e.TonewatchError) -> dict[str, Any]:
    """The in-band form (used for errors inside an already-started SSE stream)."""
    if isinstance(exc, e.RequestInvalid):
        message, param = describe_validation(exc.errors)
        return error_body(message, "invalid_request_error", "invalid_request", param)
    if isinstance(exc, e.UpstreamRejected) and isinstance(exc.body, dict) and "error" in exc.body:
        return exc.body
    _, type_ = status_of(exc)
    return error_body(exc.message, type_, exc.code, exc.param)


def to_response(exc: e.TonewatchError) -> JSONResponse:
    if isinstance(exc, e.RequestInvalid):
        message, param = describe_validation(exc.errors)
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_request", param), status_code=400)
    if isinstance(exc, e.UpstreamRejected):
        return JSONResponse(exc.body if exc.body is not None else {}, status_code=exc.status)
    status, _ = status_of(exc)
    headers = {}
    if isinstance(exc, e.QueueFull):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, e.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(envelope(exc), status_code=status, headers=headers)


def _is_type_name(part: object) -> bool:
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "list", "dict"}
        or "[" in part
        or part.startswith(("function-", "tagged-union"))
    )


def describe_validation(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """pydantic errors -> one readable message and the first offending field, written like the JSON path."""
    parts: list[str] = []
    param = None
    for err in errors[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body" and not _is_type_name(x)]
        where = ".".join(loc) or "body"
        if err.get("type") == "json_invalid":
            return "Request body is not valid JSON: " + str(err.get("ctx", {}).get("error", "")), None
        msg = str(err.get("msg", "invalid value"))
        if err.get("type") == "extra_forbidden":
            msg = "is not a field Tonewatch accepts here (see the README's field list)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        param = param or where
        text = f"{where}: {msg}"
        if text not in parts:
            parts.append(text)
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.TonewatchError)
    async def _typed(_: Request, exc: e.TonewatchError) -> JSONResponse:
        return to_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(list(exc.errors()))
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_request", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404:
            message = _not_found_message(request)
        elif exc.status_code == 405:
            allowed = allowed_methods(request.url.path, _served_paths(request))
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                message = f"{request.method} is not allowed on {request.url.path}; it takes {', '.join(allowed)}"
        return JSONResponse(
            error_body(message, "invalid_request_error", code), status_code=exc.status_code, headers=headers or None
        )


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _served_paths(request: Request) -> dict[str, Any]:
    """path template -> its operations (routers' routes are wrapped in this FastAPI; the document lists them)."""
    return request.app.openapi().get("paths", {})


def allowed_methods(path: str, served: Mapping[str, Any]) -> list[str]:
    """Every method some route serves on `path` (Starlette's 405 names only the first route that matched the path,
    so /admin/personas/{name} said GET although PUT and DELETE are there too). A fixed path wins over templates that
    would also match it: /v1/sessions/export is the export, not a session called "export"."""
    matching = [t for t in served if compile_path(t)[0].match(path)]
    fixed = [t for t in matching if "{" not in t]
    methods: set[str] = set()
    for template in fixed or matching:
        methods |= {m.upper() for m in served[template] if m.upper() in HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return sorted(methods)


def _not_found_message(request: Request) -> str:
    path = request.url.path
    near = nearest_route(path, list(_served_paths(request)))
    hint = f"; did you mean {near}?" if near else "; GET /docs lists the served routes"
    return f"no route {request.method} {path}{hint}"


def nearest_route(path: str, templates: Sequence[str]) -> str | None:
    """A served route that `path` is plausibly a slip of, or None. Only close calls: the same segments with at most
    one typo (a path parameter stands for any one segment), a stray trailing slash, or a missing last parameter.
    (Whole-string similarity suggested /v1/responses for GET /v1/sessions/.)"""
    parts = [p for p in path.split("/") if p]
    best: tuple[int, str] | None = None
    for template in templates:
        wanted = [p for p in template.split("/") if p]
        missing_param = len(wanted) == len(parts) + 1 and wanted[-1].startswith("{")
        if len(wanted) != len(parts) and not missing_param:
            continue
        slips = [_slip(got, want) for got, want in zip(parts, wanted, strict=False)]
        if None in slips or sum(s for s in slips if s is not None) > 1:
            continue
        cost = sum(s for s in slips if s is not None) + missing_param
        if (cost > 0 or path.endswith("/")) and (best is None or cost < best[0]):
            best = (cost, template)
    return best[1] if best else None


def _slip(got: str, want: str) -> int | None:
    """0: the segment matches; 1: a typo of it; None: something else."""
    from difflib import SequenceMatcher

    if got == want or want.startswith("{"):
        return 0
    return 1 if SequenceMatcher(None, got.lower(), want.lower()).ratio() >= 0.75 else None


# For route declarations: every documented error answer has the envelope schema.
# a 200 of a generation route is JSON, or server-sent events when the body asks for "stream": true
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'JSON; with "stream": true, server-sent events (data: <chunk JSON> lines, then data: [DONE])',
        # one server-sent event (OpenAPI 3.1: the SSE media type's schema describes each event, not the stream)
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
                    "required": ["data"],
                }
            }
        },
    }
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Invalid request",
        401: "Missing or wrong credentials",
        403: "Capability disabled",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        429: "Queue full (see Retry-After)",
        500: "This request's generation failed",
        501: "Not supported by the generation backend",
        502: "Upstream unavailable",
        503: "Engine or store unavailable",
        504: "Timed out",
    }
    return {s: {"model": ErrorEnvelope, "description": described.get(s, "Error")} for s in statuses}
