"""The pure rules behind issue 25's fixes: which schemas no finite value matches, how the grammar reads an object
schema, the body parser's depth scan, route suggestions and Allow lists, grammar errors without the grammar, and
CLI help that names every default."""

import argparse
import json

import pytest

from app.api.body import MAX_JSON_DEPTH, parse_json_object, too_deep
from app.api.errors import allowed_methods, nearest_route
from app.engine.constraints import arguments_schema, closed_objects, short_error
from app.errors import InvalidBody
from app.schemas.satisfiable import unsatisfiable

SELF_REF = {"type": "object", "properties": {"n": {"$ref": "#"}}, "required": ["n"]}


@pytest.mark.parametrize(
    "schema",
    [
        SELF_REF,
        {"properties": {"n": {"$ref": "#"}}, "required": ["n"]},  # no type: an object all the same
        {
            "type": "object",
            "properties": {"n": {"type": "array", "items": {"$ref": "#"}, "minItems": 1}},
            "required": ["n"],
        },
        {
            "$defs": {
                "a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}, "required": ["b"]},
                "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "required": ["a"]},
            },
            "$ref": "#/$defs/a",
        },
        {"not": {}},
        {"not": True},
        {"type": []},
        {"enum": []},
        {"anyOf": []},
        {"anyOf": [{"not": {}}, {"type": []}]},
        {"type": "object", "required": ["x"], "additionalProperties": False},
        False,
    ],
)
def test_schemas_no_finite_value_matches(schema):
    assert unsatisfiable(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {},
        True,
        {"type": "object"},
        {"type": "object", "properties": {"n": {"$ref": "#"}}},  # optional
        {"type": ["object", "null"], "properties": {"n": {"$ref": "#"}}, "required": ["n"]},
        {"type": "object", "properties": {"n": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["n"]},
        {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}, "required": ["kids"]},
        {"$ref": "#/$defs/missing"},  # the grammar compiler names this one
        {"not": {"type": "string"}},
    ],
)
def test_schemas_that_can_stop(schema):
    assert unsatisfiable(schema) is None


def test_the_reason_names_the_place():
    reason = unsatisfiable({"type": "object", "properties": {"a/b": {"not": {}}}, "required": ["a/b"]})
    assert reason is not None and reason.startswith("#/properties/a~1b:")
    assert unsatisfiable(SELF_REF).startswith("#/properties/n: $ref '#'")


def test_a_long_chain_of_refs_is_decided_quickly():
    n = 5000
    defs = {
        f"d{i}": {"type": "object", "properties": {"x": {"$ref": f"#/$defs/d{i + 1}"}}, "required": ["x"]}
        for i in range(n)
    }
    defs[f"d{n}"] = {"type": "string"}
    assert unsatisfiable({"$defs": defs, "$ref": "#/$defs/d0"}) is None
    defs[f"d{n}"] = {"$ref": "#/$defs/d0"}
    assert unsatisfiable({"$defs": defs, "$ref": "#/$defs/d0"})


def test_objects_with_properties_are_closed_and_typed():
    schema = {
        "properties": {"input": {"type": "integer"}, "inner": {"properties": {"a": {}}}},
        "required": ["input"],
        "$defs": {"d": {"type": "object", "properties": {"b": {}}}},
        "anyOf": [{"type": "object", "properties": {"c": {}}}],
        "allOf": [{"properties": {"e": {}}}],
        "enum": [{"properties": {"untouched": 1}}],
    }
    out = closed_objects(schema)
    assert out["type"] == "object" and out["additionalProperties"] is False
    assert out["properties"]["inner"]["additionalProperties"] is False
    assert out["$defs"]["d"]["additionalProperties"] is False
    assert out["anyOf"][0]["additionalProperties"] is False
    assert "additionalProperties" not in out["allOf"][0]  # closing each member would refuse the others' keys
    assert out["enum"] == schema["enum"]  # data, not a schema
    assert schema["properties"]["inner"] == {"properties": {"a": {}}}  # the caller's schema is not changed


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {"type": "object", "properties": {"a": {}}, "additionalProperties": True},
        {"type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {}}},
    ],
)
def test_open_objects_stay_open(schema):
    assert "additionalProperties" not in closed_objects(schema) or schema.get("additionalProperties") is True


