"""Metamorphic checks of the scorer: edits that change no tone must not move a score; edits that change tone must
move the right dimension the right way. Used by the test suite (tests/unit/test_scorer_metamorphic.py) and by
`train-style`, which writes the results into the model card. All texts are written for Tonewatch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

INVARIANCE_TOLERANCE = 0.05  # no dimension may move more than this on a tone-preserving edit
DIRECTIONAL_MIN = 0.05  # a tone-changing edit must move its dimension at least this much the right way


@dataclass(frozen=True)
class Base:
    text: str
    neutral: str  # the same text with a neutral clause added
    with_id: str  # the same text with an order id or an amount added


BASES = [
    Base(
        "I've checked your account and the refund's on its way. It should show up in a few days.",
        "I've checked your account and the refund's on its way. It was sent through the usual bank transfer. "
        "It should show up in a few days.",
        "I've checked your account and the refund of $45.99 is on its way. It should show up in a few days.",
    ),
    Base(
        "Could you please take a look at my draft when you get a chance? I'd really appreciate it.",
        "Could you please take a look at my draft when you get a chance? It's the second chapter. "
        "I'd really appreciate it.",
        "Could you please take a look at my draft (ticket DOC-4471) when you get a chance? I'd really appreciate it.",
    ),
    Base(
        "Oh no, I'm so sorry you're going through this. That sounds exhausting, and it's okay to feel overwhelmed.",
        "Oh no, I'm so sorry you're going through this. The clinic opens on Mondays. That sounds exhausting, and "
        "it's okay to feel overwhelmed.",
        "Oh no, I'm so sorry you're going through this with claim 88-2031. That sounds exhausting, and it's okay "
        "to feel overwhelmed.",
    ),
    Base(
        "We regret to inform you that your application has not been approved. The decision is final.",
        "We regret to inform you that your application has not been approved. It was reviewed by the committee. "
        "The decision is final.",
        "We regret to inform you that your application #20931 has not been approved. The decision is final.",
    ),
    Base(
        "Why did you revert my edit again? You obviously didn't read the source I added.",
        "Why did you revert my edit again? The section is about the bridge. You obviously didn't read the source "
        "I added.",
        "Why did you revert my edit again? You obviously didn't read the source I added in revision 1182734.",
    ),
    Base(
        "hey it's fine, don't stress about it. we can grab lunch another day.",
        "hey it's fine, don't stress about it. the place is near the station anyway. we can grab lunch another day.",
        "hey it's fine, don't stress about it, you owe me like $12 anyway. we can grab lunch another day.",
    ),
    Base(
        "Ticket closed. The issue couldn't be reproduced on the current build.",
        "Ticket closed. The report mentioned the login page. The issue couldn't be reproduced on the current build.",
        "Ticket INC-55120 closed. The issue couldn't be reproduced on build 4.12.7.",
    ),
    Base(
        "Thanks so much for your help yesterday, Priya. You've saved me hours of work.",
        "Thanks so much for your help yesterday, Priya. The report was due on Friday. You've saved me hours of work.",
        "Thanks so much for your help with invoice 7781 yesterday, Priya. You've saved me hours of work.",
    ),
    Base(
        "This is the third time I've asked. Fix the billing error or I'm cancelling my subscription.",
        "This is the third time I've asked. My plan renews every month. Fix the billing error or I'm cancelling my "
        "subscription.",
        "This is the third time I've asked. Fix the $29.00 billing error or I'm cancelling my subscription.",
    ),
    Base(
        "I'm not sure this is the right forum, but has anyone seen this error after updating? Any ideas welcome.",
        "I'm not sure this is the right forum, but has anyone seen this error after updating? I use the desktop "
        "version. Any ideas welcome.",
        "I'm not sure this is the right forum, but has anyone seen error 0x80070005 after updating to 22H2? Any "
        "ideas welcome.",
    ),
    Base(
        "Pursuant to clause 4, the tenant shall notify the landlord of any damage. Failure to do so may incur charges.",
        "Pursuant to clause 4, the tenant shall notify the landlord of any damage. The clause applies to all "
        "rooms. Failure to do so may incur charges.",
        "Pursuant to clause 4, the tenant shall notify the landlord of any damage. Failure to do so may incur "
        "charges of up to £250.",
    ),
    Base(
        "Great question! It's usually the cache, so try clearing it and let me know how it goes.",
        "Great question! It's usually the cache, which lives in the settings folder, so try clearing it and let me "
        "know how it goes.",
        "Great question! It's usually the cache in version 3.2.1, so try clearing it and let me know how it goes.",
    ),
]


def curly(text: str) -> str:
    text = re.sub(r"(\w)'(\w)", "\\1\u2019\\2", text)
    text = re.sub(r'"(\w)', "\u201c\\1", text)
    return text.replace('"', "\u201d").replace("'", "\u2019")


def tokenised(text: str) -> str:
    """Penn-Treebank style: clitics split off, punctuation spaced."""
    text = re.sub(r"(\w)n't\b", r"\1 n't", text)
    text = re.sub(r"(\w)'(s|re|ve|ll|d|m)\b", r"\1 '\2", text)
    return re.sub(r"([,.!?;:])", r" \1", text)


def drop_final_period(text: str) -> str:
    return text[:-1] if text.endswith(".") and not text.endswith("..") else text


INVARIANT_EDITS: dict[str, Callable[[Base], str]] = {
    "curly quotes and apostrophes": lambda b: curly(b.text),
    "tokenised text": lambda b: tokenised(b.text),
    "neutral clause added": lambda b: b.neutral,
    "order id or amount added": lambda b: b.with_id,
    "trailing period dropped": lambda b: drop_final_period(b.text),
}

# (dimension, before, after): the edit must raise that dimension
DIRECTIONAL: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "please + indirect request -> politeness up": (
        "politeness",
        [
            ("Send me the report by Friday.", "Could you please send me the report by Friday?"),
            ("Fix the login page.", "Could you please fix the login page when you have a moment?"),
            ("Tell me what the error says.", "Would you mind telling me what the error says, please?"),
            ("Update the ticket with your findings.", "Could you please update the ticket with your findings?"),
            ("Move your car, it's blocking the gate.", "Could you please move your car? It's blocking the gate."),
            ("Stop reverting my changes.", "Would you please stop reverting my changes?"),
            ("Call me back today.", "Could you please call me back today?"),
            ("Resend the invoice.", "Would you be able to resend the invoice, please?"),
            ("Check the logs and tell me what you find.", "Could you please check the logs and tell me what you find?"),
            ("Explain why my order was cancelled.", "Could you please explain why my order was cancelled?"),
            ("Give me access to the shared folder.", "Would you mind giving me access to the shared folder, please?"),
            ("Answer my email.", "Could you please answer my email when you get a chance?"),
        ],
    ),
    "empathic clause added -> warmth up": (
        "warmth",
        [
            (t, f"I'm so sorry you're dealing with this, that sounds really stressful. {t}")
            for t in [
                "Your refund has been processed and will arrive within five business days.",
                "The replacement part ships on Monday.",
                "You can reset your password from the login page.",
                "The appointment has been moved to Thursday at 10.",
                "Your claim is under review.",
                "The outage affected all accounts in your region.",
                "We have escalated the ticket to the network team.",
                "The flight was cancelled because of the storm.",
                "Your account was locked after three failed attempts.",
                "The course deadline cannot be extended.",
                "The package was returned to the depot.",
                "Your landlord must respond within fourteen days.",
            ]
        ],
    ),
    "slang -> formal register -> formality up": (
        "formality",
        [
            ("hey can u send me the thing asap lol", "Could you send me the document at your earliest convenience?"),
            ("ngl the new update is kinda broken tbh", "The new update appears to contain several defects."),
            ("yo my order still aint here wtf", "My order has not yet arrived; I would appreciate an update."),
            ("lol idk what ur talking about", "I am afraid I do not understand what you are referring to."),
            ("gonna be late, traffic is nuts rn", "I will be arriving late owing to heavy traffic."),
            ("thx dude, that totally worked!!", "Thank you; the proposed solution resolved the issue."),
            ("nah we cant do refunds on that stuff", "Regrettably, refunds are not available for these items."),
            ("u coming to the meeting or nah?", "Will you be attending the meeting?"),
            ("omg the app keeps crashing smh", "The application repeatedly terminates unexpectedly."),
            ("btw the wifi pw changed, its on the fridge", "Please note that the wireless password has changed."),
            ("sry cant make it tmrw, something came up", "I regret that I am unable to attend tomorrow."),
            ("k cool, ill check it out later", "Thank you; I shall review it later today."),
        ],
    ),
}
