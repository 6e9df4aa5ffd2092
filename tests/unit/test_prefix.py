"""Prompt-prefix KV reuse: the cache's bookkeeping, and that reused prefixes leave greedy outputs unchanged."""

import asyncio

import torch

from app.engine.prefix import PrefixCache
from app.engine.sampling import SamplingParams
from tests.support.greedy import assert_same_greedy, reference_choice
from tests.unit.test_engine import make_engine, run, run_choice


def kv_of(n: int, fill: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((1, 2, n, 4), fill), torch.full((1, 2, n, 4), fill)) for _ in range(2)]


def test_lookup_takes_the_longest_prefix_and_leaves_the_last_token():
    cache = PrefixCache(max_tokens=1000, min_match=3)
    cache.store(None, [1, 2, 3, 4, 5], kv_of(5))
    cache.store(None, [1, 2, 3, 9, 9, 9, 9], kv_of(7))
    match = cache.lookup(None, [1, 2, 3, 9, 9, 8])
    assert match is not None and match.length == 5 and match.entry.tokens == 7
    keys, values = match.layer(0)
    assert keys.shape == (1, 2, 5, 4) and values.shape == (1, 2, 5, 4)
    same = cache.lookup(None, [1, 2, 3, 4, 5])  # the whole prompt is held: its last token is still computed
    assert same is not None and same.length == 4
    assert cache.lookup(None, [1, 2, 7, 7, 7]) is None  # shorter than min_match
    assert cache.lookup(None, [1, 2, 3]) is None  # nothing would be left to compute beyond a short match


def test_entries_are_per_adapter():
    cache = PrefixCache(max_tokens=1000, min_match=2)
    cache.store("friendly", [1, 2, 3, 4], kv_of(4))
    assert cache.lookup(None, [1, 2, 3, 4, 5]) is None
    assert cache.lookup("formal", [1, 2, 3, 4, 5]) is None
    assert cache.lookup("friendly", [1, 2, 3, 4, 5]).length == 4


def test_store_supersedes_covered_entries_and_evicts_least_recent():
    cache = PrefixCache(max_tokens=12, min_match=2)
    assert cache.store(None, [1, 2, 3], kv_of(3))
    assert cache.store(None, [1, 2, 3, 4, 5], kv_of(5))  # extends the first: it replaces it
    assert len(cache) == 1 and cache.tokens == 5
    assert not cache.store(None, [1, 2, 3, 4], kv_of(4))  # already covered
    assert cache.store(None, [7, 7, 7, 7], kv_of(4))
    cache.lookup(None, [1, 2, 3, 4, 5, 6])  # touch the first: the other becomes the least recent
    assert cache.store(None, [8, 8, 8, 8], kv_of(4))  # 13 tokens > 12: evict [7, 7, 7, 7]
    assert cache.tokens == 9 and cache.lookup(None, [7, 7, 7, 7, 7]) is None
    assert not cache.store(None, list(range(20)), kv_of(20))  # larger than the whole cache
    cache.clear()
    assert len(cache) == 0 and cache.tokens == 0


def test_disabled_cache_holds_nothing():
    cache = PrefixCache(max_tokens=0)
    assert not cache.enabled and not cache.store(None, list(range(20)), kv_of(20))
    assert cache.lookup(None, list(range(30))) is None


SYSTEM = [1, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41]


def chat(tokenizer, system: str, user: str) -> list[int]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]


async def test_reused_prefixes_leave_greedy_outputs_unchanged(bundled):
    # the real model: a random tiny one barely attends to earlier tokens, so wrong reused keys would not show
    model, tokenizer, _ = bundled
    n = 8
    system = "You are the support assistant of a parcel company. Answer briefly and politely."
    prompts = [
        chat(tokenizer, system, "Where is my parcel?"),
        chat(tokenizer, system, "How do I return a damaged lamp?"),
        chat(tokenizer, system, "Where is my parcel?"),  # the same prompt again
        chat(tokenizer, system, "Where is my parcel? It was due on Monday and it is Friday now."),
        chat(tokenizer, "You are a pirate. Speak like one.", "Tell me about the sea."),  # shares only the template
        chat(tokenizer, system, "Can I change my delivery address?"),
    ]
    engine = make_engine(model, tokenizer, max_wait_ms=5, prefix_cache_mb=16)
    engine.eos_ids = {-1}
    try:
        first = await run_choice(engine, prompts[0], n)  # fills the cache
        # staggered: some rows reuse, some do not, some join a running batch
        rest = await asyncio.gather(*[run_choice(engine, p, n, delay=0.03 * i) for i, p in enumerate(prompts[1:])])
        reused = engine.metrics.prefix_reused_tokens.labels("base")._value.get()
    finally:
        engine.stop()
    for prompt, (result, choice) in zip(prompts, [first, *rest], strict=True):
        assert_same_greedy(reference_choice(model, tokenizer, prompt, n), choice)
        assert result.prompt_tokens == len(prompt)
    shared = len(chat(tokenizer, system, "")) - 8  # the system turn and the user turn's opening
    assert reused >= 4 * shared  # the four later rows with this system prompt read it from the cache


async def test_a_sessions_next_turn_reuses_the_previous_prompt_and_reply(bundled):
    model, tokenizer, _ = bundled
    n = 12
    system = "You are the support assistant of a parcel company. Answer briefly and politely."
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Where is my parcel?"}]
    prompt1 = tokenizer.apply_chat_template(first, add_generation_prompt=True, tokenize=True)["input_ids"]
    engine = make_engine(model, tokenizer, max_wait_ms=0, prefix_cache_mb=16)
    try:
        turn1, _ = await run_choice(engine, prompt1, n)
        second = [*first, {"role": "assistant", "content": turn1.text}, {"role": "user", "content": "Thanks!"}]
        prompt2 = tokenizer.apply_chat_template(second, add_generation_prompt=True, tokenize=True)["input_ids"]
        before = engine.metrics.prefix_reused_tokens.labels("base")._value.get()
        turn2, choice2 = await run_choice(engine, prompt2, n)
        reused = engine.metrics.prefix_reused_tokens.labels("base")._value.get() - before
    finally:
        engine.stop()
    assert reused >= len(prompt1) + turn1.completion_tokens // 2  # the reply's tokens came from the cache too
    assert_same_greedy(reference_choice(model, tokenizer, prompt2, turn2.completion_tokens), choice2)


async def test_admin_work_on_the_worker_drops_held_prefixes(tiny):
    model, tokenizer = tiny
    engine = make_engine(model, tokenizer, max_wait_ms=0, prefix_cache_mb=4)
    engine.eos_ids = {-1}
    try:
        await run(engine, [*SYSTEM, 5, 6], SamplingParams(2, temperature=0))
        assert len(engine.prefix) == 1
        await asyncio.wrap_future(engine.call(lambda: None))
        assert len(engine.prefix) == 0
    finally:
        engine.stop()
