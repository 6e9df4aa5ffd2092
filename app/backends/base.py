"""The generation-backend seam: what the chat service needs from whatever generates text.

Two implementations, chosen in the app factory: `EmbeddedBackend` (the local model on the engine worker, the
default) and `UpstreamBackend` (an OpenAI-compatible server: vLLM, llama.cpp, transformers serve, a hosted API).
Both take the client's request and give back OpenAI-shaped bodies or stream chunks plus what Tonewatch needs to
score and record the turn; the chat service adds tone and drift and never knows which backend it talks to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:  # the chat service sets it; a type only, so the backends do not import the services
    from app.services.canary import Assignment


@dataclass
class Served:
    """Which model serves a call: its public name, the adapter (persona fallback) and the bounded metric label."""

    model: str
    adapter: str | None
    label: str


@dataclass
class ChatCall:
    """One chat request, validated and routed by the backend that will serve it."""

    raw: dict[str, Any]  # the client's body without Tonewatch's own fields
    parsed: BaseModel  # the backend's validated view (the embedded engine's request model, the gateway's fields)
    served: Served
    stream: bool
    session_id: str | None
    persona: str | None
    request_id: str
    prompt_text: str | None  # the last user message, for history
    kind: str = "chat"  # "chat" (messages) | "completion" (a raw prompt, /v1/completions) | "response" (/v1/responses)
    experiment: Assignment | None = None  # the canary assignment of this session's request, when it is part of one
    owner: str | None = None  # the client key's id, recorded on the turn (api/auth.Principal.owner)


@dataclass
class Completed:
    body: dict[str, Any]  # the OpenAI response body, without tone/drift
    served: Served
    text: str  # text content to score ("" when the answer is only tool calls)
    finish_reason: str
    latency: dict[str, float] = field(default_factory=dict)
    scoreable: bool = True  # False: nothing to judge the tone of (tool-call-only)
    tone_basis: str = "text"  # what `text` is: the answer's text, or the string values of a JSON answer


@dataclass
class Chunk:
    """A stream chunk to relay: a dict (serialised here) or the upstream's raw SSE `data:` payload."""

    payload: dict[str, Any] | bytes
    text: str = ""  # the content delta it carries


@dataclass
class StreamEnd:
    text: str
    finish_reason: str
    latency: dict[str, float] = field(default_factory=dict)
    scoreable: bool = True
    tone_basis: str = "text"
    # chunks to send after the tone is known; the first one receives the tone/drift fields (the embedded engine
    # puts them on its finish chunk). Empty: the service appends a tone chunk of its own before [DONE].
    trailer: list[dict[str, Any]] = field(default_factory=list)


StreamEvent = Chunk | StreamEnd


class ChatStream(Protocol):
    served: Served

    def __aiter__(self) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None:
        """Stop generating (the client went away); idempotent."""

    def partial_text(self) -> str:
        """Text produced so far (recorded when the client leaves early)."""

    def leftover(self) -> StreamEnd | None:
        """The end of a generation that finished while nobody was reading any more (the client left at the very
        end), so it is recorded as complete but undelivered; None when it did not finish."""


class ChatBackend(Protocol):
    kind: str  # "embedded" | "upstream"

    def parse_chat(self, raw: dict[str, Any], request_id: str) -> ChatCall:
        """Validate and route (unknown model -> ModelNotFound) before anything is generated."""

    def parse_completion(self, raw: dict[str, Any], request_id: str) -> ChatCall:
        """The same for a text completion (/v1/completions): a call of kind "completion"."""

    def route(self, model: str | None) -> Served:
        """Who serves `model` (None: the base model / the upstream's first); ModelNotFound if nobody does."""

    async def chat(self, call: ChatCall, partial: list[str] | None = None) -> Completed:
        """A complete answer. Text pieces are appended to `partial` as they are generated, so a caller that is
        cancelled (the client left) can record what was produced."""

    async def chat_stream(self, call: ChatCall) -> ChatStream:
        """Start a stream; raises typed errors (unknown model, queue full, upstream 4xx) before any chunk."""

    async def list_models(self) -> list[dict[str, Any]]: ...

    def served_labels(self) -> set[str]:
        """Model names that may appear as metric labels (bounded: loaded adapters, base, upstream models)."""

    async def ready(self) -> str | None:
        """None when it can serve, else why not (for /readyz)."""

    async def close(self) -> None: ...
