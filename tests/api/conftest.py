import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    settings = Settings(
        db_path=tmp / "tw.db",
        adapter_root=tmp / "adapters",
        max_new_tokens=64,
        max_prompt_tokens=256,
        max_body_bytes=64 * 1024,
        score_sources=["vendor-bot"],
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client
