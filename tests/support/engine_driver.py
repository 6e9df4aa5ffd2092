"""Drive an Engine from a test: submit one greedy request and wait for its text, or for its tokens with their top
two logprobs (an OpenAI-shaped choice that tests.support.greedy compares across batch compositions)."""

from __future__ import annotations

from typing import Any

from app.backends.openai_format import logprob_entries
from app.engine.events import DoneEvent, GenerationRequest
from app.engine.sampling import SamplingParams


async def greedy_text(engine, prompt: list[int], adapter: str | None = None, n: int = 10) -> str:
    """The finished text of a greedy request of `n` tokens; a failed request raises its error."""
    return (await greedy_choice(engine, prompt, adapter, n, logprobs=False))["message"]["content"]


async def greedy_choice(
    engine, prompt: list[int], adapter: str | None = None, n: int = 10, *, logprobs: bool = True
) -> dict[str, Any]:
    """{"message": {"content": text}, "logprobs": {"content": [per-token entries with top_logprobs]}} of a greedy
    request of `n` tokens; a failed request raises its error."""
    params = SamplingParams(n, temperature=0, logprobs=logprobs, top_logprobs=2 if logprobs else 0)
    handle = engine.submit(GenerationRequest(prompt, params, adapter))
    entries: list[dict] = []
    while True:
        event = await handle.events.get()
        if isinstance(event, DoneEvent):
            return {"message": {"content": event.text}, "logprobs": {"content": entries}}
        if not hasattr(event, "text"):
            raise event.error
        entries.extend(logprob_entries(event.logprobs, engine.tokenizer.decode) or [])
