"""Malformed and hostile requests get a clear 400 in the error envelope, never a 500 (issue 25): bodies nested too
deeply, bytes that are not UTF-8, any Content-Type; schemas no value can match or that recurse without end; adapter
paths the OS refuses; NaN; 405s that list every method; an OpenAPI document with the limits the server enforces;
tool-call arguments that only name the properties the function takes, written compactly."""

import json

import pytest
from fastapi.testclient import TestClient

from app.api.body import MAX_JSON_DEPTH
from app.config import Settings
from app.main import create_app

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Order 4411 please."}]
# every route that reads a body (JSON), with a body it accepts up to the point of interest
JSON_ROUTES = [
    ("POST", CHAT),
    ("POST", "/v1/completions"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/score"),
    ("PUT", "/admin/personas/p1"),
    ("POST", "/admin/adapters"),
    ("POST", "/admin/adapters/x1/canary"),
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/v1/unload_lora_adapter"),
]
SELF_REF = {"type": "object", "properties": {"n": {"$ref": "#"}}, "required": ["n"]}
DEFS_CYCLE = {
    "$defs": {
        "a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}, "required": ["b"]},
        "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "required": ["a"]},
    },
    "$ref": "#/$defs/a",
}
TREE = {
    "type": "object",
    "properties": {"label": {"enum": ["x", "y"]}, "children": {"type": "array", "items": {"$ref": "#"}}},
    "required": ["label", "children"],
}
INPUT_ONLY = {"properties": {"input": {"type": "integer"}}, "required": ["input"]}  # no additionalProperties


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("malformed")
    (tmp / "adapters").mkdir()
    settings = Settings(
        db_path=tmp / "tw.db",
        adapter_root=tmp / "adapters",
        admin_token=TOKEN,
        max_new_tokens=64,
        max_prompt_tokens=1024,
        max_body_bytes=64 * 1024,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def send(client, method, path, content, content_type="application/json"):
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    return client.request(method, path, content=content, headers=headers)


def invalid(r, *needles):
    """A 400 in the envelope, with the one code every malformed body gets, naming each needle."""
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request", error
    for needle in needles:
        assert needle in error["message"], error
    return error


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}


def tool(name, parameters):
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


# ---- 1 and 5: nesting depth, non-UTF-8 bytes, one message style on every route ---------------------------------


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize(
    "body",
    ["[" * 1000 + "]" * 1000, '{"a":' * 10_000 + "1" + "}" * 10_000, '{"texts": [' + "[" * 100 + "]" * 100 + "]}"],
    ids=["array-1000", "object-10k", "inside-a-field"],
)
def test_deep_nesting_is_a_400_naming_the_limit(client, method, path, body):
    invalid(send(client, method, path, body.encode()), "nests JSON", str(MAX_JSON_DEPTH))


def nested(depth):
    return "[" * depth + "]" * depth


def test_the_depth_limit_counts_structure_not_brackets_in_strings(client):
    texts = f'"texts": ["Thanks {"[{" * 500} a lot!"]'
    assert send(client, "POST", "/v1/score", ("{" + texts + "}").encode()).status_code == 200
    at_limit = ("{" + texts + ', "zz": ' + nested(MAX_JSON_DEPTH - 1) + "}").encode()
    invalid(send(client, "POST", "/v1/score", at_limit), "zz")  # read, then refused for the unknown field
    over = ("{" + texts + ', "zz": ' + nested(MAX_JSON_DEPTH) + "}").encode()
    invalid(send(client, "POST", "/v1/score", over), "nests JSON")


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_bytes_that_are_not_utf8_are_a_400_naming_the_decode_error(client, method, path):
    error = invalid(send(client, method, path, b'{"texts": ["caf\xe9"]}'), "not valid UTF-8", "0xe9")
    assert error["param"] is None


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize("body", [b"", b"[1, 2]", b'"text"'], ids=["empty", "array", "string"])
def test_unreadable_bodies_get_one_message_style_on_every_route(client, method, path, body):
    invalid(send(client, method, path, body), "Request body")


# ---- 6: a body is JSON whatever its Content-Type, on every route that takes one -------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_every_route_with_a_body_reads_json_whatever_the_content_type(client, content_type):
    documented = {
        (method.upper(), path)
        for path, operations in client.get("/openapi.json").json()["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert documented == {(m, p.replace("p1", "{name}").replace("x1", "{name}")) for m, p in JSON_ROUTES}
    for method, path in JSON_ROUTES:
        # read as JSON: the unknown field is named (a refused content type would know nothing of it)
        error = invalid(send(client, method, path, b'{"zz_unknown": 1}', content_type), "zz_unknown")
        assert "content" not in error["message"].lower(), (method, path)
    body = json.dumps({"messages": USER, "max_tokens": 2}).encode()
    assert send(client, "POST", CHAT, body, content_type).status_code == 200


# ---- 2 and 4: schemas that no finite value matches --------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        (SELF_REF, "#/properties/n"),
        (DEFS_CYCLE, "#/$defs/a"),
        ({"not": {}}, '"not"'),
        ({"type": []}, '"type": []'),
        ({"enum": []}, '"enum": []'),
        ({"type": "object", "properties": {"a": {"not": {}}}, "required": ["a"]}, "#/properties/a"),
        (False, "false"),
    ],
    ids=["self-ref", "defs-cycle", "not-anything", "no-type", "no-value", "nested-not", "false"],
)
def test_schemas_no_finite_value_matches_are_a_400_naming_the_schema(client, schema, needle):
    r = client.post(CHAT, json={"messages": USER, "max_tokens": 8, "response_format": schema_format(schema)})
    error = invalid(r, needle)
    assert error["param"] == "response_format.json_schema.schema"  # (not ...json_schema.json_schema.schema)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "walk"}}])
def test_recursion_that_can_stop_is_served_and_recursion_that_cannot_is_a_400(client, choice):
    nullable = {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}}
    nullable["required"] = ["next"]
    for schema in (TREE, nullable):
        body = {"messages": USER, "max_tokens": 48, "temperature": 0, "response_format": schema_format(schema)}
        assert client.post(CHAT, json=body).status_code == 200
        body = {"messages": USER, "max_tokens": 48, "tools": [tool("walk", schema)], "tool_choice": choice}
        assert client.post(CHAT, json=body).status_code == 200
    r = client.post(
        CHAT, json={"messages": USER, "max_tokens": 16, "tools": [tool("walk", SELF_REF)], "tool_choice": choice}
    )
    error = invalid(r, "'walk'", "#/properties/n")
    assert error["param"] == "tools.0.function.parameters"


