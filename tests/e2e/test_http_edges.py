"""HTTP edges against a real `tonewatch serve` process (real sockets): oversized and chunked bodies, keep-alive
after errors, and the disconnect rule — every generation that reached the model is recorded exactly once, with
whether the client got it — with no traceback in the server log for an ordinary disconnect."""

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
TOKEN = "e2e-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.support.servers import ServerProcess, free_port

    tmp = tmp_path_factory.mktemp("edges")
    srv = ServerProcess(
        {
            "TONEWATCH_DB_PATH": str(tmp / "tw.db"),
            "TONEWATCH_ADAPTER_ROOT": str(tmp / "ad"),
            "TONEWATCH_ADMIN_TOKEN": TOKEN,
            "TONEWATCH_MAX_BODY_BYTES": str(LIMIT),
        },
        free_port(),
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def chat_body(session, max_tokens=48, stream=False):
    return {
        "messages": [{"role": "user", "content": "Tell me about your return policy in detail."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "session_id": session,
        "stream": stream,
    }


def turns(server, session):
    r = httpx.get(f"{server.base_url}/v1/sessions/{session}", params={"limit": 1000}, headers=AUTH, timeout=10)
    return r.json()["turns"] if r.status_code == 200 else []


def wait_for_turns(server, session, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = turns(server, session)
        if len(got) >= n:
            time.sleep(0.5)  # nothing more may arrive
            return turns(server, session)
        time.sleep(0.2)
    return turns(server, session)


def test_a_huge_body_sent_in_full_gets_413_not_a_reset(server):
    body = json.dumps({"texts": ["x" * (6 * 1024 * 1024)]}).encode()
    request = urllib.request.Request(
        server.base_url + "/v1/score", data=body, headers={"content-type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413
    assert json.loads(info.value.read())["error"]["code"] == "payload_too_large"


def test_a_chunked_body_over_the_limit_gets_413(server):
    def chunks():
        yield b'{"texts": ["'
        for _ in range(LIMIT // 4096 + 8):
            yield b"y" * 4096
        yield b'"]}'

    r = httpx.post(
        server.base_url + "/v1/score", content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_keep_alive_survives_error_answers(server):
    host, port = server.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        for body, status in ((b"{bad json", 400), (b'{"texts": []}', 400), (b'{"texts": ["fine"]}', 200)):
            conn.request("POST", "/v1/score", body=body, headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == status
            assert response.getheader("connection", "keep-alive").lower() != "close"
    finally:
        conn.close()


def test_disconnects_are_recorded_exactly_once(server):
    session = "disc-1"
    # non-stream: the client gives up long before 200 tokens are generated
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/chat/completions", json=chat_body(session, 200), timeout=1.0)
    # stream: read a few chunks, then hang up
    with httpx.stream(
        "POST", server.base_url + "/v1/chat/completions", json=chat_body(session, 200, True), timeout=30
    ) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 6:
                break
    # a complete one
    done = httpx.post(server.base_url + "/v1/chat/completions", json=chat_body(session, 8), timeout=60)
    assert done.status_code == 200
    got = wait_for_turns(server, session, 3)
    assert len(got) == 3, [t["finish_reason"] for t in got]
    by_reason = sorted((t["finish_reason"], t["delivered"]) for t in got)
    assert by_reason[:2] == [("cancelled", False), ("cancelled", False)]
    assert by_reason[2][1] is True and by_reason[2][0] in {"stop", "length"}
    complete = next(t for t in got if t["delivered"])
    assert complete["request_id"] == done.json()["id"] and complete["tone"]["label"]
    cancelled = [t for t in got if t["finish_reason"] == "cancelled"]
    assert all(t["tone"] == {} for t in cancelled)  # a cut-off answer is not scored
    metrics = httpx.get(server.base_url + "/metrics").text
    assert "tonewatch_queue_depth 0.0" in metrics


def test_random_disconnect_times_leave_exactly_one_turn_each(server):
    session = "disc-2"
    rng = random.Random(11)
    outcomes: dict[int, str] = {}

    def client(i, cut):
        try:
            r = httpx.post(server.base_url + "/v1/chat/completions", json=chat_body(session, 24), timeout=cut)
            outcomes[i] = r.json()["id"]
        except httpx.TimeoutException:
            outcomes[i] = "gone"

    threads = [threading.Thread(target=client, args=(i, rng.uniform(0.3, 4.0))) for i in range(8)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join()
    got = wait_for_turns(server, session, len(threads))
    assert len(got) == len(threads)
    assert len({t["request_id"] for t in got}) == len(got)
    delivered_ids = {v for v in outcomes.values() if v != "gone"}
    for t in got:
        if t["request_id"] in delivered_ids:
            assert t["delivered"] is True
        if t["finish_reason"] == "cancelled":
            assert t["delivered"] is False and t["request_id"] not in delivered_ids


def test_no_traceback_for_ordinary_disconnects(server):
    server.log.flush()
    log = Path(server.log.name).read_text()
    assert "Traceback" not in log, log[-3000:]
