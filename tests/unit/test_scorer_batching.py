"""Concurrent score calls share one encoder batch and still get exactly their own reports."""

import asyncio

import pytest

from app.metrics import Metrics
from app.scoring.scorer import ToneScorer

TEXTS = ["Thanks so much, happy to help!", "Request denied. Code 7.", "lol ya np", "We regret the inconvenience."]


@pytest.fixture(scope="module")
def scorer():
    s = ToneScorer.load(Metrics())
    yield s
    s.close()


async def test_concurrent_calls_match_sequential(scorer):
    personas = [None, "support-friendly", "support-formal", "support-robotic"]
    sequential = [await scorer.score([t], persona=p) for t in TEXTS for p in personas]
    concurrent = await asyncio.gather(*(scorer.score([t], persona=p) for t in TEXTS for p in personas))
    assert concurrent == sequential
    batch = await scorer.score(TEXTS, persona="support-friendly", include_embedding=True)
    assert [r["label"] for r in batch] == [r[0]["label"] for r in sequential[1::4]]
    assert all(len(r["style_embedding"]) > 3 for r in batch)
