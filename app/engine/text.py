"""Incremental detokenization with stop strings: emits only text that can no longer turn into a stop."""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class TextAssembler:
    """`stops` end the text (they are not part of it); `cut_at` strings end only what is *emitted*: the text from
    the first of them on is still generated and kept in `.text` (a tool call the service parses at the end).

    Each token costs two decodes of a few ids, not one of the whole generation: the text of ids[prefix:] minus
    the text of ids[prefix:read] is what the new token added (the window trick vLLM and TGI use; a byte-level BPE
    token can only change text from the first incomplete character on, and the window starts after the last
    complete one). Stops are searched only where a new one could have appeared."""

    def __init__(self, tokenizer: Decoder, stops: tuple[str, ...] = (), cut_at: tuple[str, ...] = ()):
        self._tok = tokenizer
        self._stops = tuple(s for s in stops if s)
        self._cuts = tuple(c for c in cut_at if c)
        self._longest = max((len(s) for s in (*self._stops, *self._cuts)), default=0)
        self._cut: int | None = None
        self.ids: list[int] = []
        self.text = ""
        self._emitted = 0
        self._prefix = 0  # ids before this never change the text again
        self._read = 0  # ids[prefix:read] is what the text already holds of the window
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Add a token; return the newly safe text (maybe empty). Sets .stopped when a stop string appears."""
        self.ids.append(token_id)
        before = self._tok.decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        after = self._tok.decode(self.ids[self._prefix :], skip_special_tokens=True)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""  # half of a multi-byte character (wait for the rest), or a token with no text
        old = len(self.text)
        self.text += after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)
        since = max(0, old - self._longest + 1)  # a stop not there before must end in the new text
        cut = min((i for i in (self.text.find(s, since) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self.text = self.text[:cut]
            return self._flush(len(self.text))
        if self._cuts:
            if self._cut is None:
                found = [i for i in (self.text.find(c, since) for c in self._cuts) if i >= 0]
                self._cut = min(found) if found else None
            if self._cut is not None:
                return self._flush(self._cut)
        return self._flush(len(self.text) - self._held_back(self.text))

    def finish(self) -> str:
        """Everything not yet emitted (call when generation ends for any reason other than a stop)."""
        return self._flush(len(self.text) if self._cut is None else self._cut)

    def _held_back(self, text: str) -> int:
        # longest suffix of text that is a proper prefix of some stop (or cut) string
        best = 0
        for stop in (*self._stops, *self._cuts):
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best

    def _flush(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        delta = self.text[self._emitted : upto]
        self._emitted = upto
        return delta
