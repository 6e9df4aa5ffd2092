"""Engine scheduling on a tiny random Llama: batching must not change results, rows finish independently,
queue limits and cancellation behave."""

import asyncio
import time

import pytest
import torch

from app.backends.openai_format import logprob_entries
from app.engine.events import DoneEvent, GenerationRequest, TokenEvent
from app.engine.sampling import SamplingParams
from app.engine.worker import Engine
from app.errors import QueueFull, QueueTimeout
from app.metrics import Metrics

PROMPTS = [[1, 520, 33, 90], [1, 77, 88, 99, 100, 101, 102, 103, 9, 12], [1, 5], [1, 400, 401, 402, 403, 404]]


def make_engine(model, tokenizer, **kw) -> Engine:
    engine = Engine(model, tokenizer, device="cpu", metrics=Metrics(), **kw)
    engine.start()
    return engine


async def run(engine, prompt, params, delay=0.0, adapter=None):
    await asyncio.sleep(delay)
    handle = engine.submit(GenerationRequest(prompt, params, adapter))
    pieces = []
    while True:
        event = await handle.events.get()
        if isinstance(event, TokenEvent):
            pieces.append(event.text)
        elif isinstance(event, DoneEvent):
            assert "".join(pieces) == event.text  # streamed deltas add up to the final text
            return event
        else:
            raise event.error


async def run_choice(engine, prompt, n, delay=0.0, adapter=None):
    """(DoneEvent, OpenAI-shaped choice with per-token top-2 logprobs) of a greedy request."""
    await asyncio.sleep(delay)
    params = SamplingParams(n, temperature=0, logprobs=True, top_logprobs=2)
    handle = engine.submit(GenerationRequest(prompt, params, adapter))
    entries = []
    while True:
        event = await handle.events.get()
        if isinstance(event, TokenEvent):
            entries.extend(logprob_entries(event.logprobs, engine.tokenizer.decode) or [])
        elif isinstance(event, DoneEvent):
            return event, {"message": {"content": event.text}, "logprobs": {"content": entries}}
        else:
            raise event.error


def reference(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n, pad_token_id=0)
    return out[0, len(prompt) :].tolist()


async def test_batched_greedy_equals_solo_generate(tiny64):
    model, tokenizer = tiny64
    n = 12
    engine = make_engine(model, tokenizer, max_wait_ms=20)
    engine.eos_ids = {-1}  # random weights: let every row run to max_tokens
    try:
        # staggered arrivals exercise joining a running batch and leaving it
        results = await asyncio.gather(
            *[run(engine, p, SamplingParams(n, temperature=0), delay=0.01 * i) for i, p in enumerate(PROMPTS)]
        )
    finally:
        engine.stop()
    for prompt, result in zip(PROMPTS, results, strict=True):
        assert result.text == tokenizer.decode(reference(model, prompt, n), skip_special_tokens=True)
        assert result.completion_tokens == n


async def test_short_request_does_not_wait_for_long_one(tiny):
    model, tokenizer = tiny
    engine = make_engine(model, tokenizer, max_wait_ms=20)
    engine.eos_ids = {-1}
    try:
        long_task = asyncio.ensure_future(run(engine, PROMPTS[0], SamplingParams(300, temperature=0)))
        short = await run(engine, PROMPTS[1], SamplingParams(3, temperature=0))
        assert not long_task.done()
        assert short.completion_tokens == 3
        long = await long_task
        assert long.total_s > short.total_s
    finally:
        engine.stop()


async def test_seeded_sampling_is_independent_of_batch_neighbours(tiny64):
    model, tokenizer = tiny64
    params = SamplingParams(10, temperature=0.8, top_p=0.9, seed=42)
    engine = make_engine(model, tokenizer, max_wait_ms=30)
    engine.eos_ids = {-1}
    try:
        alone = await run(engine, PROMPTS[0], params)
        mixed = await asyncio.gather(
            run(engine, PROMPTS[0], params),
            run(engine, PROMPTS[1], SamplingParams(10, temperature=0)),
            run(engine, PROMPTS[2], SamplingParams(10, temperature=1.5, seed=1)),
        )
    finally:
        engine.stop()
    assert mixed[0].text == alone.text


async def until(condition, timeout_s: float = 60.0) -> None:
    """Wait for a state the engine reaches by itself; the timeout only catches a hang."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "engine never reached the expected state"
        await asyncio.sleep(0.005)


async def test_queue_full_raises_with_retry_after(tiny):
    model, tokenizer = tiny
    engine = make_engine(model, tokenizer, max_batch_size=1, max_queue=1)
    engine.eos_ids = {-1}
    try:
        # a row that runs until cancelled, however fast the CPU: it holds the only batch slot
        first = asyncio.ensure_future(run(engine, PROMPTS[0], SamplingParams(100_000, temperature=0)))
        await until(lambda: engine.active_rows == 1 and engine.queue_depth == 0)
        engine.submit(GenerationRequest(PROMPTS[1], SamplingParams(2, temperature=0)))
        with pytest.raises(QueueFull) as info:
            engine.submit(GenerationRequest(PROMPTS[2], SamplingParams(2, temperature=0)))
        assert info.value.retry_after_s >= 1
        first.cancel()
    finally:
        engine.stop()


async def test_request_that_waited_too_long_gets_timeout(tiny):
    model, tokenizer = tiny
    engine = make_engine(model, tokenizer, max_batch_size=1, request_timeout_s=0.05)
    engine.eos_ids = {-1}
    try:
        # the blocker never finishes by itself: the next request waits past its 50 ms on any CPU, then is admitted
        handle = engine.submit(GenerationRequest(PROMPTS[0], SamplingParams(100_000, temperature=0)))
        await handle.events.get()
        waiting = asyncio.ensure_future(run(engine, PROMPTS[1], SamplingParams(2, temperature=0)))
        await asyncio.sleep(0.1)
        handle.cancel()
        with pytest.raises(QueueTimeout):
            await waiting
    finally:
        engine.stop()


async def test_cancelled_row_leaves_the_batch(tiny):
    model, tokenizer = tiny
    engine = make_engine(model, tokenizer)
    engine.eos_ids = {-1}
    try:
        handle = engine.submit(GenerationRequest(PROMPTS[0], SamplingParams(100_000, temperature=0)))
        await handle.events.get()
        assert engine.active_rows == 1
        handle.cancel()
        deadline = time.monotonic() + 5
        while engine.active_rows and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert engine.active_rows == 0
        # and the engine keeps serving
        done = await run(engine, PROMPTS[1], SamplingParams(4, temperature=0))
        assert done.completion_tokens == 4
    finally:
        engine.stop()


async def test_stop_string_ends_a_row(bundled):
    model, tokenizer, _ = bundled
    engine = make_engine(model, tokenizer)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Count from 1 to 10, comma separated."}], add_generation_prompt=True, tokenize=True
    )
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    try:
        free = await run(engine, prompt, SamplingParams(40, temperature=0))
        assert "4" in free.text
        cut = await run(engine, prompt, SamplingParams(40, temperature=0, stop=("4",)))
    finally:
        engine.stop()
    assert cut.finish_reason == "stop"
    assert "4" not in cut.text
    assert free.text.startswith(cut.text)
