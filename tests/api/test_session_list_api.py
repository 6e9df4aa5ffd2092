"""GET /v1/sessions and /v1/sessions/export through the app (SQLite store, two client keys and the admin token):
owner scoping on every read, filters, paging, the NDJSON export, alarm events in the log, gauges after a restart.
(The same on Redis: tests/integration/test_session_index.py for the index, tests/e2e for the console.)"""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from app.api.auth import key_id
from app.config import Settings
from app.main import create_app
from tests.api.test_sessions_api import FRIENDLY, ROBOTIC

ADMIN = "test-admin-token-0123456789"
KEY_A, KEY_B = "client-key-alpha-0123456789", "client-key-bravo-0123456789"


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def settings_for(tmp, spill: str = "spill.jsonl") -> Settings:
    return Settings(
        db_path=tmp / "tw.db",
        spill_path=tmp / spill,  # one spill file per instance
        adapter_root=tmp / "adapters",
        admin_token=ADMIN,
        api_keys=[KEY_A, KEY_B],
    )


def score(client, secret, session, texts, persona="support-friendly", expect=200):
    r = client.post("/v1/score", json={"texts": texts, "persona": persona, "session_id": session}, headers=auth(secret))
    assert r.status_code == expect, r.text
    return r.json()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("session-list")
    with TestClient(create_app(settings_for(tmp))) as client:
        score(client, KEY_A, "a-calm", FRIENDLY[:3])
        score(client, KEY_A, "a-drift", FRIENDLY[:3] + ROBOTIC[:4])
        score(client, KEY_B, "b-calm", FRIENDLY[:2])
        yield client, tmp


def ids(body) -> list[str]:
    return [s["session_id"] for s in body["data"]]


def test_each_key_lists_only_its_own_sessions_and_the_admin_all(seeded):
    client, _ = seeded
    a = client.get("/v1/sessions", headers=auth(KEY_A)).json()
    assert sorted(ids(a)) == ["a-calm", "a-drift"]
    assert {s["owner"] for s in a["data"]} == {key_id(KEY_A)}
    assert ids(client.get("/v1/sessions", headers=auth(KEY_B)).json()) == ["b-calm"]
    everything = client.get("/v1/sessions", headers=auth(ADMIN)).json()
    assert ids(everything) == ["b-calm", "a-drift", "a-calm"]  # most recent activity first
    assert KEY_A not in json.dumps(everything)  # the key's id, never the key


def test_history_reads_are_scoped_to_the_owner(seeded):
    client, _ = seeded
    for path in ("/v1/sessions/a-drift", "/v1/sessions/a-drift/drift"):
        assert client.get(path, headers=auth(KEY_A)).status_code == 200
        other = client.get(path, headers=auth(KEY_B))
        assert other.status_code == 404, other.text  # another key's session looks like no session at all
        assert other.json()["error"]["param"] == "session_id"
        assert client.get(path, headers=auth(ADMIN)).status_code == 200
    export = client.get("/v1/sessions/export", headers=auth(KEY_B)).text
    assert "a-drift" not in export


def test_a_key_cannot_write_into_another_keys_session(seeded):
    client, _ = seeded
    before = client.get("/v1/sessions/a-calm", headers=auth(ADMIN)).json()
    refused = score(client, KEY_B, "a-calm", ["Hello there."], expect=403)
    assert refused["error"]["code"] == "session_owned_by_another_key" and refused["error"]["param"] == "session_id"
    after = client.get("/v1/sessions/a-calm", headers=auth(ADMIN)).json()
    assert len(after["turns"]) == len(before["turns"])


def test_filters_and_drift_order(seeded):
    client, _ = seeded
    alerting = client.get("/v1/sessions", params={"alerting": "true"}, headers=auth(ADMIN)).json()
    assert ids(alerting) == ["a-drift"]
    item = alerting["data"][0]
    assert item["drift"]["alert"] is True and item["turns"] == 7 and item["persona"] == "support-friendly"
    assert sum(item["labels"].values()) == 7 and item["worst"]["seq"] >= 4  # a curt answer is the worst
    calm = client.get("/v1/sessions", params={"alerting": "false"}, headers=auth(ADMIN)).json()
    assert sorted(ids(calm)) == ["a-calm", "b-calm"]
    friendly = client.get("/v1/sessions", params={"persona": "support-friendly"}, headers=auth(ADMIN)).json()
    assert len(ids(friendly)) == 3
    assert client.get("/v1/sessions", params={"persona": "support-formal"}, headers=auth(ADMIN)).json()["data"] == []
    by_drift = client.get("/v1/sessions", params={"order": "drift"}, headers=auth(ADMIN)).json()
    assert ids(by_drift)[0] == "a-drift"
    label = item["label"]
    labelled = client.get("/v1/sessions", params={"label": label}, headers=auth(ADMIN)).json()
    assert "a-drift" in ids(labelled) and all(s["label"] == label for s in labelled["data"])
    future = client.get("/v1/sessions", params={"since": 4e9}, headers=auth(ADMIN)).json()
    assert future == {"object": "list", "data": [], "next_cursor": None}


