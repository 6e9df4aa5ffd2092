"""Credentials (constant-time comparisons; secrets only from the environment):

* admin routes need TONEWATCH_ADMIN_TOKEN as a bearer token (disabled, 403, until one is configured);
* with TONEWATCH_API_KEYS set, every /v1 route needs one of those keys (like vLLM's --api-key); the admin token
  is accepted too;
* session history (prompts and responses) needs a client key or the admin token, and is refused when neither is
  configured: session ids are client-chosen and guessable, so history is never world-readable.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.api.deps import StateDep
from app.errors import Forbidden, Unauthorized


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip()


def _matches(given: str | None, secrets) -> bool:
    if given is None:
        return False
    ok = False
    for secret in secrets:  # compare against every key, so timing says nothing about which matched
        ok |= hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
    return ok


def require_admin(request: Request, state: StateDep) -> None:
    token = state.settings.admin_token
    if token is None:
        raise Forbidden("admin API is disabled: set TONEWATCH_ADMIN_TOKEN (16+ characters) and restart")
    if not _matches(_bearer(request), [token]):
        raise Unauthorized("missing or wrong bearer token for the admin API")


def require_client(request: Request, state: StateDep) -> None:
    keys = state.settings.api_keys
    if not keys:
        return
    given = _bearer(request)
    admin = [state.settings.admin_token] if state.settings.admin_token else []
    if not _matches(given, [*keys, *admin]):
        raise Unauthorized(
            "missing or wrong API key: send 'Authorization: Bearer <key>' with one of TONEWATCH_API_KEYS"
        )


def require_history_reader(request: Request, state: StateDep) -> None:
    settings = state.settings
    secrets = [*settings.api_keys, *([settings.admin_token] if settings.admin_token else [])]
    if not secrets:
        raise Forbidden(
            "session history holds prompts and responses and is not readable without credentials: "
            "set TONEWATCH_API_KEYS (client keys) or TONEWATCH_ADMIN_TOKEN and send it as a bearer token"
        )
    if not _matches(_bearer(request), secrets):
        raise Unauthorized("reading session history needs a client API key or the admin token as a bearer token")


AdminDep = Annotated[None, Depends(require_admin)]
ClientDep = Annotated[None, Depends(require_client)]
HistoryReaderDep = Annotated[None, Depends(require_history_reader)]
