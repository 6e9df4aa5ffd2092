"""The service and a real Prometheus (Debian's package) on loopback: drive chat + score traffic with sessions,
then run every dashboard query and every rule expression. Each returns data, or is on the short list of
expressions that must be empty in a healthy run (alerts that should not fire)."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.ops.promql import RULE_FILES, dashboard_queries, rule_expressions
from tests.support.adapter_factory import make_adapter
from tests.support.servers import ServerProcess, free_port

pytestmark = [pytest.mark.model]
TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Healthy-run silence: these alerts watch for failures this run does not have.
EXPECTED_EMPTY = {
    "alert:HistoryWriteErrors",
    "alert:HistorySpillGrowing",
    "alert:HistoryTurnsDropped",
    "alert:ServiceDown",
    "alert:LatencyP99High",
    "alert:ReplicasDiverged",
    "alert:CanaryRolledBack",
}
FRIENDLY = "Thanks so much for your patience! I'm really happy to help, have a lovely day!"
ROBOTIC = "Request closed. Ticket 4411. No further action."


@pytest.fixture(scope="module")
def stack(tmp_path_factory, bundled):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: run `make system-deps`")
    tmp = tmp_path_factory.mktemp("prom")
    model, _, _ = bundled
    make_adapter(tmp / "adapters" / "persona-x", model, kind="lora", r=4, alpha=8, seed=3)
    server = ServerProcess(
        {
            "TONEWATCH_ADAPTER_ROOT": str(tmp / "adapters"),
            "TONEWATCH_ADMIN_TOKEN": TOKEN,
            "TONEWATCH_DB_PATH": str(tmp / "tw.db"),
        },
        free_port(),
    )
    server.wait_ready()
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [{"job_name": "tonewatch", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "prom.log", "w"),  # noqa: SIM115 (the process keeps it)
    )
    prom_url = f"http://127.0.0.1:{prom_port}"
    try:
        _wait(lambda: httpx.get(prom_url + "/-/ready", timeout=1).status_code == 200, 30)
        yield server, prom_url
    finally:
        prom.terminate()
        prom.wait(timeout=20)
        server.stop()


def _wait(check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("condition not reached")


def _drive(base: str) -> None:
    """Every event happens once, then again after Prometheus has scraped: increase() needs a series to exist
    before it can see it grow."""
    with httpx.Client(base_url=base, timeout=60) as http:

        def chat(content, max_tokens, **kw):
            r = http.post(
                "/v1/chat/completions",
                json={
                    "model": "SmolLM2-135M-Instruct",
                    "messages": [{"role": "user", "content": content}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "persona": "support-friendly",
                    **kw,
                },
            )
            assert r.status_code == 200, r.text

        def drifting_session(i):
            r = http.post(
                "/v1/score",
                json={
                    "texts": [FRIENDLY] * 4 + [ROBOTIC] * 5,
                    "persona": "support-friendly",
                    "session_id": f"drifting-{i}",
                    "adapter": "vendor-bot",
                },
            )
            assert r.status_code == 200 and r.json()["results"][-1]["drift"]["alert"]

        for i in range(24):  # warm the latency filter with short answers
            chat(f"Say hi {i}", 2, session_id=f"warm-{i % 3}")
        for round_ in range(2):
            for name in ("persona-x", "SmolLM2-135M-Instruct"):
                assert http.post(f"/admin/adapters/{name}/activate", headers=AUTH).status_code == 200
            assert http.post("/admin/adapters", headers=AUTH, json={"name": "bad", "path": "../x"}).status_code >= 400
            drifting_session(round_)
            chat("Tell me a long story about the sea.", 40, session_id="long-1")  # a latency spike
            time.sleep(2.5)
        for i in range(2, 5):
            drifting_session(i)
        # a canary of persona-x against the base default, stopped by hand (its metrics, panel and annotation)
        r = http.post(
            "/admin/adapters/persona-x/canary",
            headers=AUTH,
            json={"share": 0.5, "persona": "support-friendly", "min_turns": 5},
        )
        assert r.status_code == 200, r.text
        for i in range(10):
            r = http.post(
                "/v1/chat/completions",
                json={
                    "messages": [{"role": "user", "content": f"Hi {i}"}],
                    "max_tokens": 3,
                    "temperature": 0,
                    "session_id": f"canary-{i}",
                },
            )
            assert r.status_code == 200
        time.sleep(2.5)
        assert http.delete("/admin/adapters/persona-x/canary", headers=AUTH).status_code == 200
        for _ in range(5):
            chat("Tell me a long story about the sea.", 40, session_id="long-1")
        r = http.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 6,
                "stream": True,
                "session_id": "adapter-1",
            },
        )
        assert r.status_code == 200


def _query(prom: str, expr: str) -> list:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, (expr, r.text)
    return r.json()["data"]["result"]


def test_every_dashboard_query_and_rule_returns_data(stack):
    server, prom = stack
    _drive(server.base_url)
    # a few scrapes and rule evaluations after the traffic
    _wait(lambda: _query(prom, "tonewatch_tone_drift_alerts_total") != [], 30)
    time.sleep(5)
    empty, unexpected_data = [], []
    for name, expr in dashboard_queries() + rule_expressions():
        result = _query(prom, expr)
        if name in EXPECTED_EMPTY:
            if result:
                unexpected_data.append(name)
        elif not result:
            empty.append((name, expr))
    assert not empty, f"queries without data: {empty}"
    assert not unexpected_data, f"alerts that should be silent returned data: {unexpected_data}"
    if os.environ.get("TONEWATCH_DASHBOARD_PNG"):  # `make dashboard-png`: the README's picture, from real data
        render_dashboard(prom, Path(os.environ["TONEWATCH_DASHBOARD_PNG"]))
    firing = {a["labels"]["alertname"] for a in httpx.get(prom + "/api/v1/alerts").json()["data"]["alerts"]}
    assert "AdapterLoadFailures" in firing or "AdapterLoadFailures" in str(_query(prom, "ALERTS"))


# The README's picture: these panels of the Grafana dashboard, drawn with the dashboard JSON's own queries and
# legends (Grafana variables substituted as in promql.py), so the picture shows what the dashboard shows.
PICTURE_PANELS = [
    "Tone drift score",
    "Drift alerts rate",
    "Tone label mix",
    "Persona distance quantiles",
    "Request latency p50 / p95 / p99",
    "Batch size",
]


def _legend(fmt: str, metric: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt or "").strip()


def render_dashboard(prom: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tests.ops.promql import dashboard_panels, substitute

    panels = {p["title"]: p for p in dashboard_panels()}
    end = time.time()
    start = end - 120
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    for ax, title in zip(axes.flat, PICTURE_PANELS, strict=True):
        for target in panels[title].get("targets", []):
            q = substitute(target["expr"])
            r = httpx.get(prom + "/api/v1/query_range", params={"query": q, "start": start, "end": end, "step": 2})
            for item in r.json()["data"]["result"]:
                xs = [float(t) - start for t, _ in item["values"]]
                ys = [float(v) for _, v in item["values"]]
                ax.plot(xs, ys, label=_legend(target.get("legendFormat", ""), item["metric"]))
        ax.set_title(title)
        ax.set_xlabel("seconds")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("Tonewatch dashboard panels, rendered from a live Prometheus during the e2e test")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
