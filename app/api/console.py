"""The operator console: static files (app/console/) served at /console. The page signs in with a client key or the
admin token (kept in the tab's sessionStorage) and reads the same JSON API as any client; nothing here reads data.

The files are fixed at build time: a whitelist of names, read once (off the event loop) and served with an ETag,
`Cache-Control: no-cache` (revalidate, so a new release shows at once) and a Content-Security-Policy that allows
nothing but this origin: no inline script, no outside host, no framing.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from app.errors import NotFound

router = APIRouter(include_in_schema=False)
CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


_cache: dict[str, Asset] = {}


def _read(name: str) -> Asset:
    body = (CONSOLE_DIR / name).read_bytes()
    return Asset(body, ASSETS[name], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


async def _asset(name: str) -> Asset:
    if name not in ASSETS:
        raise NotFound(f"no console file {name!r}", param="asset")
    asset = _cache.get(name)
    if asset is None:
        asset = _cache[name] = await asyncio.to_thread(_read, name)
    return asset


async def _serve(request: Request, name: str) -> Response:
    asset = await _asset(name)
    headers = {**HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/console")
@router.get("/console/")
async def console_page(request: Request) -> Response:
    return await _serve(request, "index.html")


@router.get("/console/{asset}")
async def console_asset(asset: str, request: Request) -> Response:
    return await _serve(request, asset)
