"""Interpretable stylistic features of a text: the part of the tone signal that does not depend on topic.

Each feature is a rate or a squashed count so texts of any length are comparable. The lexicons are ours and
deliberately small; they mark register (contractions, slang, casing), politeness strategies (gratitude, apology,
deference, hedges, indirect requests, greetings), warmth (positive affect, empathy) and the terse "robotic"
register (fragments, codes, no pronouns).
"""

from __future__ import annotations

import math
import re

import numpy as np


def _words(text: str) -> set[str]:
    return set(text.split())


WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\U0001f000-\U0001f2ff]")
EMOTICON = re.compile(r"(?::|;|=)-?[)(DPp/]|<3|\^\^|xD|XD")
CONTRACTION = re.compile(r"\b\w+'(?:s|re|ve|ll|d|m|t)\b|\b(?:can|won|don|isn|aren|didn|doesn|wasn|weren)t\b", re.I)

SLANG = _words("""
lol lmao lmfao rofl omg omfg wtf idk idc tbh btw imo imho ngl fr rn bc cuz coz cos gonna wanna
gotta kinda sorta dunno ya yah yeah yep yup nah nope u ur r k kk ok okay yo dude bro bruh guys
y'all yall thx thnx ty pls plz lemme gimme ain't aint wassup sup hey heya hiya haha hahaha hehe
lil tho thru nvm smh af bday asap fyi jk xoxo meh ugh ooh oops whoa wow yay cool awesome stuff
folks mate cheers tons gotcha totally super
""")
FORMAL_WORDS = _words("""
however therefore furthermore moreover nevertheless consequently accordingly regarding hereby
herein thereof whereby pursuant notwithstanding additionally subsequently respectively
approximately therein henceforth prior whom thus hence shall kindly sincerely regards dear
madam sir request requested inform informed ensure assist assistance require required inquiry
enquiry acknowledge appreciate regret apologise apologize convenience purchase receive received
provide provided please note indicate indicated obtain commence concerning sufficient
demonstrate facilitate utilize utilise regard whereas upon
""")
POLITE_PLEASE = {"please", "pls", "plz", "kindly"}
GRATITUDE = re.compile(r"\b(thanks?|thank you|thx|ty|appreciate[ds]?|grateful|cheers)\b", re.I)
APOLOGY = re.compile(r"\b(sorry|apologi[sz]e[sd]?|apologies|regret|my bad|excuse me|pardon)\b", re.I)
DEFERENCE = re.compile(
    r"\b(would you mind|if you don't mind|if it's not too much|when you (?:get|have) a (?:chance|moment)|"
    r"i was wondering|i wonder if|would it be possible|might i|may i|sorry to bother|no rush|at your convenience|"
    r"great question|good question|you're right|you are right|i understand)\b",
    re.I,
)
INDIRECT = re.compile(r"\b(could|would|can|will) you\b|\bwould it be\b|\bis it possible\b", re.I)
GREETING = re.compile(r"^\s*(hi|hello|hey|dear|good (?:morning|afternoon|evening)|greetings|howdy|hiya|yo)\b", re.I)
HEDGE = re.compile(
    r"\b(perhaps|maybe|might|possibly|probably|i think|i believe|i guess|i suppose|it seems|"
    r"seems|somewhat|a bit|kind of|sort of|apparently|likely|unlikely|i feel)\b",
    re.I,
)
FACTUAL = re.compile(r"\b(actually|in fact|obviously|clearly|of course|really|honestly|seriously)\b", re.I)
DIRECT_Q = re.compile(r"^\s*(why|what|how|where|when|who)\b[^.!]*\?", re.I)
RUDE = re.compile(
    r"\b(stupid|idiot|idiotic|dumb|hell|damn|wtf|crap|shit|ridiculous|useless|pathetic|nonsense|"
    r"shut up|moron|garbage|incompetent|whatever|terrible|awful|worst|hate|sucks?|annoying)\b",
    re.I,
)
POSITIVE = re.compile(
    r"\b(happy|glad|love|lovely|great|wonderful|awesome|amazing|excited|exciting|delighted|"
    r"fantastic|enjoy|hope|hoping|welcome|pleasure|congrats|congratulations|yay|thrilled|"
    r"excellent|perfect|best|beautiful|sweet|fun|nice|kind|care|warm|warmly|hug|hugs)\b",
    re.I,
)
EMPATHY = re.compile(
    r"\b(i understand|i know how|that must|must be|sorry to hear|frustrating|totally get|"
    r"i hear you|don't worry|no worries|rest assured|we're here|i'm here|happy to help|"
    r"here to help|feel free|take care|hang in there)\b",
    re.I,
)
IMPERATIVE_VERBS = _words("""
send give tell fix stop do make check go look read update remove add use try provide submit
enter click call contact wait restart retry reset follow see note ensure let get put take bring
keep open close confirm fill select choose install delete return refer visit sign log reply
respond allow expect
""")
FIRST_SINGULAR = {"i", "me", "my", "mine", "myself", "i'm", "i've", "i'll", "i'd"}
FIRST_PLURAL = {"we", "us", "our", "ours", "we're", "we've", "we'll", "we'd"}
SECOND = {"you", "your", "yours", "yourself", "you're", "you've", "you'll", "you'd", "u", "ur"}
FUNCTION_PRONOUNS = FIRST_SINGULAR | FIRST_PLURAL | SECOND | {"he", "she", "they", "it", "this", "that"}
LATINATE = re.compile(r"(tion|sion|ment|ance|ence|ity|ive|ous|ial|ible|able|ize|ise|ate)$")
CODE_LIKE = re.compile(r"#?\b[A-Z0-9]{2,}[-_]?\d+\b|\b\d+[a-z]*\b|\b[A-Z]{2,}\b")
STATUS_LINE = re.compile(r"^\s*[A-Z][A-Za-z ]{0,20}:\s*\S", re.M)

