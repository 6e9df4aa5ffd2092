"""Text normalisation applied before both the stylistic features and the sentence embedding.

Why: typography and formatting vary freely across writers and pipelines (curly vs straight quotes, `--` vs `—`,
tokenised corpora with `do n't` and ` 's`, double spaces, order numbers and amounts) and carry no tone. Scoring
the raw text let such edits move a score by up to 0.29; scoring a canonical form makes them move nothing.

What is kept: casing, emoji (as separate tokens), `!`/`?`, ellipses, line breaks, words. What is canonicalised:
quotes, dashes, ellipses, whitespace, detokenisation, one trailing period, and digits (numbers, ids, amounts, urls,
e-mail addresses become placeholders). Placeholders are lowercase words in angle brackets; features ignore them.
"""

from __future__ import annotations

import re
import unicodedata

PLACEHOLDERS = ("<url>", "<email>", "<amount>", "<id>", "<num>")

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2212": "-",
        "\u00a0": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\u200b": "",
        "\ufeff": "",
    }
)
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\U0001f000-\U0001f2ff]\ufe0f?")
_DASH = re.compile(r"\s*(?:\u2013|\u2014|\u2015|--+)\s*|\s+-\s+")
_ELLIPSIS = re.compile(r"\u2026|\.(?:\s?\.){2,}")
_TOKENISED_CLITIC = re.compile(r"(\w) (n't|'s|'re|'ve|'ll|'d|'m)\b", re.I)
_SPLIT_NOT = re.compile(r"\b(ca|wo|do|does|did|is|are|was|were|have|has|had|could|would|should) n't\b", re.I)
_PTB_QUOTES = re.compile(r"``\s*|\s*''")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?%)\]])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[])\s+")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_AMOUNT = re.compile(
    r"[$€£¥]\s?\d[\d,]*(?:\.\d+)?(?:\s?[kKmM]\b)?|\b\d[\d,]*(?:\.\d+)?\s?(?:usd|eur|gbp|dollars?|euros?|pounds?|bucks)\b",
    re.I,
)
# an id: a token mixing letters and digits (A1B2-33, 1Z, INV-2231, #48213) or a #number
_ID = re.compile(r"#\s?\w+|\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:[-_/][A-Za-z0-9]+)*\b")
_TIME = re.compile(r"\b\d{1,2}(?::\d{2})?\s?(?:am|pm)\b|\b\d{1,2}:\d{2}\b", re.I)
_NUM = re.compile(r"\b\d+(?:[.,:/-]\d+)*(?:st|nd|rd|th|am|pm|s)?\b", re.I)
_PLACEHOLDER_RUN = re.compile(r"(<(?:url|email|amount|id|num)>)(?:[\s-]*<(?:id|num)>)+")
_ID_WORD = re.compile(r"\b(?:order|ticket|case|invoice|ref|reference|tracking|account)\s+(?:no\.?|number)\s+<", re.I)
_HSPACE = re.compile(r"[ \t\r\f\v]+")
_NEWLINES = re.compile(r"\s*\n\s*")


def _numbers(text: str) -> str:
    text = _URL.sub("<url>", text)
    text = _EMAIL.sub("<email>", text)
    text = _AMOUNT.sub("<amount>", text)
    text = _TIME.sub("<num>", text)
    text = _ID.sub(lambda m: m.group(0) if m.group(0).isalpha() else "<id>", text)
    text = _NUM.sub("<num>", text)
    text = _PLACEHOLDER_RUN.sub(r"\1", text)
    return _ID_WORD.sub(lambda m: m.group(0).split()[0] + " <", text)


def normalize(text: str) -> str:
    """The canonical form of a text for scoring (idempotent: normalize(normalize(t)) == normalize(t))."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = text.replace("<3", "\u2764")  # the heart emoticon, before digits become placeholders
    text = _PTB_QUOTES.sub('"', text)
    text = _SPLIT_NOT.sub(lambda m: m.group(1) + "n't", text)
    text = _TOKENISED_CLITIC.sub(r"\1\2", text)
    text = _ELLIPSIS.sub("...", text)
    text = _DASH.sub(" - ", text)
    text = EMOJI.sub(lambda m: f" {m.group(0)} ", text)
    text = _numbers(text)
    text = _HSPACE.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _SPACE_AFTER_OPEN.sub(r"\1", text)
    text = _NEWLINES.sub("\n", text).strip()
    # One trailing period says nothing about tone (chat UIs drop it, editors add it); "..." and "!" stay.
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text
