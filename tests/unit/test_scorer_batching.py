"""The scorer's micro-batching, lanes and failure isolation, on the real style head and MiniLM."""

import asyncio

import pytest

from app.config import Settings
from app.metrics import Metrics
from app.scoring.embedder import Embedder
from app.scoring.model import StyleHead
from app.scoring.personas import load_shipped
from app.scoring.scorer import CHUNK_TEXTS, ToneScorer

TEXTS = ["Thanks so much, happy to help!", "Request denied. Code 7.", "lol ya np", "We regret the inconvenience."]
POISON = "this text breaks the encoder"


class FaultyEmbedder(Embedder):
    """The real encoder, except that a batch containing POISON raises (a stand-in for an encoder bug)."""

    calls = 0

    def encode(self, texts, batch_size=64):
        type(self).calls += 1
        if POISON in texts:
            raise RuntimeError("encoder failed")
        return super().encode(texts, batch_size)


@pytest.fixture(scope="module")
def scorer():
    settings = Settings()
    s = ToneScorer(StyleHead.load(settings.style_dir), FaultyEmbedder(), Metrics())
    for persona in load_shipped(settings.persona_dir):
        s.personas[persona.name] = s._calibrate(persona)
    yield s
    s.close()


def assert_same_report(a: dict, b: dict, tol: float = 2e-4) -> None:
    """Equal, up to the encoder's fp32 rounding in a padded batch (which can move a 4-decimal figure by one unit on
    one CPU's kernels and not another's)."""
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, float):
            assert abs(value - b[key]) <= tol, (key, value, b[key])
        elif isinstance(value, dict):
            assert value.keys() == b[key].keys()
            assert all(abs(value[k] - b[key][k]) <= tol for k in value), (key, value, b[key])
        else:
            assert value == b[key], (key, value, b[key])


async def test_concurrent_calls_share_batches_and_match_sequential(scorer):
    personas = [None, "support-friendly", "support-formal", "support-robotic"]
    sequential = [await scorer.score([t], persona=p) for t in TEXTS for p in personas]
    before = scorer.batches
    concurrent = await asyncio.gather(*(scorer.score([t], persona=p) for t in TEXTS for p in personas))
    for together, alone in zip(concurrent, sequential, strict=True):
        assert_same_report(together[0], alone[0])
    # 16 concurrent calls ran in fewer encoder batches than calls: they really were batched together
    assert scorer.batches - before < len(concurrent) // 2
    batch = await scorer.score(TEXTS, persona="support-friendly", include_embedding=True)
    assert [r["label"] for r in batch] == [r[0]["label"] for r in sequential[1::4]]
    assert all(len(r["style_embedding"]) > 3 for r in batch)


async def test_a_failing_text_fails_only_its_own_call(scorer):
    results = await asyncio.gather(*(scorer.score([t]) for t in TEXTS), scorer.score([POISON]), return_exceptions=True)
    assert isinstance(results[-1], RuntimeError)
    assert all(isinstance(r, list) and r[0]["label"] for r in results[:-1])


async def test_lone_surrogates_are_scored_not_crashed(scorer):
    [report] = await scorer.score(["hi \ud800 there"])
    assert report["label"]


async def test_bulk_calls_are_chunked_and_do_not_block_small_ones(scorer):
    long_texts = [("The delivery was late and the box was damaged. " * 40).strip()] * (CHUNK_TEXTS * 4)
    finished: list[str] = []

    async def bulk():
        await scorer.score(long_texts)
        finished.append("bulk")

    async def small():
        calls = FaultyEmbedder.calls
        while FaultyEmbedder.calls == calls:  # arrives once the bulk call's first chunk is being encoded
            await asyncio.sleep(0.001)
        await scorer.score(["Thanks, that helps!"])
        finished.append("small")

    await asyncio.gather(bulk(), small())
    assert finished == ["small", "bulk"]
