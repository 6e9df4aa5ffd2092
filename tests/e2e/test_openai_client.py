"""A real `tonewatch serve` process with the bundled model, driven by the official openai client."""

import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.support.servers import ServerProcess, free_port

    tmp = tmp_path_factory.mktemp("e2e")
    srv = ServerProcess(
        {"TONEWATCH_DB_PATH": str(tmp / "tw.db"), "TONEWATCH_ADAPTER_ROOT": str(tmp / "ad")}, free_port()
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_openai_client_plain_and_stream(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")
    models = [m.id for m in client.models.list()]
    assert "SmolLM2-135M-Instruct" in models
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    plain = client.chat.completions.create(model=models[0], messages=messages, max_tokens=16, temperature=0)
    text = plain.choices[0].message.content
    assert "Paris" in text
    assert plain.usage.completion_tokens <= 16
    stream = client.chat.completions.create(
        model=models[0], messages=messages, max_tokens=16, temperature=0, stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == text


def test_openai_client_sees_errors_as_exceptions(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=[], max_tokens=2)


def test_client_disconnect_cancels_its_row(server):
    body = {
        "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=30) as r:
        for _ in r.iter_lines():
            break  # hang up after the first chunk

    def generated() -> float:
        metrics = httpx.get(server.base_url + "/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("tonewatch_generated_tokens_total")
        )

    # the row stops within a few steps of the hang-up; read until the count holds still (the bound catches a hang)
    total, deadline = generated(), time.monotonic() + 60
    while True:
        time.sleep(1.0)
        later = generated()
        if later == total or time.monotonic() > deadline:
            break
        total = later
    assert later == total  # nothing is generated for a client that left
    assert total < 200  # of the 400 asked for
