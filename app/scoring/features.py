"""Interpretable stylistic features of a (normalised) text: the part of the tone signal that does not depend on topic.

Three groups. *Register* (formality): word and sentence shape, contractions, slang, casing, punctuation habits,
passive voice. *Politeness strategies* (Brown & Levinson): gratitude, deference, greeting, apology, please at a
sentence start vs inside, indirect could/would vs indicative can/will requests, hedges, subjunctive modals,
first-person plural, direct questions and starts, factuality, second-person starts, obligation, rudeness and
sentiment, with negation handled ("not helpful", "I'm not sorry", "I don't appreciate" count against, not for).
*Warmth*: emotional reactions, validation, understanding, care and reassurance, feelings, personal address; `!` is
one weak cue among many; the cold signal is templated, impersonal language, not shortness.

Deliberately absent: raw length (text, word or sentence counts) and digits (normalised to placeholders, which
the features ignore), so neither can stand in for tone. Markers are squashed counts (presence matters more than
repetition); register cues are rates; position cues are shares of sentences.
"""

from __future__ import annotations

import math
import re

import numpy as np

from app.scoring import lexicons as lx
from app.scoring.normalize import normalize

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
PLACEHOLDER = re.compile(r"<(?:url|email|amount|id|num)>")
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\U0001f000-\U0001f2ff]")
EMOTICON = re.compile(r"(?::|;|=)-?[)(DPp/]|<3|\^\^|xD|XD")
CONTRACTION = re.compile(r"\b\w+'(?:s|re|ve|ll|d|m|t)\b|\b(?:cant|wont|dont|isnt|arent|didnt|doesnt|im|ive)\b", re.I)
STATUS_LINE = re.compile(r"^\s*[A-Z][A-Za-z ]{0,20}:\s*\S", re.M)

FEATURE_NAMES = [
    # register
    "mean_word_len",
    "mean_sentence_words",
    "long_word_rate",
    "latinate_rate",
    "formal_word_rate",
    "contraction_rate",
    "slang_rate",
    "lowercase_i",
    "lower_sentence_start",
    "caps_word_rate",
    "exclamation",
    "multi_punct",
    "question",
    "ellipsis",
    "emoji",
    "emoticon",
    "comma_rate",
    "semicolon_colon",
    "paren_dash",
    "passive",
    "stopword_free",
    # politeness strategies
    "please_start",
    "please_inside",
    "gratitude",
    "gratitude_negated",
    "apology",
    "apology_negated",
    "deference",
    "greeting",
    "closing",
    "indirect_request",
    "indicative_request",
    "subjunctive",
    "hedge",
    "factual",
    "direct_question",
    "direct_start",
    "first_singular_start",
    "first_plural",
    "second_start",
    "second_person",
    "obligation",
    "imperative_start",
    "rude",
    "dismissive",
    "negative",
    "positive",
    "positive_negated",
    # warmth
    "emotional_reaction",
    "validation",
    "understanding",
    "care",
    "feelings",
    "personal_address",
    "warm_emoji",
    "first_singular",
    # cold / robotic
    "templated",
    "status_line",
    "impersonal_sentences",
    "fragment_rate",
]


def _sq(count: float) -> float:
    """Squash a count: 0 -> 0, 1 -> 0.63, 3 -> 0.95; presence matters more than repetition."""
    return 1.0 - math.exp(-count)


def _matches(pattern: re.Pattern[str], text: str) -> tuple[int, int]:
    """(plain, negated) match counts: negated when a negator occurs within the three words before the match."""
    plain = negated = 0
    for m in pattern.finditer(text):
        before = re.split(r"[.!?,;\n]", text[max(0, m.start() - 40) : m.start()])[-1]  # same clause only
        window = " ".join(before.split()[-3:])
        if lx.NEGATORS.search(window):
            negated += 1
        else:
            plain += 1
    return plain, negated


