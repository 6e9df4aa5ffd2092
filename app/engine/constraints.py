"""Grammar-constrained decoding with llguidance: a grammar (JSON schema or Lark) becomes a per-row matcher whose
token mask the sampler applies each step, so constrained and free rows share one batch.

Why llguidance: CPU-native (Rust, no CUDA/triton dependency, unlike xgrammar's wheel), maintained (it backs
Guidance, and vLLM / llama.cpp / TensorRT-LLM use it), ~50 us per mask on large vocabularies, full JSON-schema
coverage, and lazy "tool call in the middle of text" grammars. The tokenizer view is built once (~0.4 s).
"""

from __future__ import annotations

import json
import threading
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

    def matcher(self, grammar: str, param: str) -> LLMatcher:
        from llguidance import LLMatcher

        tokenizer = self._lltokenizer()
        is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
        if is_error:
            raise InvalidRequest(f"cannot constrain generation to this {param}: {messages[0]}", param=param)
        matcher = LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"cannot constrain generation to this {param}: {matcher.get_error()}", param=param)
        return matcher


def json_schema_grammar(schema: dict[str, Any]) -> str:
    from llguidance import LLMatcher

    return LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_OPTIONS)


def call_schema(name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters or {"type": "object"}},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def required_call_grammar(tools: list[tuple[str, dict[str, Any] | None]]) -> str:
    """Exactly one call of one of `tools`, in the prompt's format:
    <tool_call>{"name": ..., "arguments": ...}</tool_call>."""
    from llguidance import LLMatcher

    schemas = [call_schema(name, params) for name, params in tools]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas, "x-guidance": JSON_OPTIONS}
    lark = f"start: {json.dumps(TOOL_OPEN)} call {json.dumps(TOOL_CLOSE)}\ncall: %json {json.dumps(schema)}\n"
    return LLMatcher.grammar_from_lark(lark)


def auto_call_grammar(tools: list[tuple[str, dict[str, Any] | None]]) -> str:
    """Free text, in which a tool call may appear: once the model writes <tool_call>, the call that follows is
    constrained to a well-formed call of one of `tools` (a lazy grammar: text pays nothing until the trigger)."""
    from llguidance import LLMatcher, StructTag

    tags = [
        StructTag(
            trigger=TOOL_OPEN,
            begin=f'{TOOL_OPEN}{{"name": {json.dumps(name)}, "arguments": ',
            grammar=params or {"type": "object"},
            end=f"}}{TOOL_CLOSE}",
        )
        for name, params in tools
    ]
    return LLMatcher.grammar_from_lark(StructTag.to_grammar(tags, assume_special=False))
