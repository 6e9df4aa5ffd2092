"""The OpenAPI document, made true: validation errors are 400 envelopes (not FastAPI's 422), the chat request
schema (read from the raw body) is listed, bounds that depend on settings (max_tokens) are stated, and integer
fields have integer bounds (request bodies are strict: an integer field takes 30, not 30.0)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.errors import ErrorEnvelope
from app.config import Settings
from app.schemas.chat import ChatCompletionRequest
from app.schemas.completions import CompletionRequest
from app.schemas.responses import ResponseRequest

REF = "#/components/schemas/{model}"


def _schema_with_defs(model) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    return schema, schema.pop("$defs", {})


def _integer_bounds(node: Any) -> None:
    """Bounds of integer fields as integers (FastAPI writes `ge=5` as 5.0, which reads as "a number")."""
    if isinstance(node, list):
        for item in node:
            _integer_bounds(item)
    elif isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "default"):
                value = node.get(key)
                if isinstance(value, float) and value.is_integer():
                    node[key] = int(value)
        for value in node.values():
            _integer_bounds(value)


def token_id_pattern(vocab_size: int) -> str:
    """A regex for the decimal token ids 0..vocab_size-1 (no leading zeros), so the document states the vocabulary's
    bound on logit_bias keys that the engine enforces."""
    top = str(max(0, vocab_size - 1))
    if len(top) == 1:
        return f"^[0-{top}]$"
    options = ["0", f"[1-9][0-9]{{0,{len(top) - 2}}}"]
    for i, digit in enumerate(top):
        low = "1" if i == 0 else "0"
        if int(digit) > int(low):
            below = f"[{low}-{int(digit) - 1}]"
            options.append(top[:i] + below + (f"[0-9]{{{len(top) - i - 1}}}" if i < len(top) - 1 else ""))
    options.append(top)
    return "^(?:" + "|".join(options) + ")$"


def _bound_token_ids(schemas: dict[str, Any], vocab_size: int) -> None:
    pattern = token_id_pattern(vocab_size)
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        prop = schemas.get(name, {}).get("properties", {}).get("logit_bias", {})
        for option in prop.get("anyOf", [prop]):
            keys = option.get("patternProperties")
            if keys:
                option["patternProperties"] = {pattern: next(iter(keys.values()))}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in (ChatCompletionRequest, CompletionRequest, ResponseRequest, ErrorEnvelope):
            schema, defs = _schema_with_defs(model)
            schemas.update(defs)
            schemas[model.__name__] = schema
        for schema_name, name in (
            ("ChatCompletionRequest", "max_tokens"),
            ("ChatCompletionRequest", "max_completion_tokens"),
            ("CompletionRequest", "max_tokens"),
            ("ResponseRequest", "max_output_tokens"),
        ):
            prop = schemas[schema_name]["properties"].get(name)
            if prop is not None:
                for option in prop.get("anyOf", [prop]):
                    if option.get("type") == "integer":
                        option["maximum"] = settings.max_new_tokens
        envelope = {
            "description": "Invalid request",
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorEnvelope")}}},
        }
        for operations in doc.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.get("422", {}).get("description") == "Validation Error":
                    del responses["422"]
                    responses.setdefault("400", envelope)
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        _integer_bounds(schemas)
        vocab_size = getattr(getattr(getattr(app.state, "tw", None), "backend", None), "vocab_size", None)
        if isinstance(vocab_size, int):  # the embedded engine's vocabulary (an upstream judges ids itself)
            _bound_token_ids(schemas, vocab_size)
        app.openapi_schema = doc
        return doc

    app.openapi = build  # type: ignore[method-assign]