# ---- 3 and 9: a path that names no folder (too long for the OS, or missing) is a 404 naming the path, never a 500;
# a 404, not a 400: the request is well-formed (the fuzzer's ST202), there is just nothing there -----------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/load_lora_adapter", {"lora_name": "x1", "lora_path": "a" * 300}),
        ("/admin/adapters", {"name": "x1", "path": "a" * 300}),
        ("/admin/adapters", {"name": "x1", "path": "b/" + "c" * 300 + "/d"}),
    ],
)
def test_a_path_the_os_refuses_is_a_404(client, path, body):
    r = client.post(path, headers=AUTH, json=body)
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "not_found" and error["param"] == "path"
    assert "too long" in error["message"] or "does not exist" in error["message"]
    assert len(error["message"]) < 300  # the path is shortened, not echoed whole


@pytest.mark.parametrize("path", ["/admin/adapters", "/v1/load_lora_adapter"])
def test_a_missing_adapter_folder_is_a_404(client, path):
    body = {"name": "x1", "path": "nope"} if path == "/admin/adapters" else {"lora_name": "x1", "lora_path": "nope"}
    r = client.post(path, headers=AUTH, json=body)
    assert r.status_code == 404, r.text
    assert "does not exist" in r.json()["error"]["message"] and r.json()["error"]["param"] == "path"


# ---- 7: messages that say what is wrong ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty"])
def test_non_finite_numbers_are_named_as_such(client, field, value):
    body = f'{{"messages": {json.dumps(USER)}, "max_tokens": 2, "{field}": {value}}}'.encode()
    error = invalid(send(client, "POST", CHAT, body), "finite number")
    assert error["param"] == field and "less than" not in error["message"]


