"""Grammar-constrained decoding with llguidance: a grammar (JSON schema or Lark) becomes a per-row matcher whose
token mask the sampler applies each step, so constrained and free rows share one batch.

Why llguidance: CPU-native (Rust, no CUDA/triton dependency, unlike xgrammar's wheel), maintained (it backs
Guidance, and vLLM / llama.cpp / TensorRT-LLM use it), ~50 us per mask on large vocabularies, full JSON-schema
coverage, and lazy "tool call in the middle of text" grammars. The tokenizer view is built once (~0.4 s).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.errors import InvalidRequest

if TYPE_CHECKING:  # llguidance itself is imported when the first grammar is compiled
    from llguidance import LLMatcher, LLTokenizer
    from llguidance._lib import JsonCompileOptions

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
# Canonical JSON (as json.dumps writes it): no free whitespace, which a small model could fill forever.
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "lenient": True,
}


class Grammars:
    """Compiles grammars for one tokenizer into fresh matchers (call off the event loop: it can take ms)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: set[int]):
        self._hf = tokenizer
        self._vocab = vocab_size
        self._eos = sorted(eos_ids)
        self._tokenizer: LLTokenizer | None = None
        self._lock = threading.Lock()

    def _lltokenizer(self) -> LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                import llguidance.hf

                self._tokenizer = llguidance.hf.from_tokenizer(
                    self._hf, n_vocab=self._vocab, eos_token=self._eos[0] if self._eos else None
                )
            return self._tokenizer

    def matcher(self, grammar: str, param: str, parts: Sequence[tuple[str, dict[str, Any]]] = ()) -> LLMatcher:
        """A fresh matcher for `grammar`. `parts` (label, JSON schema) are the schemas it was built from: when it
        does not compile, the first part that does not compile alone is named (say, one tool of several)."""
        from llguidance import LLMatcher

        tokenizer = self._lltokenizer()
        is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
        if is_error:
            raise InvalidRequest(self._explain(messages[0], param, parts), param=param)
        matcher = LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(self._explain(matcher.get_error(), param, parts), param=param)
        return matcher

    def _explain(self, error: str, param: str, parts: Sequence[tuple[str, dict[str, Any]]]) -> str:
        from llguidance import LLMatcher

        for label, schema in parts:
            try:
                failed, messages = LLMatcher.validate_grammar_with_warnings(
                    json_schema_grammar(schema), self._lltokenizer()
                )
            except ValueError as exc:
                failed, messages = True, [str(exc)]
            if failed:
                return f"{label}: {short_error(messages[0])}"
        return f"cannot constrain generation to this {param}: {short_error(error)}"


def short_error(message: str) -> str:
    """The grammar compiler's complaint without the grammar listing it appends (numbered Lark lines, a caret)."""
    kept = [line.strip() for line in message.splitlines() if line.strip(" ^") and not re.match(r"^\s*\d+ \| ", line)]
    text = re.sub(r"^at \d+\(\d+\): ", "", " ".join(kept)).removeprefix("failed to compile JSON schema: ")
    return text if len(text) <= 300 else text[:299] + "…"


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedProperties",
    "not",
    "contains",
    "if",
    "then",
    "else",
    "propertyNames",
)


def closed_objects(schema: Any, *, close: bool = True) -> Any:
    """The schema as the grammar enforces it (for response_format json_schema and for tool arguments alike), the way
    OpenAI's strict mode reads a schema:

    * an object schema that lists `properties` and says nothing about `additionalProperties` gets
      "additionalProperties": false. The model may not add keys the schema never named (it wrote
      {"input": 3, "type": "integer"} for {"properties": {"input": {"type": "integer"}}}), which no function can take.
      A schema that lists no properties ({"type": "object"}) stays open, as does one with patternProperties, and
      the members of an allOf (closing each would refuse the keys the other members add);
    * a schema with `properties` or `required` and no `type` is an object (JSON Schema would let a string or a number
      match it; app/schemas/satisfiable.py reads it the same way)."""
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: closed_objects(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS or key in _SCHEMA_ONE:
            out[key] = closed_objects(value)
        elif key == "allOf" and isinstance(value, list):
            out[key] = [closed_objects(sub, close=False) for sub in value]
        else:
            out[key] = value  # data (enum, const, default, examples) and annotations: as given
    shaped = "properties" in schema or "required" in schema
    if shaped and "type" not in schema:
        out["type"] = "object"
    open_by_design = any(k in schema for k in ("additionalProperties", "unevaluatedProperties", "patternProperties"))
    if close and "properties" in schema and not open_by_design:
        out["additionalProperties"] = False
    return out


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """JSON matching `schema` as closed_objects reads it, written canonically (JSON_OPTIONS: no free whitespace)."""
    from llguidance import LLMatcher

    return LLMatcher.grammar_from_json_schema(json.dumps(closed_objects(schema)), overrides=JSON_OPTIONS)


def arguments_schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """A tool's arguments as the grammar enforces them: closed_objects, and always an object (OpenAI's arguments
    are a JSON object; a schema that names no type would otherwise let the model write a bare string)."""
    schema = closed_objects(parameters) if parameters else {"type": "object"}
    if not any(k in schema for k in ("type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const")):
        schema["type"] = "object"
    return schema


def call_schema(name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": arguments_schema(parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def required_call_grammar(tools: list[tuple[str, dict[str, Any] | None]]) -> str:
    """Exactly one call of one of `tools`, in the prompt's format:
    <tool_call>{"name": ..., "arguments": ...}</tool_call>, written canonically like every JSON answer (JSON_OPTIONS:
    no newlines or indentation, which a small max_tokens budget cannot afford), arguments as arguments_schema
    reads the tool's parameters."""
    from llguidance import LLMatcher

    schemas = [call_schema(name, params) for name, params in tools]
    schema: dict[str, Any] = {**schemas[0]} if len(schemas) == 1 else {"anyOf": schemas}
    schema["x-guidance"] = JSON_OPTIONS
    lark = f"start: {json.dumps(TOOL_OPEN)} call {json.dumps(TOOL_CLOSE)}\ncall: %json {json.dumps(schema)}\n"
    return LLMatcher.grammar_from_lark(lark)


def auto_call_grammar(tools: list[tuple[str, dict[str, Any] | None]]) -> str:
    """Free text, in which a tool call may appear: once the model writes <tool_call>, the call that follows is
    constrained to a well-formed call of one of `tools` (a lazy grammar: text pays nothing until the trigger);
    arguments as in required_call_grammar."""
    from llguidance import LLMatcher, StructTag

    tags = [
        StructTag(
            trigger=TOOL_OPEN,
            begin=f'{TOOL_OPEN}{{"name": {json.dumps(name)}, "arguments": ',
            grammar={**arguments_schema(params), "x-guidance": JSON_OPTIONS},
            end=f"}}{TOOL_CLOSE}",
        )
        for name, params in tools
    ]
    return LLMatcher.grammar_from_lark(StructTag.to_grammar(tags, assume_special=False))
