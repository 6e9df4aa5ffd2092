"""Bearer-token guard for admin routes (constant-time comparison; disabled unless a token is configured)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.api.deps import StateDep
from app.errors import AdminDisabled, Unauthorized


def require_admin(request: Request, state: StateDep) -> None:
    token = state.settings.admin_token
    if token is None:
        raise AdminDisabled("admin API is disabled: set TONEWATCH_ADMIN_TOKEN (16+ characters) and restart")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.get_secret_value().encode()):
        raise Unauthorized("missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


AdminDep = Annotated[None, Depends(require_admin)]
