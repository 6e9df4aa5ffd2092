"""Request bodies: one rule for every route that takes one. The body is JSON whatever its Content-Type says (as
OpenAI's API does: SDKs and curl users send text/plain or nothing), it is read by one parser, and that parser
refuses, in one message style, what it cannot read: an empty body, bytes that are not UTF-8, text that is not
JSON, JSON that is not an object, and nesting deeper than MAX_JSON_DEPTH (Python's parser would otherwise raise
RecursionError, and deeply nested values break every recursive walk after it).

Every router is an `APIRouter(route_class=JsonRoute)`: its routes parse the body before FastAPI sees it, so
FastAPI's own parsing (which refuses text/plain and words every failure "There was an error parsing the body")
never runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.errors import InvalidBody

MAX_JSON_DEPTH = 64
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_OPENERS = frozenset("[{")


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `text` nests arrays/objects more than `limit` deep (brackets inside strings do not count). A scan
    of the text, so it costs one pass whatever the nesting and never recurses."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    for char in brackets:
        if char in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidBody("Request body is empty: send a JSON object")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidBody(f"Request body is not valid UTF-8: {exc}") from None
    if too_deep(text):
        raise InvalidBody(f"Request body nests JSON more than {MAX_JSON_DEPTH} levels deep (the limit)")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidBody(f"Request body is not valid JSON: {exc}") from None
    except RecursionError:  # (the scan above makes this unreachable; kept as the backstop)
        raise InvalidBody(f"Request body nests JSON more than {MAX_JSON_DEPTH} levels deep (the limit)") from None
    if not isinstance(data, dict):
        raise InvalidBody(f"Request body must be a JSON object, not a JSON {type(data).__name__}")
    return data


class JsonRequest(Request):
    """A request whose `json()` is parse_json_object's (parsed once, then cached like Starlette's)."""

    async def json(self) -> dict[str, Any]:
        if not hasattr(self, "_json"):
            self._json = parse_json_object(await self.body())
        return self._json


def _json_scope(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    """The scope with the Content-Type FastAPI needs to hand the body to `json()`: every body here is JSON."""
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


class JsonRoute(APIRoute):
    """A route that reads its body (when it takes one) as JSON through parse_json_object, before validation."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None and "requestBody" not in (self.openapi_extra or {}):
            return handler  # takes no body: whatever was sent is not read

        async def parse_then_handle(request: Request) -> Response:
            json_request = JsonRequest(_json_scope(request.scope), request.receive)
            await json_request.json()  # a typed error here reaches the one error mapper (app/api/errors.py)
            return await handler(json_request)

        return parse_then_handle


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object, for routes that validate it themselves (chat, completions, responses)."""
    if isinstance(request, JsonRequest):
        return await request.json()
    return parse_json_object(await request.body())
