"""Tone-preserving augmentation for training: copies of corpus texts with a neutral sentence or an order id/amount
(bare, or as a clause in the writer's register) inserted, carrying the original's grades and set. In the within-set
view an augmented copy and its original have the same targets, so the heads learn to ignore the directions these
edits move (mostly in the sentence embedding). The encoder's invariance triplets (app/scoring/encoder_v3.py) use the
same edits.

The neutral sentences and id phrases here are separate from the metamorphic test cases (app/scoring/metamorphic.py),
so the suite still measures generalisation rather than memorised edits (tests/unit/test_augment.py). Written for
Tonewatch.
"""

from __future__ import annotations

import random
import re

NEUTRAL = [
    "The form is on the second page.",
    "It was sent on a Tuesday.",
    "The office is on the third floor.",
    "This happened last week.",
    "The file is in the shared folder.",
    "The meeting was moved to the afternoon.",
    "It is the blue one on the left.",
    "The store closes at six on weekdays.",
    "That was the older model.",
    "The train was a few minutes late.",
    "I was using the mobile app at the time.",
    "The link is in the first message.",
    "We are in the same time zone.",
    "The update came out in the spring.",
    "It was the second attempt.",
    "The report covers the last quarter.",
    "The parcel was a medium-sized box.",
    "My laptop runs the latest version.",
    "The thread started on Monday.",
    "The page has two tabs at the top.",
    "It took about an hour.",
    "The building has a side entrance.",
    "The email came from the main address.",
    "Both accounts use the same login.",
    "The settings are under the gear icon.",
    "It was raining that morning.",
    "The invoice lists three items.",
    "The clinic is next to the pharmacy.",
    "The article was published in March.",
    "The screenshot shows the whole window.",
]
ID_PHRASES = [
    " (order #{n})",
    " for order {n}",
    " on invoice INV-{n}",
    " (ref {a}{n})",
    " with ticket #{n}",
    " on account {n}",
    " of ${n}.{m}",
    " for £{n}",
    " (case {n}-{m})",
    " on booking {a}{m}{n}",
]
# Amounts and ids also arrive as whole clauses in real messages, not only as a bare "#123" or "of $45"; a head that
# has only seen bare tokens reads the clause around the number as tone. Two registers, so a casual writer's copy
# stays casual and a capitalised writer's stays plain: the edit must keep the tone it claims to keep.
ID_CLAUSES_CASUAL = [
    ", it was ${n} or so",
    ", the one for ${n}",
    ", order {n} i think",
    ", it came to about £{n} total",
    ", booking {a}{n} if that matters",
    ", it cost ${n}.{m} in the end",
    ", the ${n} charge",
    ", ticket {n} i guess",
]
ID_CLAUSES_PLAIN = [
    ", which came to ${n}.{m}",
    ", order number {n}",
    ", for a total of ${n}",
    " (about £{n} in all)",
    ", from invoice {n}",
    ", reference {a}-{n}",
    ", which was ${n} at the time",
    ", on plan {a}-{m}",
]
CLAUSE_SHARE = 0.5  # share of id edits that insert a clause rather than a bare id
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _id_phrase(rng: random.Random, casual: bool = False) -> str:
    if rng.random() < CLAUSE_SHARE:
        template = rng.choice(ID_CLAUSES_CASUAL if casual else ID_CLAUSES_PLAIN)
    else:
        template = rng.choice(ID_PHRASES)
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
    return template.format(n=rng.randint(100, 99999), m=rng.randint(10, 99), a=letters)


def with_neutral(text: str, rng: random.Random) -> str:
    sentence = rng.choice(NEUTRAL)
    if text[:1].islower():  # a lowercase writer would write the aside in lowercase too
        sentence = sentence[0].lower() + sentence[1:]
    parts = _SENTENCE_END.split(text.strip())
    at = rng.randint(1, len(parts))
    return " ".join([*parts[:at], sentence, *parts[at:]])


def with_id(text: str, rng: random.Random) -> str:
    parts = _SENTENCE_END.split(text.strip())
    i = rng.randrange(len(parts))
    sentence = parts[i]
    m = re.search(r"[.!?]+$", sentence)
    cut = m.start() if m else len(sentence)
    parts[i] = sentence[:cut] + _id_phrase(rng, casual=text[:1].islower()) + sentence[cut:]
    return " ".join(parts)


def augment(rows: list[dict], share: float, seed: int) -> list[dict]:
    """New rows (marked augmented) for a `share` of rows: half with a neutral sentence, half with an id/amount."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        if rng.random() >= share:
            continue
        edit = with_neutral if rng.random() < 0.5 else with_id
        out.append({**row, "id": f"{row.get('id', row['set'])}~aug", "text": edit(row["text"], rng), "augmented": True})
    return out
