"""The OpenAI surface real clients use, against a real `tonewatch serve` with the bundled model, through the official
openai client and langchain-openai: tools (required / named / auto, history, streamed deltas), structured output
(.parse(), json_object, with_structured_output), logprobs, penalties, logit_bias, no-op fields, the model_dump()
round trip, models.retrieve, completions.create, responses.create — and how tone is recorded for these."""

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

pytestmark = pytest.mark.e2e
TOKEN = "surface-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "SmolLM2-135M-Instruct"
ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order",
        "description": "Look up an order by its id",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}
REFUND_TOOL = {
    "type": "function",
    "function": {
        "name": "refund",
        "description": "Refund an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "full": {"type": "boolean"}},
            "required": ["order_id", "full"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "Where is my order 4411?"}]


class Order(BaseModel):
    order_id: str
    urgent: bool


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.support.servers import ServerProcess, free_port

    tmp = tmp_path_factory.mktemp("surface")
    srv = ServerProcess(
        {
            "TONEWATCH_DB_PATH": str(tmp / "tw.db"),
            "TONEWATCH_ADAPTER_ROOT": str(tmp / "ad"),
            "TONEWATCH_ADMIN_TOKEN": TOKEN,
        },
        free_port(),
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")


def test_required_and_named_tool_calls_are_well_formed(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[ORDER_TOOL, REFUND_TOOL], tool_choice="required", max_tokens=80, temperature=0
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    required = {"get_order": {"order_id"}, "refund": {"order_id", "full"}}[call.function.name]
    assert set(args) == required
    named = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[ORDER_TOOL, REFUND_TOOL],
        tool_choice={"type": "function", "function": {"name": "refund"}},
        max_tokens=80,
        temperature=0,
    )
    [call] = named.choices[0].message.tool_calls
    assert call.function.name == "refund"
    assert isinstance(json.loads(call.function.arguments)["full"], bool)


def test_auto_tool_choice_and_tool_history_round_trip(client):
    auto = client.chat.completions.create(model=MODEL, messages=ASK, tools=[ORDER_TOOL], max_tokens=40, temperature=0)
    assert auto.choices[0].finish_reason in {"stop", "length", "tool_calls"}
    assert auto.choices[0].message.content or auto.choices[0].message.tool_calls
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[ORDER_TOOL], tool_choice="required", max_tokens=80, temperature=0
    )
    message = first.choices[0].message
    history = [
        *ASK,
        message.model_dump(),  # refusal/annotations/audio/function_call are null in the dump
        {
            "role": "tool",
            "tool_call_id": message.tool_calls[0].id,
            "content": json.dumps({"status": "shipped", "eta": "Friday"}),
        },
    ]
    after = client.chat.completions.create(
        model=MODEL, messages=history, tools=[ORDER_TOOL], max_tokens=30, temperature=0
    )
    assert after.choices[0].message.content


def test_streamed_tool_call_deltas(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[ORDER_TOOL], tool_choice="required", max_tokens=80, temperature=0, stream=True
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].function.name == "get_order" and deltas[0].id.startswith("call_")
    assert json.loads("".join(d.function.arguments or "" for d in deltas))["order_id"]
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["tool_calls"]


def test_structured_output_parse_and_json_object(client):
    parsed = client.chat.completions.parse(
        model=MODEL,
        response_format=Order,
        max_tokens=80,
        temperature=0,
        messages=[{"role": "user", "content": "Order 4411 is urgent."}],
    )
    order = parsed.choices[0].message.parsed
    assert isinstance(order, Order) and order.order_id
    obj = client.chat.completions.create(
        model=MODEL,
        response_format={"type": "json_object"},
        max_tokens=120,
        temperature=0,
        messages=[{"role": "user", "content": "Describe Paris."}],
    )
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content), dict)
    else:  # cut at max_tokens, as OpenAI does: still a JSON prefix
        assert obj.choices[0].message.content.startswith("{")