@pytest.mark.parametrize(
    ("parameters", "needle"),
    [({"type": "foo"}, "foo"), ({"type": "string", "pattern": "(("}, "unclosed group"), ({"$ref": "#/nope"}, "nope")],
    ids=["bad-type", "bad-regex", "bad-ref"],
)
@pytest.mark.parametrize("choice", ["required", "auto"])
def test_an_invalid_tool_schema_gets_a_short_message_naming_the_tool(client, parameters, needle, choice):
    tools = [tool("fine", {"type": "object", "properties": {"a": {"type": "boolean"}}}), tool("broken", parameters)]
    r = client.post(CHAT, json={"messages": USER, "max_tokens": 4, "tools": tools, "tool_choice": choice})
    error = invalid(r, "'broken'", needle)
    assert "\n" not in error["message"] and "%json" not in error["message"] and "tool_call" not in error["message"]
    assert len(error["message"]) < 300 and error["param"] == "tools"


# ---- 8: HTTP semantics ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/admin/personas/p1", {"GET", "PUT", "DELETE"}),
        ("POST", "/v1/sessions/s1", {"GET", "DELETE"}),
        ("PUT", "/admin/adapters", {"GET", "POST"}),
        ("PUT", "/admin/adapters/x1/canary", {"GET", "POST", "DELETE"}),
    ],
)
def test_405_allow_lists_every_method_of_the_path(client, method, path, allowed):
    r = client.request(method, path, headers=AUTH)
    assert r.status_code == 405
    listed = {m.strip() for m in r.headers["allow"].split(",")}
    assert allowed <= listed and listed <= allowed | {"HEAD"}
    error = r.json()["error"]
    assert error["code"] == "method_not_allowed" and all(m in error["message"] for m in allowed)


def test_unknown_routes_suggest_only_close_matches(client):
    for path, hint in [
        ("/v1/sesions", "/v1/sessions"),  # /v1/sessions/ (before the session list existed) said /v1/responses
        ("/v1/chat/completion", "/v1/chat/completions"),
        ("/v1/scores", "/v1/score"),
        ("/v1/nothing/like/this", None),
        ("/v2/embeddings", None),
    ]:
        r = client.get(path, headers=AUTH)
        assert r.status_code == 404
        message = r.json()["error"]["message"]
        if hint is None:
            assert "did you mean" not in message, message
        else:
            assert message.endswith(f"did you mean {hint}?"), message


# ---- 9: the OpenAPI document carries the limits the server enforces ---------------------------------------------


def test_openapi_carries_the_enforced_limits(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for model, field in (("LoadAdapter", "name"), ("VllmLoad", "lora_name")):
        pattern = schemas[model]["properties"][field]["pattern"]
        assert pattern == "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
    texts = schemas["ScoreRequest"]["properties"]["texts"]
    assert texts["minItems"] == 1 and texts["items"]["minLength"] == 1
    min_turns = schemas["CanaryRequest"]["properties"]["min_turns"]
    assert min_turns["type"] == "integer"
    assert type(min_turns["minimum"]) is int and type(min_turns["maximum"]) is int
    prompt = schemas["CompletionRequest"]["properties"]["prompt"]["anyOf"]
    assert {"minItems": 1, "maxItems": 16}.items() <= next(o for o in prompt if o["type"] == "array").items()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)


