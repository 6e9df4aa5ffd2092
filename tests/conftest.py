"""Shared fixtures and the tiers. The bundled model is real (loaded from the safetensors cache `make provision`
prepares); a tiny random Llama with the real tokenizer serves fast engine unit tests.

Tiers follow folders: every test is marked with its folder's name (unit, api, integration, ops, e2e), and `model`
when it needs the converted bundled model (the `bundled`/`tiny` fixtures, an app or server process). The rest is
the pure tier (`-m "not model"`), which runs before any model is converted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite runs several model processes at once on two cores (pytest workers, servers, peers). Two-thread OpenMP
# teams in more than one of them make every team wait on descheduled threads (a decode step went from 0.19 s to
# 5.9 s that way), so the app's engine and scorer run on one thread here, and so does each pytest worker. The
# multi-threaded paths and the start-up probes that choose them are tested directly (tests/unit/test_threads.py).
os.environ.setdefault("TONEWATCH_ENGINE_THREADS", "1")
os.environ.setdefault("TONEWATCH_SCORER_THREADS", "1")
# A store call on the request path gets 0.25 s in production before the circuit breaker opens and turns spill
# locally (replayed later, so reads lag). With the suite's processes on two cores a healthy Redis call can take that
# long; tests that are not about the breaker get a budget that only a hang exceeds. Breaker tests set their own.
os.environ.setdefault("TONEWATCH_STORE_TIMEOUT_S", "2.0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: this worker and its child processes

ROOT = Path(__file__).resolve().parent.parent


TIERS = ("unit", "api", "integration", "ops", "e2e")
MODEL_FIXTURES = {"bundled", "tiny"}
MODEL_TIERS = {"api", "e2e"}  # every test there talks to an app or a server with the bundled model


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)
        if tier in MODEL_TIERS or MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("model")


@pytest.fixture(scope="session")
def bundled():
    """(model, tokenizer, name) for the real bundled SmolLM2."""
    from app.config import Settings
    from app.engine.provision import load_base_model, resolve_base_model

    settings = Settings()
    source = resolve_base_model(settings.base_model)
    model, tokenizer = load_base_model(source, settings.model_cache_dir, "cpu", "float32")
    return model, tokenizer, source.name


@pytest.fixture(scope="session")
def tiny(bundled):
    """A 2-layer random Llama sharing the real tokenizer: same code paths, milliseconds per step."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer, _ = bundled
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny64(tiny):
    """The tiny model in float64, for tests that compare greedy texts across batch compositions: a random model's
    top two logits are often within fp32 rounding of each other, and which way such a near-tie falls depends on the
    CPU's kernels; float64 rounding is far below any gap they show."""
    import copy

    model, tokenizer = tiny
    return copy.deepcopy(model).double(), tokenizer