def test_paging_with_the_cursor(seeded):
    client, _ = seeded
    first = client.get("/v1/sessions", params={"limit": 2}, headers=auth(ADMIN)).json()
    assert len(first["data"]) == 2 and isinstance(first["next_cursor"], str)
    second = client.get("/v1/sessions", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(ADMIN)).json()
    assert ids(first) + ids(second) == ["b-calm", "a-drift", "a-calm"] and second["next_cursor"] is None
    stolen = client.get("/v1/sessions", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(KEY_A))
    assert stolen.status_code == 404 and stolen.json()["error"]["param"] == "cursor"  # not this key's walk
    unknown = client.get("/v1/sessions", params={"cursor": "bm90LWEtd2Fsaw"}, headers=auth(ADMIN))
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "cursor"


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"order": "oldest"},
        {"cursor": "x" * 201},
        {"cursor": "not/a cursor"},
        {"alerting": "maybe"},
        {"since": -1},
        {"adapter": "../etc"},
    ],
)
def test_bad_queries_are_clear_400s(seeded, params):
    client, _ = seeded
    r = client.get("/v1/sessions", params=params, headers=auth(ADMIN))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_credentials_are_required(seeded):
    client, _ = seeded
    assert client.get("/v1/sessions").status_code == 401
    assert client.get("/v1/sessions", headers=auth("wrong-key-0123456789")).status_code == 401
    assert client.get("/v1/sessions/export").status_code == 401


def test_export_streams_every_turn_as_ndjson(seeded):
    client, _ = seeded
    with client.stream("GET", "/v1/sessions/export", params={"persona": "support-friendly"}, headers=auth(KEY_A)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert [(t["session_id"], t["seq"]) for t in lines] == [("a-drift", i) for i in range(1, 8)] + [
        ("a-calm", i) for i in range(1, 4)
    ]
    assert all("owner" not in t and "state_pending" not in t for t in lines)
    assert lines[-1]["tone"]["label"] and lines[0]["drift"]["turns"] == 1


def test_alarm_onset_is_one_json_log_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tonewatch.alarms")
    with TestClient(create_app(settings_for(tmp_path))) as client:
        results = score(client, KEY_A, "logged", FRIENDLY[:3] + ROBOTIC[:4])["results"]
    onset = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tonewatch.alarms"]
    alarms = [e for e in onset if e["event"] == "tone_drift_alarm"]
    assert len(alarms) == 1, onset
    first = next(i for i, r in enumerate(results) if r["drift"]["alert"])
    event = alarms[0]
    assert event["session_id"] == "logged" and event["persona"] == "support-friendly"
    assert event["turn"] == first + 1 and event["detector"] in {"cusum", "ewma"}
    assert event["score"] == round(results[first]["drift"]["score"], 4)


def test_gauges_are_rebuilt_from_the_store_after_a_restart(seeded):
    _, tmp = seeded
    # a second app on the same store file: it has served nothing, and still reports what the store holds
    with TestClient(create_app(settings_for(tmp, spill="second.jsonl"))) as client:
        metrics = client.get("/metrics").text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith(("tonewatch_sessions_active ", "tonewatch_sessions_drifting "))
    }
    assert values == {"tonewatch_sessions_active": 3.0, "tonewatch_sessions_drifting": 1.0}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_offline_export_files(seeded, tmp_path, fmt):
    """What `tonewatch export` writes (app/export.py; the test client is an httpx.Client like the CLI's)."""
    import pyarrow.parquet as pq

    from app.export import turns, write

    client, _ = seeded
    out = tmp_path / f"drifting.{fmt}"
    rows = turns(client, {"alerting": True, "order": "drift"}, auth(ADMIN))
    assert write(rows, out, fmt) == 7
    if fmt == "jsonl":
        got = [json.loads(line) for line in out.read_text().splitlines()]
        assert {t["session_id"] for t in got} == {"a-drift"} and [t["seq"] for t in got] == list(range(1, 8))
    else:
        table = pq.read_table(out).to_pylist()
        assert [r["seq"] for r in table] == list(range(1, 8)) and {r["session_id"] for r in table} == {"a-drift"}
        assert table[-1]["drift_alert"] is True and table[-1]["label"] and 0 <= table[-1]["formality"] <= 1
        assert json.loads(table[0]["tone"])["label"] == table[0]["label"]


def test_offline_export_refused_without_the_right_key(seeded, tmp_path):
    from app.export import ExportFailed, turns, write

    client, _ = seeded
    with pytest.raises(ExportFailed, match="HTTP 401"):
        write(turns(client, {}, auth("not-a-key-0123456789")), tmp_path / "x.jsonl", "jsonl")