def test_the_server_refuses_what_the_document_refuses(client):
    # the document says integer, and JSON Schema's integer admits 22.0: it is taken as 22 (the unknown adapter is
    # what fails); a fraction or a string is refused, naming the field
    canary = {"persona": "support-friendly", "min_turns": 22.0}
    r = client.post("/admin/adapters/x1/canary", headers=AUTH, json=canary)
    assert r.status_code == 404, r.text
    for bad in (22.5, "22"):
        r = client.post("/admin/adapters/x1/canary", headers=AUTH, json={**canary, "min_turns": bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == "min_turns", r.text
    r = client.post("/admin/adapters", headers=AUTH, json={"name": "acme.v2", "path": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"


# ---- 2 and 10: tool-call arguments name only what the function takes, compactly ---------------------------------


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "double"}}])
def test_tool_arguments_are_closed_and_compact(client, choice):
    r = client.post(
        CHAT,
        json={
            "messages": [{"role": "user", "content": "Double the number 3."}],
            "max_tokens": 40,
            "temperature": 0,
            "tools": [tool("double", INPUT_ONLY)],
            "tool_choice": choice,
        },
    )
    assert r.status_code == 200, r.text
    [call] = r.json()["choices"][0]["message"]["tool_calls"]
    arguments = call["function"]["arguments"]
    value = json.loads(arguments)
    assert set(value) == {"input"} and isinstance(value["input"], int)
    assert arguments == json.dumps(value, separators=(",", ":"))


def test_json_schema_output_is_closed_too(client):
    r = client.post(
        CHAT,
        json={
            "messages": [{"role": "user", "content": "Give me a number as JSON."}],
            "max_tokens": 24,
            "temperature": 0,
            "response_format": schema_format(INPUT_ONLY),
        },
    )
    assert r.status_code == 200, r.text
    value = json.loads(r.json()["choices"][0]["message"]["content"])
    assert set(value) == {"input"}


# ---- the fuzzer's "schema-valid request rejected" findings (schemathesis ST202) ----------------------------------


def test_schema_valid_bodies_are_accepted_and_what_is_not_supported_is_not_in_the_document(client):
    # a text of control characters matches the document's \S (ECMAScript's whitespace is narrower than Python's)
    r = client.post("/v1/score", json={"texts": ["\x1f", "ok"]})
    assert r.status_code == 200, r.text
    # n / best_of / echo: the document now offers only what is served; other values keep the clear message
    doc = client.get("/openapi.json").json()["components"]["schemas"]
    completion = next(v for k, v in doc.items() if k.startswith("CompletionRequest"))
    assert [o.get("const") for o in completion["properties"]["n"]["anyOf"]] == [1, None]
    r = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "n": 1, "echo": False})
    assert r.status_code == 200, r.text
    for field, value, message in (("n", 2, "only 1"), ("echo", True, "echo is not supported")):
        r = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, field: value})
        assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "n": 3})
    assert r.status_code == 400 and "only n=1" in r.json()["error"]["message"], r.text


def test_fuzzer_findings_stay_fixed(client):
    # a response_format whose tag is not a string was a 500 (an unhashable lookup in the tag dispatch)
    body = {"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": {}, "json_schema": {}}}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("response_format"), r.text
    # echo: 0 is not a boolean (it was accepted as false)
    r = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "echo": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "echo", r.text


# ---- the fuzzer's findings after the session list landed (schemathesis, all checks) ---------------------------------


def test_a_logit_bias_key_that_is_no_token_id_is_a_400_on_completions(client):
    r = client.post("/v1/completions", headers=AUTH, json={"prompt": "hi", "max_tokens": 1, "logit_bias": {"x-a": 0}})
    assert r.status_code == 400, r.text  # was a 500: int("x-a") in the engine's bias check
    assert r.json()["error"]["param"].startswith("logit_bias")
    schema = client.get("/openapi.json").json()["components"]["schemas"]["CompletionRequest"]
    assert "logit_bias" in json.dumps(schema) and "patternProperties" in json.dumps(schema["properties"]["logit_bias"])


def test_a_fixed_path_is_not_read_as_a_session_id_in_allow(client):
    r = client.request("OPTIONS", "/v1/sessions/export", headers=AUTH)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD"}


def test_a_deleted_session_is_a_404_at_any_cursor(client):
    r = client.post("/v1/score", headers=AUTH, json={"texts": ["Thanks, all done!"], "session_id": "gone-404"})
    assert r.status_code == 200
    assert client.delete("/v1/sessions/gone-404", headers=AUTH).status_code == 200
    for cursor in (0, 27401):
        got = client.get("/v1/sessions/gone-404", params={"cursor": cursor}, headers=AUTH)
        assert got.status_code == 404, got.text  # a cursor past 0 used to answer an empty 200


