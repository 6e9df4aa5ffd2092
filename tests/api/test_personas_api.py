"""Persona admin: auth, validation, calibration, persistence across restarts."""

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXEMPLARS = [
    "Yo! Totally on it, gimme a sec :)",
    "haha no stress, it's sorted now!",
    "omg sorry bout that, fixed it for ya",
    "all good, refund's on its way, cheers!",
    "yep yep, your order's shipping tmrw :D",
    "np! lemme know if anything else pops up",
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("personas")
    return Settings(db_path=tmp / "tw.db", adapter_root=tmp / "adapters", admin_token=TOKEN)


@pytest.fixture(scope="module")
def admin(settings):
    with TestClient(create_app(settings)) as client:
        yield client


def test_auth(admin):
    assert admin.get("/admin/personas").status_code == 401
    assert admin.get("/admin/personas", headers={"Authorization": "Bearer wrong"}).status_code == 401
    listed = admin.get("/admin/personas", headers=AUTH).json()["data"]
    assert {"support-friendly", "support-formal"} <= {p["name"] for p in listed}


def test_put_get_score_delete(admin):
    r = admin.put(
        "/admin/personas/chill-bot",
        headers=AUTH,
        json={"exemplars": EXEMPLARS, "target": {"formality": 0.1}, "description": "laid back"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["match_threshold"] > 0 and body["source"] == "api"
    assert admin.get("/admin/personas/chill-bot", headers=AUTH).json()["target"] == {"formality": 0.1}
    scored = admin.post(
        "/v1/score",
        json={
            "texts": ["haha np, it's fixed now :)", "We hereby acknowledge receipt of your formal complaint."],
            "persona": "chill-bot",
        },
    ).json()["results"]
    assert scored[0]["persona_distance"] < scored[1]["persona_distance"]
    assert scored[1]["persona_match"] is False
    assert admin.delete("/admin/personas/chill-bot", headers=AUTH).status_code == 200
    assert admin.get("/admin/personas/chill-bot", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"exemplars": EXEMPLARS[:4]}, 400),
        ({"exemplars": [*EXEMPLARS, ""]}, 400),
        ({"exemplars": EXEMPLARS, "target": {"formality": 2}}, 400),
        ({"exemplars": EXEMPLARS, "target": {"spice": 0.3}}, 400),
    ],
)
def test_put_bad_bodies_change_nothing(admin, body, status):
    before = admin.get("/admin/personas", headers=AUTH).json()
    r = admin.put("/admin/personas/bad-one", headers=AUTH, json=body)
    assert r.status_code == status, r.text
    assert admin.get("/admin/personas", headers=AUTH).json() == before


def test_shipped_personas_are_protected(admin):
    assert admin.delete("/admin/personas/support-formal", headers=AUTH).status_code == 409
    assert admin.put("/admin/personas/support-formal", headers=AUTH, json={"exemplars": EXEMPLARS}).status_code == 409
    assert admin.put("/admin/personas/bad name", headers=AUTH, json={"exemplars": EXEMPLARS}).status_code in (400, 404)


def test_api_personas_survive_a_restart(settings):
    with TestClient(create_app(settings)) as first:
        assert first.put("/admin/personas/keeper", headers=AUTH, json={"exemplars": EXEMPLARS}).status_code == 200
    with TestClient(create_app(settings)) as second:
        restored = second.get("/admin/personas/keeper", headers=AUTH)
        assert restored.status_code == 200 and restored.json()["exemplars"] == EXEMPLARS
        second.delete("/admin/personas/keeper", headers=AUTH)