def test_logprobs_penalties_bias_and_no_op_fields(client):
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.refusal is None
    assert plain.system_fingerprint
    r = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        logit_bias={},
        store=False,
        metadata={"ticket": "4411"},
        service_tier="auto",
        safety_identifier="user-1",
        prompt_cache_key="support",
        modalities=["text"],
        response_format={"type": "text"},
        parallel_tool_calls=True,
        user="u-1",
    )
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    assert all(e.logprob <= 0 and len(e.top_logprobs) == 3 for e in entries)
    assert "".join(e.token for e in entries) == r.choices[0].message.content
    assert r.choices[0].message.content == plain.choices[0].message.content  # no-ops changed nothing
    first_token = entries[0].top_logprobs[0].token
    banned = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=6, temperature=0, logit_bias={str(_token_id(first_token)): -100}
    )
    assert not banned.choices[0].message.content.startswith(first_token)
    penalized = client.chat.completions.create(
        model=MODEL,
        max_tokens=40,
        temperature=0,
        frequency_penalty=2.0,
        messages=[{"role": "user", "content": "Repeat 'yes' many times."}],
    )
    assert penalized.choices[0].message.content


def _token_id(text: str) -> int:
    from transformers import AutoTokenizer

    from tests.support.servers import converted_model_dir

    ids = AutoTokenizer.from_pretrained(converted_model_dir()).encode(text, add_special_tokens=False)
    return ids[0]


@pytest.mark.parametrize(
    ("field", "value"),
    [("audio", {"voice": "alloy", "format": "wav"}), ("prediction", {"type": "content", "content": "x"}), ("n", 2)],
)
def test_fields_that_would_change_the_output_are_refused_by_name(client, field, value):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, extra_body={field: value})
    assert field in info.value.body["message"] and "Tonewatch" in info.value.body["message"]


def test_models_retrieve_completions_and_responses(client):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    completion = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert completion.object == "text_completion" and "Paris" in completion.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == completion.choices[0].text
    response = client.responses.create(
        model=MODEL, input="Say hello.", instructions="Be brief.", max_output_tokens=10, temperature=0
    )
    assert response.status in {"completed", "incomplete"} and response.output_text
    events = list(
        client.responses.create(
            model=MODEL, input="Say hello.", instructions="Be brief.", max_output_tokens=10, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == response.output_text
    # OpenAI's own rule: a response cut by max_output_tokens ends with response.incomplete, else completed
    assert kinds[-1] == ("response.incomplete" if response.status == "incomplete" else "response.completed")
    assert events[-1].response.output_text == response.output_text
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds


def test_errors_are_worded_for_clients(server, client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_completion_tokens=10**6)
    assert info.value.body["param"] == "max_completion_tokens"
    huge = [{"role": "user", "content": "word " * 3000}]
    r = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": huge}, timeout=60)
    assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
    missing = httpx.post(server.base_url + "/v1/chat/completion", json={})
    assert missing.status_code == 404 and "/v1/chat/completions" in missing.json()["error"]["message"]
    assert httpx.get(server.base_url + "/healthz").headers["x-request-id"]


def test_tone_for_tool_calls_and_structured_answers(server, client):
    client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[ORDER_TOOL],
        tool_choice="required",
        max_tokens=80,
        temperature=0,
        extra_body={"session_id": "surface-tools"},
    )
    client.chat.completions.create(
        model=MODEL,
        max_tokens=120,
        temperature=0,
        extra_body={"session_id": "surface-tools"},
        messages=[{"role": "user", "content": "Apologise to a customer whose parcel is late."}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "reply",
                "schema": {
                    "type": "object",
                    "properties": {"reply": {"type": "string"}},
                    "required": ["reply"],
                    "additionalProperties": False,
                },
            },
        },
    )
    turns = httpx.get(server.base_url + "/v1/sessions/surface-tools", headers=AUTH).json()["turns"]
    assert len(turns) == 2
    assert turns[0]["finish_reason"] == "tool_calls" and turns[0]["tone"] == {}  # recorded, never scored as ""
    if turns[1]["tone"]:
        assert turns[1]["tone"]["basis"] == "json_string_values"


def test_langchain_bind_tools_and_structured_output(server):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=server.base_url + "/v1", api_key="unused", model=MODEL, temperature=0, max_tokens=120)

    @tool
    def get_order(order_id: str) -> str:
        """Look up an order by its id."""
        return "shipped"

    message = llm.bind_tools([get_order], tool_choice="required").invoke("Where is order 4411?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_order"
    assert "order_id" in message.tool_calls[0]["args"]
    order = llm.with_structured_output(Order).invoke("Order 4411 is urgent.")
    assert isinstance(order, Order) and order.order_id
