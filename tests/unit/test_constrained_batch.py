"""Grammar-constrained rows share a batch with free rows (tiny random Llama, real tokenizer): the constrained row
always produces JSON matching its schema (even from a random model), the free rows produce exactly what they
produce alone, and sampling extras (logit bias, logprobs) stay per row."""

import asyncio
import json

import torch

from app.backends.openai_format import logprob_entries
from app.engine.constraints import Grammars, json_schema_grammar, required_call_grammar
from app.engine.events import DoneEvent, GenerationRequest, TokenEvent
from app.engine.sampling import SamplingParams
from app.engine.worker import Engine
from app.metrics import Metrics

PROMPTS = [[1, 520, 33, 90], [1, 77, 88, 99, 100, 101], [1, 5, 9]]
SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "maxLength": 8}, "urgent": {"type": "boolean"}},
    "required": ["order_id", "urgent"],
    "additionalProperties": False,
}


async def collect(handle):
    events = []
    while True:
        event = await asyncio.wait_for(handle.events.get(), 60)
        events.append(event)
        if not isinstance(event, TokenEvent):
            return events


def greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n, pad_token_id=0)
    return out[0, len(prompt) :].tolist()


async def test_constrained_and_free_rows_share_a_batch(tiny64):
    model, tokenizer = tiny64  # float64: free rows' greedy texts are compared with solo runs (tests/conftest.py)
    engine = Engine(model, tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=50)
    engine.eos_ids = {tokenizer.eos_token_id}
    grammars = Grammars(tokenizer, model.config.vocab_size, engine.eos_ids)
    engine.start()
    try:
        n = 10
        free = [engine.submit(GenerationRequest(p, SamplingParams(n, temperature=0))) for p in PROMPTS[:2]]
        constrained = engine.submit(
            GenerationRequest(
                PROMPTS[2],
                SamplingParams(200, temperature=0),
                matcher=grammars.matcher(json_schema_grammar(SCHEMA), "x"),
            )
        )
        results = await asyncio.gather(*(collect(h) for h in [*free, constrained]))
    finally:
        engine.stop()
    for prompt, events in zip(PROMPTS[:2], results[:2], strict=True):
        done = events[-1]
        assert isinstance(done, DoneEvent)
        expected = tokenizer.decode(
            [t for t in greedy(model, prompt, n) if t != tokenizer.eos_token_id], skip_special_tokens=True
        )
        assert done.text.startswith(expected[: len(done.text)]) and done.text  # same tokens as alone (or EOS earlier)
    done = results[2][-1]
    assert isinstance(done, DoneEvent) and done.finish_reason == "stop"
    value = json.loads(done.text)
    assert set(value) == {"order_id", "urgent"} and isinstance(value["urgent"], bool)
    assert len(value["order_id"]) <= 8


async def test_required_tool_call_is_well_formed_from_a_random_model(tiny):
    model, tokenizer = tiny
    engine = Engine(model, tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=10)
    engine.eos_ids = {tokenizer.eos_token_id}
    grammars = Grammars(tokenizer, model.config.vocab_size, engine.eos_ids)
    # bounded values: a random model would otherwise happily write digits forever
    closed = {"type": "object", "additionalProperties": False}  # (open objects let it invent keys forever)
    tools = [
        ("get_order", {**closed, "properties": {"id": {"enum": ["A1", "B2"]}}, "required": ["id"]}),
        ("refund", {**closed, "properties": {"full": {"type": "boolean"}}, "required": ["full"]}),
    ]
    engine.start()
    try:
        matcher = grammars.matcher(required_call_grammar(tools), "tools")
        handle = engine.submit(
            GenerationRequest(
                PROMPTS[0], SamplingParams(300, temperature=0.9, seed=4), matcher=matcher, emit_text=False
            )
        )
        events = await collect(handle)
    finally:
        engine.stop()
    assert len(events) == 1 and isinstance(events[0], DoneEvent)  # emit_text=False: no token events
    text = events[0].text
    assert text.startswith("<tool_call>") and text.endswith("</tool_call>")
    call = json.loads(text[len("<tool_call>") : -len("</tool_call>")])
    assert call["name"] in {"get_order", "refund"}
    key = {"get_order": "id", "refund": "full"}[call["name"]]
    assert set(call["arguments"]) == {key}


async def test_logit_bias_and_logprobs_stay_per_row_in_a_batch(tiny64):
    model, tokenizer = tiny64
    engine = Engine(model, tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=50)
    engine.eos_ids = {-1}
    engine.start()
    try:
        plain = engine.submit(GenerationRequest(PROMPTS[0], SamplingParams(5, temperature=0)))
        forced = engine.submit(
            GenerationRequest(PROMPTS[0], SamplingParams(5, temperature=0, logit_bias=((4242, 100.0),)))
        )
        with_lp = engine.submit(
            GenerationRequest(PROMPTS[0], SamplingParams(5, temperature=0, logprobs=True, top_logprobs=3))
        )
        plain_ev, forced_ev, lp_ev = await asyncio.gather(collect(plain), collect(forced), collect(with_lp))
    finally:
        engine.stop()
    assert plain_ev[-1].text == lp_ev[-1].text != forced_ev[-1].text
    assert forced_ev[-1].text == tokenizer.decode([4242] * 5)
    entries = [
        e for ev in lp_ev if isinstance(ev, TokenEvent) for e in logprob_entries(ev.logprobs, tokenizer.decode) or []
    ]
    assert len(entries) == 5 and all(len(e["top_logprobs"]) == 3 and e["logprob"] <= 0 for e in entries)
    assert all(ev.logprobs is None for ev in plain_ev if isinstance(ev, TokenEvent))
