"""The statistics of `tonewatch eval`: per-answer text-quality checks and the per-adapter summary (tone label
distribution, persona match rate against every shipped persona, tone dimension means/stds, within-session
dispersion, drift alerts (sessions alerted / total), latency p50/p99 per request (DoneEvent.total_s), tokens/s, and
text-quality counts (empty answers, distinct-2, repeated n-grams, answers cut at max_tokens)).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import numpy as np

from app.evaluation.report_records import Answer, SessionResult
from app.scoring.labels import DIMENSIONS, LABELS

WORD = re.compile(r"[A-Za-z0-9']+")


def text_quality(text: str, n: int = 3) -> dict[str, Any]:
    """Degeneration checks: word count, distinct-2 (unique word bigrams / bigrams), the largest number of times any
    word n-gram occurs, and whether the answer counts as collapsed (empty, or an n-gram repeated more than 3 times,
    or distinct-2 below 0.5 on an answer long enough to judge)."""
    words = [w.lower() for w in WORD.findall(text)]
    bigrams = list(itertools.pairwise(words))
    distinct2 = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    max_repeat = max(grams.values()) if grams else 0
    collapsed = not text.strip() or max_repeat > 3 or (len(bigrams) >= 8 and distinct2 < 0.5)
    return {
        "words": len(words),
        "distinct2": round(distinct2, 4),
        "max_ngram_repeat": max_repeat,
        "collapsed": collapsed,
    }


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _std(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else (0.0 if values else None)


def summarize(
    name: str,
    answers: list[Answer],
    sessions: list[SessionResult],
    wall_s: float,
    personas: list[str],
    own_persona: str | None,
) -> dict[str, Any]:
    labels = Counter(a.tone["label"] for a in answers)
    n = len(answers)
    everything = answers + [a for s in sessions for a in s.answers]
    latencies = [a.total_s for a in everything]
    ttft = [a.ttft_s for a in everything]
    tokens = sum(a.completion_tokens for a in answers)
    per_request_rate = [a.completion_tokens / a.total_s for a in everything if a.total_s > 0]
    dims = {
        d: {"mean": _mean([a.tone[d] for a in answers]), "std": _std([a.tone[d] for a in answers])} for d in DIMENSIONS
    }
    match = {p: _mean([float(a.personas[p]["match"]) for a in answers]) for p in personas}
    distance = {p: _mean([a.personas[p]["distance"] for a in answers]) for p in personas}
    dispersion = [s.drift[-1]["dispersion"] for s in sessions if s.drift]
    session_std = [
        float(np.mean([np.std([a.tone[d] for a in s.answers]) for d in DIMENSIONS]))
        for s in sessions
        if len(s.answers) >= 2
    ]
    return {
        "name": name,
        "persona": own_persona,
        "answers": n,
        "labels": {label: labels.get(label, 0) for label in LABELS},
        "label_share": {label: labels.get(label, 0) / n if n else 0.0 for label in LABELS},
        "top_label": labels.most_common(1)[0][0] if labels else None,
        "persona_match_rate": match,
        "persona_distance_mean": distance,
        "dimensions": dims,
        "dispersion_mean": _mean(dispersion),
        "session_dim_std_mean": _mean(session_std),
        "sessions": len(sessions),
        "sessions_alerted": sum(s.alerted for s in sessions),
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p99_s": _percentile(latencies, 99),
        "ttft_p50_s": _percentile(ttft, 50),
        "requests": len(everything),
        "tokens_per_s": tokens / wall_s if wall_s > 0 else None,
        "request_tokens_per_s_p50": _percentile(per_request_rate, 50),
        "completion_tokens_mean": _mean([a.completion_tokens for a in answers]),
        "finished_by_length": sum(a.finish_reason == "length" for a in answers),
        "quality": {
            "empty": sum(not a.text.strip() for a in everything),
            "collapsed": sum(a.quality["collapsed"] for a in everything),
            "distinct2_mean": _mean([a.quality["distinct2"] for a in everything]),
            "max_ngram_repeat": max((a.quality["max_ngram_repeat"] for a in everything), default=0),
        },
    }
