"""Tools and structured output for the embedded engine: how a request's tools, tool history and response_format
become a prompt and a decoding constraint, and how the generated text becomes OpenAI `tool_calls`.

Prompt format (documented in the README). When the model's chat template renders tools in the Hermes style (it
mentions `<tool_call>`), the template does it; otherwise (SmolLM2's template ignores tools) a system preamble lists
the functions as JSON schemas and asks for `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; earlier
assistant tool calls are rendered in that same form and tool results as `<tool_response>` user turns.

Decoding: tool_choice "required" or a named function constrain the whole answer to one well-formed call
(arguments matching the schema); "auto" lets the model write text and constrains a call once it starts one;
"none" advertises no tools. response_format json_object / json_schema constrain the answer to JSON (the schema).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.engine.constraints import (
    TOOL_CLOSE,
    TOOL_OPEN,
    arguments_schema,
    auto_call_grammar,
    json_schema_grammar,
    required_call_grammar,
)
from app.schemas.chat import ChatCompletionRequest, JsonObjectFormat, JsonSchemaFormat, NamedToolChoice

PREAMBLE = (
    "You can call functions to help the user. The available functions, as JSON schemas:\n{tools}\n"
    'To call a function, answer with exactly <tool_call>{{"name": "<function name>", "arguments": {{<arguments as '
    "JSON>}}}}</tool_call> and nothing else. Otherwise answer the user normally."
)
MIN_PROSE_WORDS = 3
JSON_STRING_CAP = 400  # characters, for strings of a response_format schema that set no maxLength
CALL = re.compile(re.escape(TOOL_OPEN) + r"(.*?)" + re.escape(TOOL_CLOSE), re.S)


@dataclass
class Plan:
    """How one request is generated: its prompt messages, its grammar (or None) and how its output is read."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None  # for a chat template that renders tools itself
    grammar: str | None
    grammar_param: str | None
    tool_mode: str | None  # None | "required" | "auto"
    structured: bool  # response_format json_*: the answer is JSON
    # (label, schema) the grammar was built from: a grammar that does not compile names the part at fault
    grammar_parts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def plan(req: ChatCompletionRequest, native_tools: bool) -> Plan:
    choice = req.tool_choice if req.tool_choice is not None else ("auto" if req.tools else "none")
    offered = [t.function for t in req.tools or []] if choice != "none" else []
    if isinstance(choice, NamedToolChoice):
        offered = [f for f in offered if f.name == choice.function.name]
    messages = _messages(req, offered, native_tools)
    if isinstance(req.response_format, JsonObjectFormat | JsonSchemaFormat):
        _add_system(messages, _json_preamble(req.response_format))
    specs = [(f.name, bounded_strings(f.parameters) if f.parameters else None) for f in offered]
    parts = [(f"tools: function {name!r} parameters", arguments_schema(params)) for name, params in specs]
    grammar = param = mode = None
    if offered and (choice == "required" or isinstance(choice, NamedToolChoice)):
        grammar, param, mode = required_call_grammar(specs), "tools", "required"
    elif offered:
        grammar, param, mode = auto_call_grammar(specs), "tools", "auto"
    fmt = req.response_format
    if isinstance(fmt, JsonObjectFormat):
        grammar, param, parts = json_schema_grammar({"type": "object"}), "response_format", []
    elif isinstance(fmt, JsonSchemaFormat):
        schema = bounded_strings(fmt.json_schema.schema_ or {"type": "object"})
        grammar, param = json_schema_grammar(schema), "response_format"
        parts = [("response_format.json_schema.schema", schema)]
    tools = (
        [{"type": "function", "function": f.model_dump(exclude_none=True)} for f in offered]
        if native_tools and offered
        else None
    )
    structured = isinstance(fmt, JsonObjectFormat | JsonSchemaFormat)
    return Plan(messages, tools, grammar, param, mode, structured, parts if grammar else [])


def _messages(req: ChatCompletionRequest, offered, native_tools: bool) -> list[dict[str, Any]]:
    names = {c.id: c.function.name for m in req.messages for c in m.tool_calls or []}
    out: list[dict[str, Any]] = []
    for m in req.messages:
        role = "system" if m.role == "developer" else m.role
        if m.role == "assistant" and m.tool_calls:
            calls = "".join(
                f'{TOOL_OPEN}{{"name": {json.dumps(c.function.name)}, "arguments": '
                f"{_arguments(c.function.arguments)}}}{TOOL_CLOSE}"
                for c in m.tool_calls
            )
            out.append({"role": "assistant", "content": (m.text() + "\n" if m.text() else "") + calls})
        elif m.role == "tool":
            name = names.get(m.tool_call_id or "", m.name or "tool")
            out.append({"role": "user", "content": f'<tool_response name="{name}">\n{m.text()}\n</tool_response>'})
        else:
            out.append({"role": role, "content": m.text()})
    if offered and not native_tools:
        listing = json.dumps(
            [
                {"name": f.name, "description": f.description or "", "parameters": f.parameters or {"type": "object"}}
                for f in offered
            ]
        )
        _add_system(out, PREAMBLE.format(tools=listing))
    return out


def bounded_strings(schema: Any) -> Any:
    """The schema with a `maxLength` on every free-form string that has none. A small model can loop forever
    inside an open string under greedy decoding; the cap makes the JSON close, and a shorter string still matches
    the caller's schema."""
    if isinstance(schema, list):
        return [bounded_strings(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_strings(v) for k, v in schema.items()}
    free = not any(k in schema for k in ("maxLength", "enum", "const", "pattern", "format"))
    if schema.get("type") == "string" and free:
        out["maxLength"] = JSON_STRING_CAP
    return out


def _add_system(messages: list[dict[str, Any]], text: str) -> None:
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + text}
    else:
        messages.insert(0, {"role": "system", "content": text})


def _json_preamble(fmt: JsonObjectFormat | JsonSchemaFormat) -> str:
    """Decoding enforces the JSON either way; telling the model the shape keeps it from rambling inside it."""
    if isinstance(fmt, JsonSchemaFormat):
        schema = json.dumps(fmt.json_schema.schema_ or {"type": "object"})
        return f"Answer with one JSON object and nothing else, matching this JSON schema: {schema}. Keep strings short."
    return "Answer with one JSON object and nothing else. Keep strings short."


def _arguments(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments))
    except ValueError:
        return json.dumps(arguments)  # not JSON: keep it as a string rather than break the prompt


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content before the first call or None, OpenAI tool_calls) from generated text."""
    calls = []
    for match in CALL.finditer(text):
        try:
            call = json.loads(match.group(1))
        except ValueError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            calls.append(
                {
                    "id": "call_" + uuid.uuid4().hex[:24],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": compact_json(call.get("arguments", {}))},
                }
            )
    if not calls:
        return text, []
    content = text[: text.find(TOOL_OPEN)].strip()
    return content or None, calls


def compact_json(value: Any) -> str:
    """Tool-call arguments as OpenAI writes them: '{"order_id":"A1"}', no spaces or newlines."""
    return json.dumps(value, separators=(",", ":"))


def json_strings(text: str) -> str:
    """The human-readable part of a JSON answer, for tone: its string values, in order (keys and numbers carry
    no tone)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    parts: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    prose = " ".join(p for p in parts if p.strip())
    # ids and enum values ("4411", "shipped") carry no tone: judge only answers with some prose in them
    return prose if len(prose.split()) >= MIN_PROSE_WORDS else ""


def supports_native_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(template, str) and "tools" in template and TOOL_OPEN in template
