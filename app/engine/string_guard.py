"""A repetition guard for structured (JSON) output: inside strings, and across the string items of an array.

Why: under a JSON-schema grammar a small model can stay inside one string forever ("A cat is a cat, a cat is a
cat, ..." until the string's length cap), or repeat the same item of an array ("The world awakens", "The world
awakens", ...) until max_tokens; the object then ends with finish_reason "length". The grammar keeps the output
valid; it cannot tell a degenerate value from a long one. Free text is never touched.

How: the guard follows the JSON lexical state of the generated text token by token (strings, escapes, the stack of
arrays and objects) and, before each token, names the tokens to exclude:
* inside a string, every token that would repeat an n-gram (NGRAM tokens) already generated in that same string,
  as transformers' no_repeat_ngram_size does, but per string, so keys, separators and repeated values elsewhere are
  never touched (a token that closes the string is not string content and is never excluded);
* in an array whose last string item repeated an earlier item, every token that would start another item (a
  comma), so the array closes; and while a string item equals an earlier one, tokens that close it and start
  another item in one piece.
When the grammar allows nothing but excluded tokens, the exclusion is dropped. Measured by bench/structured.py
(share of schema-valid, finished objects at 256 tokens).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

NGRAM = 4  # tokens; bench/structured.py compares 3, 4 and off

OUTSIDE, INSIDE, ESCAPE = 0, 1, 2
_CLOSE_THEN_COMMA = re.compile(r'^([^"\\]*)"\s*,')  # string content, the closing quote, another item


class TokenTexts:
    """Each token id's text (decoded alone), computed once per tokenizer (~0.3 s for a 49k vocabulary), with the
    tokens that start another array item."""

    def __init__(self, texts: Sequence[str]):
        self.texts = list(texts)
        self.comma_first = [i for i, t in enumerate(self.texts) if t.lstrip().startswith(",")]
        # tokens that end a string item and start the next one: (token, the item content they add before the quote)
        self.close_then_comma = [(i, m.group(1)) for i, t in enumerate(self.texts) if (m := _CLOSE_THEN_COMMA.match(t))]

    @classmethod
    def of(cls, tokenizer, vocab_size: int) -> TokenTexts:
        size = min(vocab_size, len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in range(size)])
        return cls(texts + [""] * (vocab_size - size))

    def __getitem__(self, token: int) -> str:
        return self.texts[token] if 0 <= token < len(self.texts) else ""


@dataclass
class _Container:
    array: bool
    items: set[str] = field(default_factory=set)  # an array's string items so far
    repeated: bool = False  # an array's last string item repeated an earlier one


class StringGuard:
    """One row's guard: call `banned()` before sampling and `accept(token)` after."""

    def __init__(self, texts: TokenTexts, n: int = NGRAM):
        self.texts = texts
        self.n = n
        self.state = OUTSIDE
        self._stack: list[_Container] = []
        self._string: list[int] = []  # content tokens of the current string (whole tokens only)
        self._chars: list[str] = []  # the current string's content as text
        self._item = False  # the current string is an item of the innermost array
        self._seen: dict[tuple[int, ...], set[int]] = {}  # (n-1 tokens) -> tokens that followed them in it

    def banned(self) -> list[int]:
        """Tokens to exclude before the next one is sampled."""
        out: set[int] = set()
        if self.state == INSIDE:
            if len(self._string) >= self.n - 1:
                out |= self._seen.get(tuple(self._string[len(self._string) - self.n + 1 :]), set())
            if self._item and self._stack and self._stack[-1].items:
                so_far, items = "".join(self._chars), self._stack[-1].items
                # ending here would make a duplicate item: it may close, but not start another in the same token
                out.update(t for t, tail in self.texts.close_then_comma if so_far + tail in items)
        elif self.state == OUTSIDE and self._stack and self._stack[-1].array and self._stack[-1].repeated:
            out.update(self.texts.comma_first)
        return sorted(out)

    def accept(self, token: int) -> None:
        text = self.texts[token]
        whole = self.state == INSIDE
        restarted = False
        for ch in text:
            if self.state == ESCAPE:
                self.state = INSIDE
                self._chars.append(ch)
            elif self.state == INSIDE:
                if ch == "\\":
                    self.state = ESCAPE
                    self._chars.append(ch)
                elif ch == '"':
                    self._close()
                    restarted = True
                else:
                    self._chars.append(ch)
            else:
                self._outside(ch)
                if self.state == INSIDE:
                    restarted = True
        if whole and not restarted:  # a content token of a string that goes on
            if len(self._string) >= self.n - 1:
                self._seen.setdefault(tuple(self._string[len(self._string) - self.n + 1 :]), set()).add(token)
            self._string.append(token)

    def _outside(self, ch: str) -> None:
        if ch == '"':
            self.state = INSIDE
            self._string, self._chars, self._seen = [], [], {}
            self._item = bool(self._stack) and self._stack[-1].array
        elif ch in "[{":
            self._stack.append(_Container(array=ch == "["))
        elif ch in "]}" and self._stack:
            self._stack.pop()

    def _close(self) -> None:
        self.state = OUTSIDE
        if self._item and self._stack:
            items, value = self._stack[-1].items, "".join(self._chars)
            self._stack[-1].repeated = value in items
            items.add(value)
        self._string, self._chars, self._seen, self._item = [], [], {}, False
