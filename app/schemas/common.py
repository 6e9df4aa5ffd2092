"""Pieces every request schema shares: strictness, text that the tokenizers can take, ids and names."""

from __future__ import annotations

import functools
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

# What counts as blank: the characters ECMAScript's \s matches (the OpenAPI document's regex dialect). Python's
# str.strip() and the Rust regex behind pydantic's `pattern` each draw the line elsewhere (\x1c-\x1f, \x85), so a
# text of those was schema-valid yet refused; both sides use this set instead, spelled out.
SCHEMA_BLANK = " \t\n\v\f\r\u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" + "".join(map(chr, range(0x2000, 0x200B)))
NON_BLANK = "[^" + SCHEMA_BLANK + "]"  # a pattern: the text has a character outside that set

SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
NameField = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# OpenAI's logit_bias: token ids (as strings) -> -100..100, at most 1024 of them; the document says all of it
LogitBias = Annotated[
    dict[
        Annotated[str, StringConstraints(pattern=r"^(?:0|[1-9][0-9]{0,8})$")],
        Annotated[float, Field(ge=-100.0, le=100.0)],
    ],
    Field(max_length=1024, json_schema_extra={"additionalProperties": False}),
]


class Strict(BaseModel):
    # strict: "5" is not an int; forbid: a misspelt field is an error, not silently ignored; NaN and infinities
    # (which Python's JSON parser accepts) are refused as "not a finite number" rather than compared with bounds
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        """JSON Schema's "integer" (what the document says) admits 30.0: an integer field takes a whole float."""
        if not isinstance(data, dict):
            return data
        whole = {
            name: int(value)
            for name, value in data.items()
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**63 and name in _int_fields(cls)
        }
        return {**data, **whole} if whole else data


@functools.cache
def _int_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields of `model` typed int (or int | None, or a Literal of ints), by name and alias."""
    found: set[str] = set()
    for name, info in model.model_fields.items():
        options = get_args(info.annotation) if get_origin(info.annotation) in (Union, UnionType) else (info.annotation,)
        for option in options:
            is_int = option is int or (get_origin(option) is Literal and all(type(a) is int for a in get_args(option)))
            if is_int:
                found |= {name, info.alias or name}
    return frozenset(found)


# Temperature 0 is greedy; between 0 and MIN_TEMPERATURE is refused (a division by almost nothing): the document
# says so, as a choice of ranges
def temperature_schema(floor: float) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "number", "minimum": 0, "maximum": 0},
            {"type": "number", "minimum": floor, "maximum": 2},
            {"type": "null"},
        ]
    }


# stop: one non-empty string or up to 4 of them
STOP_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4},
        {"type": "null"},
    ]
}


def encodable(text: str) -> str:
    """Refuse text the tokenizers cannot take (lone UTF-16 surrogates from broken JSON escapes such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains an unpaired UTF-16 surrogate at character {exc.start}; send valid Unicode"
        ) from None
    return text


class TextPart(Strict):
    type: Literal["text"]
    text: str

    @field_validator("text")
    @classmethod
    def _valid_text(cls, value: str) -> str:
        return encodable(value)


def text_of(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)