@pytest.mark.parametrize("text", ["\x85", "\x1c", "a\u2028"])
def test_what_the_document_calls_non_blank_is_scored(client, text):
    r = client.post("/v1/score", headers=AUTH, json={"texts": [text]})
    assert r.status_code == 200, r.text  # "\x85" matched the document's \S (ECMAScript) but not the server's


@pytest.mark.parametrize("text", [" ", "\ufeff\u3000", "\u2028"])
def test_what_the_document_calls_blank_is_refused(client, text):
    assert client.post("/v1/score", headers=AUTH, json={"texts": [text]}).status_code == 400


def test_message_rules_and_empty_input_are_in_the_document(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    rules = json.dumps(schemas["ChatMessage"]["allOf"])
    assert '"tool_call_id"' in rules and '"tool"' in rules  # a tool message needs tool_call_id and content
    r = client.post("/v1/chat/completions", headers=AUTH, json={"messages": [{"role": "tool"}]})
    assert r.status_code == 400
    assert "pattern" in json.dumps(schemas["ResponseRequest"]["properties"]["input"])
    assert client.post("/v1/responses", headers=AUTH, json={"input": ""}).status_code == 400


def test_a_final_assistant_message_is_continued(client):
    """A prefilled answer (vLLM's continue_final_message) instead of a 400 the document could not announce."""
    messages = [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once upon a time"}]
    r = client.post("/v1/chat/completions", headers=AUTH, json={"messages": messages, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert r.json()["usage"]["prompt_tokens"] > 10


def test_integer_fields_take_whole_floats_as_the_document_allows(client):
    body = {"prompt": "hi", "max_tokens": 2.0, "seed": 3.0, "temperature": 0}
    assert client.post("/v1/completions", headers=AUTH, json=body).status_code == 200
    half = client.post("/v1/completions", headers=AUTH, json={**body, "max_tokens": 2.5})
    assert half.status_code == 400 and half.json()["error"]["param"] == "max_tokens"


def test_temperature_stop_and_responses_tools_are_stated_in_the_document(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("ChatCompletionRequest", "CompletionRequest", "ResponseRequest"):
        ranges = schemas[name]["properties"]["temperature"]["anyOf"]
        assert {"type": "number", "minimum": 0, "maximum": 0} in ranges  # 0 or at least the floor, not in between
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        assert {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4} in schemas[name][
            "properties"
        ]["stop"]["anyOf"]
    assert {"type": "array", "maxItems": 0} in schemas["ResponseRequest"]["properties"]["tools"]["anyOf"]
    r = client.post("/v1/completions", headers=AUTH, json={"prompt": "hi", "temperature": 0.001})
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"


def test_every_max_tokens_field_states_the_servers_limit(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for model, name in [
        ("ChatCompletionRequest", "max_tokens"),
        ("CompletionRequest", "max_tokens"),
        ("ResponseRequest", "max_output_tokens"),
    ]:
        options = schemas[model]["properties"][name].get("anyOf", [schemas[model]["properties"][name]])
        assert any(o.get("type") == "integer" and isinstance(o.get("maximum"), int) for o in options), (model, name)


def _tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


def test_cross_field_rules_are_in_the_document_or_answered_as_conflicts(client):
    rules = json.dumps(client.get("/openapi.json").json()["components"]["schemas"]["ChatCompletionRequest"]["allOf"])
    assert "top_logprobs" in rules and '"required"' in rules and "json_schema" in rules
    messages = [{"role": "user", "content": "hi"}]
    twice = client.post(
        "/v1/chat/completions", headers=AUTH, json={"messages": messages, "tools": [_tool("a"), _tool("a")]}
    )
    assert twice.status_code == 409 and twice.json()["error"]["param"] == "tools"
    named = {"type": "function", "function": {"name": "b"}}
    missing = client.post(
        "/v1/chat/completions", headers=AUTH, json={"messages": messages, "tools": [_tool("a")], "tool_choice": named}
    )
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "tool_choice"
