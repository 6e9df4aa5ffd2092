"""Credentials (constant-time comparisons; secrets only from the environment):

* admin routes need TONEWATCH_ADMIN_TOKEN as a bearer token (disabled, 403, until one is configured);
* with TONEWATCH_API_KEYS set, every /v1 route needs one of those keys (like vLLM's --api-key); the admin token
  is accepted too;
* session history (prompts and responses) needs a client key or the admin token, and is refused when neither is
  configured: session ids are client-chosen and guessable, so history is never world-readable;
* a client key is known by its id (`key_id`: a hash prefix, never the key) on the sessions its requests create,
  and reads, lists and exports only those; the admin token reads every session.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Principal:
    """Who sent the request: the admin token, a client key (by id), or nobody (no keys configured)."""

    admin: bool = False
    key_id: str | None = None

    @property
    def owner(self) -> str | None:
        """The id recorded on the turns this request writes (None: the admin, or an open server)."""
        return None if self.admin else self.key_id

    @property
    def reader(self) -> str | None:
        """Whose sessions it may read: its own key id, or None for every session (the admin)."""
        return None if self.admin else self.key_id


def key_id(secret: str) -> str:
    """A stable, non-reversible name for a client key (what sessions record; safe to show in lists and logs)."""
    return "key_" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def _matches(given: str | None, secrets) -> bool:
    return _which(given, secrets) is not None


def _which(given: str | None, secrets) -> str | None:
    """The secret `given` equals, or None; compared against every secret, so timing says nothing about which."""
    if given is None:
        return None
    found = None
    for secret in secrets:
        value = secret.get_secret_value()
        if hmac.compare_digest(given.encode(), value.encode()):
            found = value
    return found


def _principal(given: str | None, state) -> Principal | None:
    settings = state.settings
    if settings.admin_token is not None and _which(given, [settings.admin_token]) is not None:
        return Principal(admin=True)
    key = _which(given, settings.api_keys)
    return Principal(key_id=key_id(key)) if key is not None else None


def require_admin(request: Request, state: StateDep) -> None:
    token = state.settings.admin_token
    if token is None:
        raise Forbidden("admin API is disabled: set TONEWATCH_ADMIN_TOKEN (16+ characters) and restart")
    if not _matches(_bearer(request), [token]):
        raise Unauthorized("missing or wrong bearer token for the admin API")


def require_client(request: Request, state: StateDep) -> Principal:
    principal = _principal(_bearer(request), state)
    if principal is not None:
        return principal
    if not state.settings.api_keys:
        return Principal()  # an open server: no keys configured, nobody owns the sessions
    raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>' with one of TONEWATCH_API_KEYS")


def require_history_reader(request: Request, state: StateDep) -> Principal:
    settings = state.settings
    if not settings.api_keys and settings.admin_token is None:
        raise Forbidden(
            "session history holds prompts and responses and is not readable without credentials: "
            "set TONEWATCH_API_KEYS (client keys) or TONEWATCH_ADMIN_TOKEN and send it as a bearer token"
        )
    principal = _principal(_bearer(request), state)
    if principal is None:
        raise Unauthorized("reading session history needs a client API key or the admin token as a bearer token")
    return principal


AdminDep = Annotated[None, Depends(require_admin)]
ClientDep = Annotated[Principal, Depends(require_client)]
HistoryReaderDep = Annotated[Principal, Depends(require_history_reader)]
