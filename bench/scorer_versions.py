"""Scorer v2 against v3 per text (issue 29: v3 may cost no more per text than v2): both scorers loaded in one
process — v2's heads on the plain MiniLM, v3's heads on MiniLM with its style LoRA merged — and timed on the same
real-length texts (the v3 corpus: requests, complaints, cover letters, chat lines; 3-150 words) in alternating
rounds (v2, v3, v3, v2, ...), so a drift in the machine's speed hits both alike. Each round is the scorer's own path
from normalised text to prediction: features, the encoder at the scorer's batch size, the heads. One torch thread
(a chat reply's scoring) and every core (a /v1/score batch). `TONEWATCH_SCORER_BENCH_DEVICE=cuda` runs the encoders
on a GPU."""

from __future__ import annotations

import os
import random
import statistics
import time

from bench.common import RESULTS, write

ROUNDS = 6  # per version and thread setting; ABBA order
TEXTS = 192


def _texts() -> list[str]:
    from app.scoring.corpus_v3 import load_texts
    from app.scoring.normalize import normalize

    pool = [t.text for t in load_texts()]
    return [normalize(t) for t in random.Random(7).sample(pool, TEXTS)]


def _scorers(device: str) -> dict:
    from app.config import Settings
    from app.scoring.embedder import Embedder, encoder_lora
    from app.scoring.model import StyleHead

    out = {}
    for version in ("v2", "v3"):
        style_dir = Settings(scorer=version).style_dir
        out[version] = (StyleHead.load(style_dir), Embedder(device, encoder_lora(style_dir)))
    return out


def _round(head, embedder, texts: list[str]) -> float:
    started = time.perf_counter()
    head.predict(texts, embedder.encode(texts))
    return len(texts) / (time.perf_counter() - started)


def run() -> dict:
    import torch

    device = os.environ.get("TONEWATCH_SCORER_BENCH_DEVICE", "cpu")
    texts = _texts()
    scorers = _scorers(device)
    words = [len(t.split()) for t in texts]
    result: dict = {
        "device": device,
        "texts": len(texts),
        "words_median": statistics.median(words),
        "words_max": max(words),
        "rounds_per_version": ROUNDS,
        "settings": {},
    }
    cores = os.cpu_count() or 1
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        for version in ("v2", "v3"):  # warm-up: first calls allocate
            _round(*scorers[version], texts[:32])
        rates: dict[str, list[float]] = {"v2": [], "v3": []}
        for i in range(ROUNDS):
            order = ("v2", "v3") if i % 2 == 0 else ("v3", "v2")
            for version in order:
                rates[version].append(_round(*scorers[version], texts))
        v2, v3 = statistics.median(rates["v2"]), statistics.median(rates["v3"])
        result["settings"][f"threads_{threads}"] = {
            "texts_per_s": {"v2": v2, "v3": v3},
            "rounds": rates,
            "v3_cost_per_text_vs_v2": v2 / v3,  # > 1: v3 slower
        }
        print(f"  {threads} thread(s): v2 {v2:.1f} texts/s, v3 {v3:.1f} texts/s, v3 costs {v2 / v3:.3f}x v2 per text")
    write("scorer_versions", result)
    _plot(result)
    return result


def _plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = result["settings"]
    fig, axes = plt.subplots(1, len(settings), figsize=(4.5 * len(settings), 3.5), squeeze=False)
    for ax, (name, s) in zip(axes[0], settings.items(), strict=True):
        for x, version in enumerate(("v2", "v3")):
            ax.scatter([x] * len(s["rounds"][version]), s["rounds"][version], alpha=0.5)
            ax.bar([x], [s["texts_per_s"][version]], alpha=0.4)
        ax.set_xticks([0, 1], ["v2 (MiniLM)", "v3 (MiniLM + merged style LoRA)"])
        ax.set_ylabel("texts / s (median bar, rounds dots)")
        ax.set_title(f"{name.replace('_', ' ')}: v3 {s['v3_cost_per_text_vs_v2']:.3f}x v2 per text")
    fig.tight_layout()
    fig.savefig(RESULTS / "scorer_versions.png", dpi=100)


if __name__ == "__main__":
    run()
