"""Typed errors and the ONE place that turns any failure into the OpenAI-shaped error envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tonewatch.errors")


class TonewatchError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}


class InvalidRequest(TonewatchError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class PromptTooLong(InvalidRequest):
    code = "context_length_exceeded"


class ModelNotFound(TonewatchError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class NotFound(TonewatchError):
    status, type, code = 404, "invalid_request_error", "not_found"


class Conflict(TonewatchError):
    status, type, code = 409, "invalid_request_error", "conflict"


class InvalidAdapter(TonewatchError):
    status, type, code = 422, "invalid_request_error", "invalid_adapter"


class PayloadTooLarge(TonewatchError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class Unauthorized(TonewatchError):
    status, type, code = 401, "authentication_error", "invalid_token"


class AdminDisabled(TonewatchError):
    status, type, code = 403, "permission_error", "admin_disabled"


class QueueFull(TonewatchError):
    status, type, code = 429, "rate_limit_error", "queue_full"


class QueueTimeout(TonewatchError):
    status, type, code = 504, "timeout_error", "queue_timeout"


class EngineUnavailable(TonewatchError):
    status, type, code = 503, "server_error", "engine_unavailable"


class StoreDown(TonewatchError):
    status, type, code = 503, "server_error", "store_unavailable"


def error_body(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def _is_type_name(part: object) -> bool:
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "list", "dict"} or "[" in part)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    parts = []
    param = None
    for err in exc.errors()[:5]:
        # drop pydantic's union-branch names ("str", "list[TextPart]") so the path reads like the JSON
        loc = [str(x) for x in err.get("loc", ()) if x != "body" and not _is_type_name(x)]
        where = ".".join(loc) or "body"
        param = param or where
        if err.get("type") == "json_invalid":
            return "Request body is not valid JSON: " + str(err.get("ctx", {}).get("error", "")), None
        text = f"{where}: {err.get('msg')}"
        if text not in parts:
            parts.append(text)
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TonewatchError)
    async def _typed(_: Request, exc: TonewatchError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.message, exc.type, exc.code, exc.param), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_request", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code), status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal server error", "server_error", "internal_error"), status_code=500)
