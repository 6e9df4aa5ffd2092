"""Tonewatch's traces in a real OTLP receiver with a UI: Arize Phoenix (`phoenix serve`, PyPI), a real `tonewatch
serve` configured by OTEL_* variables only. Asserts through Phoenix's REST API that a chat completion sent with a
`traceparent` lands in the caller's trace with its GenAI attributes and its tone as evaluation events, and that
/v1/score calls do too.

Phoenix is large (~850 MB with its dependencies), so it lives in its own venv and outside `make test`:
`make test-tracing` installs it (.venv-phoenix) and runs this file; without it the tests are skipped."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.phoenix]
ROOT = Path(__file__).resolve().parent.parent.parent
PHOENIX = Path(os.environ.get("TONEWATCH_PHOENIX", ROOT / ".venv-phoenix" / "bin" / "phoenix"))
PROJECT = "tonewatch-e2e"


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    if not PHOENIX.exists():
        pytest.skip("Arize Phoenix is not installed: `make test-tracing` installs it into .venv-phoenix")
    from tests.support.servers import free_port

    port, grpc_port = free_port(), free_port()
    work = tmp_path_factory.mktemp("phoenix")
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_HOST": "127.0.0.1",
    }
    log = open(work / "phoenix.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"phoenix exited; see {log.name}"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError("phoenix did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def tonewatch(phoenix, tmp_path_factory):
    from tests.support.servers import ServerProcess, free_port

    tmp = tmp_path_factory.mktemp("tw-phoenix")
    srv = ServerProcess(
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": phoenix + "/v1/traces",  # Phoenix takes traces, not logs
            "OTEL_SERVICE_NAME": "tonewatch",
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "TONEWATCH_DB_PATH": str(tmp / "tw.db"),
            "TONEWATCH_ADAPTER_ROOT": str(tmp / "ad"),
            "TONEWATCH_MAX_NEW_TOKENS": "16",
        },
        free_port(),
    )
    try:
        srv.wait_ready(timeout=180)
        yield srv
    finally:
        srv.stop()


def phoenix_spans(phoenix: str, trace_id: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 60
    spans: list[dict] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{phoenix}/v1/projects/{PROJECT}/spans", params={"limit": 1000}, timeout=10)
        if r.status_code == 200:
            spans = [s for s in r.json()["data"] if s["context"]["trace_id"] == trace_id]
            if len(spans) >= count:
                return spans
        time.sleep(0.5)
    raise AssertionError(f"Phoenix has {len(spans)} spans of trace {trace_id}, expected {count}")


def evaluations(span: dict) -> dict[str, dict]:
    return {
        e["attributes"]["gen_ai.evaluation.name"]: e["attributes"]
        for e in span.get("events") or []
        if e["name"] == "gen_ai.evaluation.result"
    }


def test_a_chat_completion_shows_up_in_the_callers_trace_with_its_tone(tonewatch, phoenix):
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    body = {
        "messages": [{"role": "user", "content": "My parcel is late, what can I do?"}],
        "max_tokens": 12,
        "temperature": 0,
        "session_id": "phoenix-ticket-1",
        "persona": "support-friendly",
    }
    r = httpx.post(
        tonewatch.base_url + "/v1/chat/completions",
        json=body,
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    spans = phoenix_spans(phoenix, trace_id, 5)
    [server] = [s for s in spans if s["name"] == "POST /v1/chat/completions"]
    assert server["parent_id"] == parent  # the caller's span: one trace from the client on
    [chat] = [s for s in spans if s["name"].startswith("chat ")]
    assert chat["parent_id"] == server["context"]["span_id"]
    a = chat["attributes"]
    # Phoenix keeps the attributes as they came (nested by their dotted names)
    flat = _flatten(a)
    assert flat["gen_ai.operation.name"] == "chat"
    assert flat["gen_ai.conversation.id"] == "phoenix-ticket-1"
    assert flat["gen_ai.response.id"] == answer["id"]
    assert flat["gen_ai.response.model"] == answer["model"]
    assert flat["gen_ai.usage.output_tokens"] == answer["usage"]["completion_tokens"]
    evals = evaluations(chat)
    assert set(evals) == {"formality", "politeness", "warmth", "persona_distance", "tone"}
    assert evals["tone"]["gen_ai.evaluation.score.label"] == answer["tone"]["label"]
    assert evals["warmth"]["gen_ai.evaluation.score.value"] == pytest.approx(answer["tone"]["warmth"])
    assert "gen_ai.input.messages" not in flat  # content capture is off by default


def test_score_calls_show_up_with_their_evaluations(tonewatch, phoenix):
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    texts = ["Thanks so much, happy to help!", "Request denied."]
    r = httpx.post(
        tonewatch.base_url + "/v1/score",
        json={"texts": texts, "session_id": "phoenix-score-1"},
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        timeout=60,
    )
    assert r.status_code == 200
    spans = phoenix_spans(phoenix, trace_id, 2)
    [call] = [s for s in spans if s["name"] == "tonewatch.score_texts"]
    labels = [e for e in call["events"] if e["attributes"]["gen_ai.evaluation.name"] == "tone"]
    assert [e["attributes"]["gen_ai.evaluation.score.label"] for e in labels] == [
        x["label"] for x in r.json()["results"]
    ]


def _flatten(value: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(_flatten(item, name + "."))
        else:
            out[name] = item
    return out


@pytest.mark.skipif(not os.environ.get("TONEWATCH_TRACE_PNG"), reason="set TONEWATCH_TRACE_PNG=<file> (make trace-png)")
def test_screenshot_of_a_trace_and_its_evaluations_in_phoenix(tonewatch, phoenix):
    """The README's picture: a chat completion's trace in Phoenix's UI, its tone evaluations on the chat span."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    body = {
        "messages": [{"role": "user", "content": "My parcel is late again. What can you do?"}],
        "max_tokens": 16,
        "temperature": 0,
        "session_id": "ticket-4411",
        "persona": "support-friendly",
    }
    headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
    assert httpx.post(tonewatch.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=120).is_success
    phoenix_spans(phoenix, trace_id, 5)
    project = next(p for p in httpx.get(phoenix + "/v1/projects", timeout=10).json()["data"] if p["name"] == PROJECT)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1440,1300",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{phoenix}/projects/{project['id']}/traces/{trace_id}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "chat " not in driver.find_element("tag name", "body").text:
            time.sleep(0.5)
        for element in driver.find_elements("xpath", "//*[starts-with(normalize-space(text()), 'chat ')]")[:1]:
            element.click()  # the chat span: its attributes and events
        time.sleep(2)
        for tab in driver.find_elements("xpath", "//*[normalize-space(text())='Events']")[:1]:
            tab.click()
            time.sleep(1)
        for event in driver.find_elements("xpath", "//*[normalize-space(text())='gen_ai.evaluation.result']")[:2]:
            event.click()  # open two of the evaluations: name, score, label, response id
            time.sleep(0.5)
        driver.save_screenshot(os.environ["TONEWATCH_TRACE_PNG"])
    finally:
        driver.quit()
