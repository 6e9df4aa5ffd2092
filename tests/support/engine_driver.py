"""Drive an Engine from a test: submit one greedy request and wait for its text."""

from app.engine.sampling import SamplingParams
from app.engine.worker import DoneEvent, GenerationRequest


async def greedy_text(engine, prompt: list[int], adapter: str | None = None, n: int = 10) -> str:
    """The finished text of a greedy request of `n` tokens; a failed request raises its error."""
    handle = engine.submit(GenerationRequest(prompt, SamplingParams(n, temperature=0), adapter))
    while True:
        event = await handle.events.get()
        if isinstance(event, DoneEvent):
            return event.text
        if not hasattr(event, "text"):
            raise event.error