FEATURE_NAMES = [
    "log_chars",
    "log_words",
    "mean_word_len",
    "mean_sentence_words",
    "log_sentences",
    "long_word_rate",
    "latinate_rate",
    "formal_word_rate",
    "contraction_rate",
    "slang_rate",
    "lowercase_i",
    "lower_sentence_start",
    "caps_word_rate",
    "no_final_punct",
    "exclamation_rate",
    "multi_punct",
    "question_rate",
    "ellipsis",
    "emoji_rate",
    "emoticon",
    "comma_rate",
    "semicolon_colon",
    "paren_dash",
    "please",
    "please_start",
    "gratitude",
    "apology",
    "deference",
    "indirect_request",
    "greeting",
    "hedge",
    "factual",
    "direct_question",
    "rude",
    "positive",
    "empathy",
    "imperative_start",
    "first_singular",
    "first_plural",
    "second_person",
    "second_start",
    "pronoun_rate",
    "fragment_rate",
    "code_rate",
    "status_line",
    "digit_rate",
    "stopword_free",
]

STOPWORDS = _words("""
the a an of to in on for and or but is are was were be been being it this that with as at by
from if then so not no do does did have has had will would can could should
""")


def _sq(count: float) -> float:
    """Squash a count: 0 -> 0, 1 -> 0.63, 3 -> 0.95; presence matters more than repetition."""
    return 1.0 - math.exp(-count)