def _sentence_words(sentence: str) -> list[str]:
    return [w.lower() for w in WORD.findall(sentence)]


def extract(text: str) -> np.ndarray:
    """Features of one text (normalised here; normalising twice is harmless)."""
    norm = normalize(text)
    plain = PLACEHOLDER.sub(" ", norm)
    lower = plain.lower()
    words = WORD.findall(plain)
    lower_words = [w.lower() for w in words]
    n_words = max(1, len(words))
    sentences = [s.strip() for s in SENTENCE_SPLIT.split(plain) if s.strip() and WORD.search(s)] or [plain]
    n_sent = len(sentences)
    sent_words = [_sentence_words(s) for s in sentences]
    lower_sents = [s.lower() for s in sentences]

    # sentence-initial words after an opening greeting ("Hi Sam, could you ...") or vocative
    starts = []
    for sw in sent_words:
        i = 1 if sw[:1] and lx.GREETING.match(sw[0]) else 0
        starts.append(sw[i] if len(sw) > i else "")
    please_start = sum(1 for s in starts if s in lx.PLEASE)
    please_all = sum(1 for w in lower_words if w in lx.PLEASE)
    gratitude, gratitude_neg = _matches(lx.GRATITUDE, lower)
    gratitude_neg += len(lx.THANKS_SARCASM.findall(lower))
    apology, apology_neg = _matches(lx.APOLOGY, lower)
    positive, positive_neg = _matches(lx.POSITIVE, lower)
    negative, negative_neg = _matches(lx.NEGATIVE, lower)
    reaction = len(lx.EMOTIONAL_REACTION.findall(lower))
    impersonal = sum(1 for sw in sent_words if not any(w in lx.FUNCTION_PRONOUNS for w in sw))
    fragments = sum(1 for sw in sent_words if len(sw) <= 4 and not any(w in lx.FUNCTION_PRONOUNS for w in sw))
    last = sent_words[-1] if sent_words else []
    closing = bool(last) and (
        bool(lx.GRATITUDE.search(lower_sents[-1]))
        or last[0] in {"regards", "best", "sincerely", "cheers", "warmly", "yours", "kind", "warm", "thanks"}
    )
    first_word = lower_words[0] if lower_words else ""
    vocative = bool(re.match(r"^(?i:hi|hey|hello|dear|thanks|thank you|morning)\s+[A-Z][a-z]+", plain)) or bool(
        re.search(r",\s*[A-Z][a-z]+[!?]?$", plain)
    )
    address = vocative or any(w in lx.ADDRESS_TERMS for w in lower_words[:3])
    letters = any(c.isalpha() for c in plain)

    values = {
        "mean_word_len": (sum(len(w) for w in words) / n_words) / 6.0 if words else 0.0,
        "mean_sentence_words": min(len(words) / n_sent, 40) / 20.0,
        "long_word_rate": sum(1 for w in words if len(w) >= 8) / n_words,
        "latinate_rate": sum(1 for w in lower_words if len(w) > 5 and lx.LATINATE.search(w)) / n_words,
        "formal_word_rate": sum(1 for w in lower_words if w in lx.FORMAL_WORDS) / n_words * 5,
        "contraction_rate": len(CONTRACTION.findall(plain)) / n_words * 5,
        "slang_rate": sum(1 for w in lower_words if w in lx.SLANG) / n_words * 5,
        "lowercase_i": _sq(len(re.findall(r"\bi\b(?!\.)", plain))),
        "lower_sentence_start": sum(1 for s in sentences if s[:1].islower()) / n_sent if letters else 0.0,
        "caps_word_rate": sum(1 for w in words if len(w) > 1 and w.isupper() and w != "OK") / n_words * 3,
        "exclamation": _sq(plain.count("!") * 0.5),
        "multi_punct": _sq(len(re.findall(r"[!?]{2,}", plain))),
        "question": _sq(plain.count("?")),
        "ellipsis": _sq(plain.count("...")),
        "emoji": _sq(len(EMOJI.findall(plain))),
        "emoticon": _sq(len(EMOTICON.findall(plain))),
        "comma_rate": plain.count(",") / n_words * 5,
        "semicolon_colon": _sq(plain.count(";") + plain.count(":")),
        "paren_dash": _sq(plain.count("(") + plain.count(" - ")),
        "passive": _sq(len(lx.PASSIVE.findall(lower))),
        "stopword_free": 1.0 - sum(1 for w in lower_words if w in lx.STOPWORDS) / n_words if words else 1.0,
        "please_start": _sq(please_start),
        "please_inside": _sq(max(0, please_all - please_start)),
        "gratitude": _sq(gratitude),
        "gratitude_negated": _sq(gratitude_neg),
        "apology": _sq(apology),
        "apology_negated": _sq(apology_neg),
        "deference": _sq(len(lx.DEFERENCE.findall(lower))),
        "greeting": 1.0 if lower_words and lx.GREETING.match(" ".join(lower_words[:3])) else 0.0,
        "closing": 1.0 if closing and n_sent > 1 else 0.0,
        "indirect_request": _sq(len(lx.INDIRECT.findall(lower))),
        "indicative_request": _sq(len(lx.INDICATIVE.findall(lower))),
        "subjunctive": _sq(sum(1 for w in lower_words if w in lx.SUBJUNCTIVE)),
        "hedge": _sq(len(lx.HEDGE.findall(lower))),
        "factual": _sq(len(lx.FACTUAL.findall(lower))),
        "direct_question": _sq(sum(1 for s in lower_sents if lx.DIRECT_QUESTION.search(s))),
        "direct_start": _sq(sum(1 for s in starts if s in lx.DIRECT_START)),
        "first_singular_start": _sq(sum(1 for s in starts if s in lx.FIRST_SINGULAR)),
        "first_plural": _sq(sum(1 for w in lower_words if w in lx.FIRST_PLURAL)),
        "second_start": _sq(sum(1 for s in starts if s in lx.SECOND)),
        "second_person": sum(1 for w in lower_words if w in lx.SECOND) / n_words * 5,
        "obligation": _sq(len(lx.OBLIGATION.findall(lower))),
        "imperative_start": sum(1 for s in starts if s in lx.IMPERATIVE_VERBS) / n_sent,
        "rude": _sq(len(lx.RUDE.findall(lower))),
        "dismissive": _sq(len(lx.DISMISSIVE.findall(lower))),
        "negative": _sq(negative + positive_neg),
        "positive": _sq(positive + negative_neg),
        "positive_negated": _sq(positive_neg),
        "emotional_reaction": _sq(reaction),
        "validation": _sq(len(lx.VALIDATION.findall(lower))),
        "understanding": _sq(len(lx.UNDERSTANDING.findall(lower))),
        "care": _sq(len(lx.CARE.findall(lower))),
        "feelings": _sq(len(lx.FEELINGS.findall(lower))),
        "personal_address": 1.0 if address else 0.0,
        "warm_emoji": _sq(len(lx.WARM_EMOJI.findall(plain))),  # hearts, hugs; a plain smiley is only an emoticon
        "first_singular": _sq(sum(1 for w in lower_words if w in lx.FIRST_SINGULAR)),
        "templated": _sq(len(lx.TEMPLATED.findall(lower))),
        "status_line": _sq(len(STATUS_LINE.findall(plain))),
        "impersonal_sentences": impersonal / n_sent,
        "fragment_rate": fragments / n_sent,
    }
    if first_word == "":
        values["lower_sentence_start"] = 0.0
    return np.array([values[name] for name in FEATURE_NAMES], dtype=np.float32)


def extract_many(texts: list[str]) -> np.ndarray:
    return np.stack([extract(t) for t in texts]) if texts else np.zeros((0, len(FEATURE_NAMES)), np.float32)
