"""The base view (app/engine/plain.py): base-only decode steps skip PEFT's wrappers without copying a weight or
changing the live model's module tree, and compute what the model computes with its adapters off."""

import asyncio
import copy

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer

from app.engine.adapters import AdapterRegistry
from app.engine.plain import base_view
from app.engine.worker import Engine
from app.metrics import Metrics
from tests.support.adapter_factory import make_adapter, tiny_llama
from tests.support.engine_driver import greedy_choice
from tests.support.greedy import TINY_MARGIN, assert_same_greedy


def _names(model):
    return [(name, type(module).__name__) for name, module in model.named_modules()]


def test_view_shares_weights_and_equals_adapters_off(tmp_path):
    base = tiny_llama()
    make_adapter(tmp_path / "a", base, kind="lora", seed=3, targets=("q_proj", "v_proj", "down_proj"))
    # modules_to_save wraps lm_head in PEFT's own copy: the view must take the original, not the trained one
    make_adapter(tmp_path / "b", base, kind="lora", seed=4, modules_to_save=["lm_head"])
    model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "a", adapter_name="a")
    model.load_adapter(tmp_path / "b", adapter_name="b")
    model.eval()
    tree = _names(model)
    view = base_view(model)
    assert _names(model) == tree  # the live tree is untouched
    assert not any(isinstance(m, BaseTunerLayer) for m in view.modules())
    live = {id(p) for p in model.parameters()}
    assert all(id(p) in live for p in view.parameters())  # the same tensors: nothing copied
    ids = torch.tensor([[1, 7, 42, 300, 5, 9]])
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        got = view(input_ids=ids).logits
        model.set_adapter("b")
        adapted = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert (adapted - expected).abs().max() > 1e-3  # the adapter is on in the live model: the view is the odd one


async def test_base_rows_with_adapters_installed_equal_the_bare_model(tmp_path, bundled):
    _, tokenizer, _ = bundled
    base = tiny_llama()
    make_adapter(tmp_path / "lora-a", base, kind="lora", seed=1, targets=("q_proj", "v_proj", "down_proj"))
    engine = Engine(copy.deepcopy(base), tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=30)
    engine.eos_ids = {-1}  # random weights: every row runs to max_tokens
    engine.start()
    registry = AdapterRegistry(engine, Metrics(), tmp_path, "base")
    prompts = [[1, 20, 33, 90], [1, 77, 88, 99, 100]]
    try:
        bare = [await greedy_choice(engine, p, None) for p in prompts]
        await registry.load("lora-a", "lora-a")
        live_tree = _names(engine.model)
        adapted = await greedy_choice(engine, prompts[0], "lora-a")
        assert adapted["message"] != bare[0]["message"]
        together = await asyncio.gather(*[greedy_choice(engine, p, None) for p in prompts])
        for alone, batched in zip(bare, together, strict=True):
            assert_same_greedy(alone, batched, TINY_MARGIN)
        # base rows beside adapter rows (a mixed step) and after them: still the bare model, adapter still applied
        mixed = await asyncio.gather(
            greedy_choice(engine, prompts[0], "lora-a"), greedy_choice(engine, prompts[1], None)
        )
        assert_same_greedy(adapted, mixed[0], TINY_MARGIN)
        assert_same_greedy(bare[1], mixed[1], TINY_MARGIN)
        assert_same_greedy(adapted, await greedy_choice(engine, prompts[0], "lora-a"), TINY_MARGIN)
        assert _names(engine.model) == live_tree  # off-worker readers never see the tree change
    finally:
        registry.close()
        engine.stop()


async def test_a_row_admitted_after_its_adapter_was_cleared_for_unload_gets_a_404(tmp_path, bundled):
    """The race a swap storm found: a request routed to an adapter just before its unload began is submitted after
    the registry saw no rows for it, and is admitted before the removal runs. Its row gets the clean 404 a later
    request gets; the base row beside it in the same lane goes on (no failed decode step, no 500)."""
    from app.engine.events import DoneEvent, ErrorEvent, GenerationRequest
    from app.engine.sampling import SamplingParams
    from app.errors import ModelNotFound

    _, tokenizer, _ = bundled
    base = tiny_llama()
    make_adapter(tmp_path / "lora-a", base, kind="lora", seed=1, targets=("q_proj", "v_proj"))
    engine = Engine(copy.deepcopy(base), tokenizer, device="cpu", metrics=Metrics(), max_wait_ms=30)
    engine.eos_ids = {-1}
    engine.start()
    registry = AdapterRegistry(engine, Metrics(), tmp_path, "base")
    try:
        await registry.load("lora-a", "lora-a")
        late = engine.submit(GenerationRequest([1, 20, 33], SamplingParams(100_000, temperature=0), "lora-a"))
        beside = engine.submit(GenerationRequest([1, 77, 88], SamplingParams(40, temperature=0), None))
        await late.events.get()  # both are running in the mixed lane now
        await asyncio.wrap_future(engine.remove_adapter("lora-a"))  # what the registry does once it saw no rows
        events = []
        while not events or not isinstance(events[-1], ErrorEvent | DoneEvent):
            events.append(await asyncio.wait_for(late.events.get(), 30))
        assert isinstance(events[-1], ErrorEvent) and isinstance(events[-1].error, ModelNotFound)
        while not isinstance(done := await asyncio.wait_for(beside.events.get(), 30), DoneEvent | ErrorEvent):
            pass
        assert isinstance(done, DoneEvent) and done.completion_tokens == 40
    finally:
        registry.close()
        engine.stop()