def test_tool_arguments_are_always_an_object():
    assert arguments_schema(None) == {"type": "object"}
    assert arguments_schema({"description": "anything"})["type"] == "object"
    assert arguments_schema({"anyOf": [{"type": "object"}]}).get("type") is None


def test_the_depth_scan():
    assert not too_deep("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert too_deep("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert not too_deep(json.dumps({"a": "[" * 1000, "b": '\\"[[[' * 100}))
    assert not too_deep("[]" * 100_000)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b"{", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, f"more than {MAX_JSON_DEPTH} levels"),
    ],
)
def test_the_body_parser_refuses_with_a_typed_error(body, needle):
    with pytest.raises(InvalidBody, match=needle):
        parse_json_object(body)


def test_the_body_parser_reads_a_bom_and_unicode():
    assert parse_json_object('\ufeff{"text": "café"}'.encode()) == {"text": "café"}


ROUTES = {
    "/v1/sessions/{session_id}": {"get": {}, "delete": {}},
    "/v1/sessions/{session_id}/drift": {"get": {}},
    "/v1/responses": {"post": {}},
    "/v1/chat/completions": {"post": {}},
    "/admin/personas/{name}": {"get": {}, "put": {}, "delete": {}},
    "/admin/personas": {"get": {}},
}


def test_allow_lists_every_route_of_the_path():
    assert allowed_methods("/admin/personas/x", ROUTES) == ["DELETE", "GET", "HEAD", "PUT"]
    assert allowed_methods("/v1/chat/completions", ROUTES) == ["POST"]
    assert allowed_methods("/nowhere", ROUTES) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/sessions/", "/v1/sessions/{session_id}"),
        ("/v1/session/abc/drift", "/v1/sessions/{session_id}/drift"),
        ("/v1/chat/completion", "/v1/chat/completions"),
        ("/v1/chat/completions/", "/v1/chat/completions"),
        ("/v1/foo", None),
        ("/v2/responses/x", None),
        ("/", None),
    ],
)
def test_only_close_routes_are_suggested(path, expected):
    assert nearest_route(path, list(ROUTES)) == expected


def test_grammar_errors_lose_the_grammar_listing():
    raw = (
        "at 2(7): failed to compile JSON schema: Invalid type: foo\n"
        '   1 | start: "<tool_call>" call "</tool_call>"\n'
        '   2 | call: %json {"type": "object"}\n'
        "             ^\n"
    )
    assert short_error(raw) == "Invalid type: foo"
    assert short_error("regex parse error:\n    ((\n     ^\nerror: unclosed group") == (
        "regex parse error: (( error: unclosed group"
    )


def _parsers():
    from app.evaluation.report import build_parser as eval_parser
    from app.evaluation.stress import build_parser as stress_parser
    from app.training.config import build_parser as train_parser

    return {"eval": eval_parser(), "stress": stress_parser(), "train-adapter": train_parser()}


@pytest.mark.parametrize("command", ["eval", "stress", "train-adapter"])
def test_every_cli_option_has_help_that_names_its_default(command):
    parser = _parsers()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = formatter._get_help_string(action) or ""
        assert action.help, action.option_strings
        assert action.required or "default" in text or "required" in text, (action.option_strings, text)
        if action.default not in (None, argparse.SUPPRESS):
            assert "%(default)s" in text or str(action.default) in text, (action.option_strings, text)


def test_eval_help_through_the_entry_point(capsys):
    from app.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--suite" in out and "(default: 4)" in out
