"""The console's static files: served from the whitelist only, with a strict CSP, revalidating caches and ETags; the
page loads nothing from another host and writes data into the DOM only as text."""

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api import console
from app.api.errors import install_error_handlers


def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(console.router)
    return TestClient(app)


def test_console_page_and_assets_are_served_with_a_strict_policy():
    c = client()
    for path, kind in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/charts.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ]:
        r = c.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(kind)
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-content-type-options"] == "nosniff"
        again = c.get(path, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and not again.content


def test_only_the_console_files_are_served():
    c = client()
    for path in ["/console/secret.txt", "/console/..%2Fapp%2Fconfig.py", "/console/..%2F..%2Fpyproject.toml"]:
        r = c.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"]


def test_the_page_reaches_no_other_host_and_never_writes_markup():
    page = (console.CONSOLE_DIR / "index.html").read_text()
    scripts = "".join((console.CONSOLE_DIR / name).read_text() for name in ("console.js", "charts.js"))
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<script>" not in page and "style=" not in page  # the CSP allows no inline script or style
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in scripts, sink
    assert "localStorage" not in scripts  # the key lives in the tab's sessionStorage only
    assert not re.search(r"https?://", scripts.replace("http://www.w3.org/2000/svg", ""))
