"""Pieces every request schema shares: strictness, text that the tokenizers can take, ids and names."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
NameField = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Strict(BaseModel):
    # strict: "5" is not an int; forbid: a misspelt field is an error, not silently ignored; NaN and infinities
    # (which Python's JSON parser accepts) are refused as "not a finite number" rather than compared with bounds
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


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
