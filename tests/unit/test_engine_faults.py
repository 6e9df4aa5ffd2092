"""Fault isolation in the engine (issue: one bad request never hurts another): failures injected at prefill, at
decode and in sampling fail their own row only, and every submitted request gets exactly one terminal event."""

import asyncio
import random

import pytest
import torch

from app.engine.events import DoneEvent, ErrorEvent, GenerationRequest, TokenEvent
from app.engine.sampling import SamplingParams
from app.engine.worker import Engine
from app.errors import GenerationFailed
from app.metrics import Metrics

PROMPTS = [[1, 520, 33, 90], [1, 77, 88, 99, 100, 101, 102, 103, 9, 12], [1, 5], [1, 400, 401, 402, 403, 404]]
PREFILL_POISON = 4242  # a prompt containing this token breaks the forward pass


class FaultyModel(torch.nn.Module):
    """The tiny model, except that a forward whose input contains a poison token raises (a stand-in for a kernel
    error on one row's data). Prefill poison: PREFILL_POISON in a prompt; decode poison: `decode_poison` fed back
    as a generated token."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.generation_config = inner.generation_config
        self.config = inner.config
        self.decode_poison: int | None = None

    def forward(self, input_ids=None, **kwargs):
        if input_ids.shape[1] > 1 and bool((input_ids == PREFILL_POISON).any()):
            raise RuntimeError("prefill kernel failed")
        if input_ids.shape[1] == 1 and self.decode_poison is not None and bool((input_ids == self.decode_poison).any()):
            raise RuntimeError("decode kernel failed")
        return self.inner(input_ids=input_ids, **kwargs)


def greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n, pad_token_id=0)
    return out[0, len(prompt) :].tolist()


async def collect(handle, timeout=20.0):
    """All events of one request; fails the test if it never gets a terminal event."""
    events = []
    while True:
        event = await asyncio.wait_for(handle.events.get(), timeout)
        events.append(event)
        if isinstance(event, DoneEvent | ErrorEvent):
            await asyncio.sleep(0.05)
            assert handle.events.empty(), "nothing may follow the terminal event"
            return events


@pytest.fixture
def faulty(tiny64):
    model, tokenizer = tiny64  # float64: batched greedy texts are compared with solo runs (tests/conftest.py)
    wrapped = FaultyModel(model)
    engine = Engine(wrapped, tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=50)
    engine.eos_ids = {-1}
    engine.start()
    yield engine, wrapped, model, tokenizer
    engine.stop()


async def test_prefill_failure_fails_only_that_row(faulty):
    engine, _, model, tokenizer = faulty
    n = 8
    good = [engine.submit(GenerationRequest(p, SamplingParams(n, temperature=0))) for p in PROMPTS[:3]]
    bad = engine.submit(GenerationRequest([1, PREFILL_POISON, 7], SamplingParams(n, temperature=0)))
    results = await asyncio.gather(*(collect(h) for h in [*good, bad]))
    for prompt, events in zip(PROMPTS[:3], results[:3], strict=True):
        assert isinstance(events[-1], DoneEvent)
        assert events[-1].text == tokenizer.decode(greedy(model, prompt, n), skip_special_tokens=True)
    assert isinstance(results[3][-1], ErrorEvent) and isinstance(results[3][-1].error, GenerationFailed)


async def test_decode_failure_fails_only_that_row(faulty):
    engine, wrapped, model, tokenizer = faulty
    n = 10
    sequences = {i: greedy(model, p, n) for i, p in enumerate(PROMPTS)}
    # poison a token that only one prompt's continuation produces (after its first step)
    victim, poison = next(
        (i, t)
        for i, seq in sequences.items()
        for t in seq[1 : n - 1]
        if all(t not in s for j, s in sequences.items() if j != i) and t not in seq[:1]
    )
    wrapped.decode_poison = poison
    handles = [engine.submit(GenerationRequest(p, SamplingParams(n, temperature=0))) for p in PROMPTS]
    results = await asyncio.gather(*(collect(h) for h in handles))
    for i, events in enumerate(results):
        if i == victim:
            assert isinstance(events[-1], ErrorEvent), events[-1]
        else:
            assert isinstance(events[-1], DoneEvent), events[-1]
            assert events[-1].text == tokenizer.decode(sequences[i], skip_special_tokens=True)


async def test_poisoned_sampling_values_fail_alone(faulty):
    engine, _, _, _ = faulty
    ok = engine.submit(GenerationRequest(PROMPTS[0], SamplingParams(6, temperature=0)))
    bad_seed = engine.submit(GenerationRequest(PROMPTS[1], SamplingParams(6, temperature=0.7, seed=2**64)))
    tiny_t = engine.submit(GenerationRequest(PROMPTS[2], SamplingParams(6, temperature=1e-300, seed=1)))
    tiny_p = engine.submit(GenerationRequest(PROMPTS[3], SamplingParams(6, temperature=0.9, top_p=1e-300, seed=2)))
    ok_ev, seed_ev, t_ev, p_ev = await asyncio.gather(*(collect(h) for h in (ok, bad_seed, tiny_t, tiny_p)))
    assert isinstance(ok_ev[-1], DoneEvent) and ok_ev[-1].completion_tokens == 6
    assert isinstance(seed_ev[-1], ErrorEvent)
    # the engine clamps what slipped past validation instead of producing NaNs
    assert isinstance(t_ev[-1], DoneEvent) and isinstance(p_ev[-1], DoneEvent)


async def test_every_request_gets_exactly_one_terminal_event_under_random_faults(faulty):
    engine, wrapped, model, _ = faulty
    rng = random.Random(3)
    wrapped.decode_poison = greedy(model, PROMPTS[0], 3)[1]
    handles = []
    for _ in range(40):
        prompt = list(rng.choice(PROMPTS))
        if rng.random() < 0.2:
            prompt.insert(1, PREFILL_POISON)
        params = SamplingParams(rng.randint(1, 12), temperature=rng.choice([0, 0.8]), seed=rng.choice([None, 5]))
        handles.append(engine.submit(GenerationRequest(prompt, params)))
        if rng.random() < 0.15:
            handles[-1].cancel()
        await asyncio.sleep(rng.random() * 0.01)
    outcomes = await asyncio.gather(*(collect(h) for h in handles))
    terminal = [[e for e in events if isinstance(e, DoneEvent | ErrorEvent)] for events in outcomes]
    assert all(len(t) == 1 for t in terminal)
    assert sum(isinstance(t[0], DoneEvent) for t in terminal) >= 15
    # the engine still serves normally afterwards
    wrapped.decode_poison = None
    after = await collect(engine.submit(GenerationRequest(PROMPTS[1], SamplingParams(4, temperature=0))))
    assert isinstance(after[-1], DoneEvent) and all(isinstance(e, TokenEvent) for e in after[:-1])


class PacedModel(torch.nn.Module):
    """The tiny model with a floor on each forward's time, so a request's duration has a floor on any CPU."""

    def __init__(self, inner, floor_s: float):
        super().__init__()
        self.inner, self.floor_s = inner, floor_s
        self.generation_config = inner.generation_config
        self.config = inner.config

    def forward(self, **kwargs):
        import time

        time.sleep(self.floor_s)
        return self.inner(**kwargs)


async def test_retry_after_follows_the_drain_rate(tiny):
    """Retry-After is the time the queue ahead takes to drain at the recent completion rate, not a constant."""
    import time

    model, tokenizer = tiny
    paced = PacedModel(model, floor_s=0.002)  # >= 0.3 s a request: the queue below drains in > 13 s on any CPU
    engine = Engine(paced, tokenizer, device="cpu", metrics=Metrics(), max_batch_size=1, max_queue=50)
    engine.eos_ids = {-1}
    engine.start()
    try:
        # a queue deep enough that draining it takes well over Retry-After's 1 s floor
        handles = [engine.submit(GenerationRequest(PROMPTS[0], SamplingParams(150, temperature=0))) for _ in range(48)]
        stamps = []
        for h in handles[:4]:
            await collect(h)
            stamps.append(time.monotonic())
        per_request = (stamps[-1] - stamps[0]) / 3
        expected = engine.queue_depth * per_request
        estimate = engine.retry_after_s()
        assert expected > 1.5, "the load must make the queue take longer than the 1 s floor to drain"
        assert expected / 3 < estimate < expected * 3
        for h in handles[4:]:
            h.cancel()
    finally:
        engine.stop()