def extract(text: str) -> np.ndarray:
    stripped = text.strip()
    words = WORD.findall(stripped)
    lower_words = [w.lower() for w in words]
    n_words = max(1, len(words))
    sentences = [s for s in SENTENCE_SPLIT.split(stripped) if s.strip()] or [stripped]
    n_sent = len(sentences)
    letters = [c for c in stripped if c.isalpha()]
    sentence_word_counts = [len(WORD.findall(s)) for s in sentences]
    fragments = sum(
        1
        for c, s in zip(sentence_word_counts, sentences, strict=True)
        if c <= 4 and not any(w.lower() in FUNCTION_PRONOUNS for w in WORD.findall(s))
    )
    imperative = sum(1 for s in sentences if (m := WORD.match(s.strip())) and m.group(0).lower() in IMPERATIVE_VERBS)
    content = [w for w in lower_words if w not in STOPWORDS]

    values = {
        "log_chars": math.log1p(len(stripped)) / 6.0,
        "log_words": math.log1p(len(words)) / 5.0,
        "mean_word_len": (sum(len(w) for w in words) / n_words) / 6.0 if words else 0.0,
        "mean_sentence_words": min(sum(sentence_word_counts) / n_sent, 60) / 20.0,
        "log_sentences": math.log1p(n_sent) / 2.0,
        "long_word_rate": sum(1 for w in words if len(w) >= 8) / n_words,
        "latinate_rate": sum(1 for w in lower_words if len(w) > 5 and LATINATE.search(w)) / n_words,
        "formal_word_rate": sum(1 for w in lower_words if w in FORMAL_WORDS) / n_words * 5,
        "contraction_rate": len(CONTRACTION.findall(stripped)) / n_words * 5,
        "slang_rate": sum(1 for w in lower_words if w in SLANG) / n_words * 5,
        "lowercase_i": _sq(len(re.findall(r"\bi\b(?!\.)", stripped))),
        "lower_sentence_start": sum(1 for s in sentences if s.strip()[:1].islower()) / n_sent,
        "caps_word_rate": sum(1 for w in words if len(w) > 1 and w.isupper()) / n_words * 3,
        "no_final_punct": 0.0 if stripped[-1:] in ".!?)\"'" else 1.0,
        "exclamation_rate": _sq(stripped.count("!")),
        "multi_punct": _sq(len(re.findall(r"[!?]{2,}", stripped))),
        "question_rate": _sq(stripped.count("?")),
        "ellipsis": _sq(len(re.findall(r"\.\.+|…", stripped))),
        "emoji_rate": _sq(len(EMOJI.findall(stripped))),
        "emoticon": _sq(len(EMOTICON.findall(stripped))),
        "comma_rate": stripped.count(",") / n_words * 5,
        "semicolon_colon": _sq(stripped.count(";") + stripped.count(":")),
        "paren_dash": _sq(stripped.count("(") + len(re.findall(r"\s[-–—]\s|—", stripped))),
        "please": _sq(sum(1 for w in lower_words if w in POLITE_PLEASE)),
        "please_start": 1.0 if lower_words[:1] and lower_words[0] in POLITE_PLEASE else 0.0,
        "gratitude": _sq(len(GRATITUDE.findall(stripped))),
        "apology": _sq(len(APOLOGY.findall(stripped))),
        "deference": _sq(len(DEFERENCE.findall(stripped))),
        "indirect_request": _sq(len(INDIRECT.findall(stripped))),
        "greeting": 1.0 if GREETING.search(stripped) else 0.0,
        "hedge": _sq(len(HEDGE.findall(stripped))),
        "factual": _sq(len(FACTUAL.findall(stripped))),
        "direct_question": _sq(sum(1 for s in sentences if DIRECT_Q.search(s))),
        "rude": _sq(len(RUDE.findall(stripped))),
        "positive": _sq(len(POSITIVE.findall(stripped))),
        "empathy": _sq(len(EMPATHY.findall(stripped))),
        "imperative_start": imperative / n_sent,
        "first_singular": sum(1 for w in lower_words if w in FIRST_SINGULAR) / n_words * 5,
        "first_plural": sum(1 for w in lower_words if w in FIRST_PLURAL) / n_words * 5,
        "second_person": sum(1 for w in lower_words if w in SECOND) / n_words * 5,
        "second_start": 1.0 if lower_words[:1] and lower_words[0] in SECOND else 0.0,
        "pronoun_rate": sum(1 for w in lower_words if w in FUNCTION_PRONOUNS) / n_words * 3,
        "fragment_rate": fragments / n_sent,
        "code_rate": len(CODE_LIKE.findall(stripped)) / n_words * 3,
        "status_line": _sq(len(STATUS_LINE.findall(stripped))),
        "digit_rate": sum(1 for c in stripped if c.isdigit()) / max(1, len(stripped)) * 5,
        "stopword_free": 1.0 - (len(words) - len(content)) / n_words if words else 1.0,
    }
    if not letters:
        values["lower_sentence_start"] = 0.0
    return np.array([values[name] for name in FEATURE_NAMES], dtype=np.float32)


def extract_many(texts: list[str]) -> np.ndarray:
    return np.stack([extract(t) for t in texts]) if texts else np.zeros((0, len(FEATURE_NAMES)), np.float32)
