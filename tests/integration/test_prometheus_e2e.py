"""The service and a real Prometheus (Debian's package) on loopback: drive chat + score traffic with sessions,
then run every dashboard query and every rule expression. Each returns data, or is on the short list of
expressions that must be empty in a healthy run (alerts that should not fire)."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ServerProcess, free_port
from tests.ops.promql import RULE_FILES, dashboard_queries, rule_expressions
from tests.unit.adapter_factory import make_adapter

pytestmark = [pytest.mark.e2e]
TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Healthy-run silence: these alerts watch for failures this run does not have.
EXPECTED_EMPTY = {
    "alert:HistoryWriteErrors", "alert:HistorySpillGrowing", "alert:HistoryTurnsDropped", "alert:ServiceDown",
    "alert:LatencyP99High",
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
    server = ServerProcess({"TONEWATCH_ADAPTER_ROOT": str(tmp / "adapters"), "TONEWATCH_ADMIN_TOKEN": TOKEN,
                            "TONEWATCH_DB_PATH": str(tmp / "tw.db")}, free_port())
    server.wait_ready()
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [{"job_name": "tonewatch", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "prom.log", "w"))  # noqa: SIM115
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
            r = http.post("/v1/chat/completions", json={
                "model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens, "temperature": 0, "persona": "support-friendly", **kw})
            assert r.status_code == 200, r.text

        def drifting_session(i):
            r = http.post("/v1/score", json={"texts": [FRIENDLY] * 4 + [ROBOTIC] * 5, "persona": "support-friendly",
                                             "session_id": f"drifting-{i}", "adapter": "vendor-bot"})
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
        for _ in range(5):
            chat("Tell me a long story about the sea.", 40, session_id="long-1")
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hello"}],
                                                    "max_tokens": 6, "stream": True, "session_id": "adapter-1"})
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


PANELS = [
    ("Tone drift score (EWMA, z)", "max by (adapter, persona) (tonewatch_tone_drift_score)"),
    ("Drift alerts (increase 1m)", "sum by (adapter, persona) (increase(tonewatch_tone_drift_alerts_total[1m]))"),
    ("Tone label mix (rate 1m)", "sum by (label) (rate(tonewatch_tone_label_total[1m]))"),
    ("Persona distance p50 / p90", None),
    ("Request latency p50 / p99 (s)", None),
    ("Batch size (mean)", "rate(tonewatch_batch_size_sum[1m]) / rate(tonewatch_batch_size_count[1m])"),
]
PD = "sum by (le, persona) (rate(tonewatch_persona_distance_bucket[1m]))"
RL = "sum by (le, route) (rate(tonewatch_request_latency_seconds_bucket[1m]))"
QUANTILES = {
    "Persona distance p50 / p90": [
        ("p50 {persona}", f"histogram_quantile(0.5, {PD})"),
        ("p90 {persona}", f"histogram_quantile(0.9, {PD})"),
    ],
    "Request latency p50 / p99 (s)": [
        ("p50 {route}", f"histogram_quantile(0.5, {RL})"),
        ("p99 {route}", f"histogram_quantile(0.99, {RL})"),
    ],
}


def render_dashboard(prom: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time()
    start = end - 120
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    for ax, (title, expr) in zip(axes.flat, PANELS, strict=True):
        series = QUANTILES.get(title) or [("{adapter} {persona} {label}", expr)]
        for label_fmt, q in series:
            r = httpx.get(prom + "/api/v1/query_range", params={"query": q, "start": start, "end": end, "step": 2})
            for item in r.json()["data"]["result"]:
                xs = [float(t) - start for t, _ in item["values"]]
                ys = [float(v) for _, v in item["values"]]
                labels = {k: item["metric"].get(k, "") for k in ("adapter", "persona", "label", "route")}
                ax.plot(xs, ys, label=label_fmt.format(**labels).strip())
        ax.set_title(title)
        ax.set_xlabel("seconds")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("Tonewatch dashboard panels, rendered from a live Prometheus during the e2e test")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
