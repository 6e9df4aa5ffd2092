"""How v2 and v3 read the answers the service actually scores: the shipped adapters' and the base model's answers,
graded blind by two raters (data/rated/), in two sets: the answers to the e2e checks' held-out questions
(evaluation only) and to 40 validation questions written apart (the set to look at when choosing a setting). Per
scorer: Spearman with the raters' mean grade per dimension, label agreement where the raters agree, and per adapter
the label shares and mean dimensions beside the raters'. The adapter checks rest on two contrasts, reported apart:
the formal adapter's formality against the base model's, and the share of the friendly adapter's answers labelled
`friendly`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import RESULTS, write

RATED = Path(__file__).resolve().parent.parent / "data" / "rated"
SETS = {"heldout": RATED / "adapter_answers.jsonl", "validation": RATED / "validation_answers.jsonl"}
DIMS = ("formality", "politeness", "warmth")


def load(name: str = "heldout") -> list[dict]:
    return [json.loads(line) for line in SETS[name].read_text().splitlines() if line.strip()]


def _summary(rows: list[dict], grades: list[dict]) -> dict:
    out: dict = {}
    for adapter in sorted({r["adapter"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["adapter"] == adapter]
        labels = Counter(grades[i]["label"] for i in idx)
        out[adapter] = {
            "label_share": {k: round(v / len(idx), 3) for k, v in sorted(labels.items())},
            **{d: round(float(np.mean([grades[i][d] for i in idx])), 3) for d in DIMS},
        }
    return out


def _raters(rows: list[dict]) -> list[dict]:
    return [
        {
            **{d: float(np.mean([g[d] for g in r["raters"].values()])) for d in DIMS},
            "label": Counter(g["label"] for g in r["raters"].values()).most_common(1)[0][0],
            "agreed": len({g["label"] for g in r["raters"].values()}) == 1,
        }
        for r in rows
    ]


def _contrasts(per_adapter: dict) -> dict:
    return {
        "formal_minus_base_formality": round(
            per_adapter["support-formal"]["formality"] - per_adapter["base"]["formality"], 3
        ),
        "friendly_share_of_friendly_adapter": per_adapter["support-friendly"]["label_share"].get("friendly", 0.0),
    }


def run() -> dict:
    from app.config import Settings
    from app.metrics import Metrics
    from app.scoring.scorer import ToneScorer
    from app.scoring.statistics import spearman

    sets = {name: load(name) for name in SETS}
    consensus = {name: _raters(rows) for name, rows in sets.items()}
    result: dict = {"sets": {}}
    for name, rows in sets.items():
        summary = _summary(rows, consensus[name])
        result["sets"][name] = {
            "answers": len(rows),
            "raters": summary,
            "raters_contrasts": _contrasts(summary),
            "scorers": {},
        }
    for version in ("v2", "v3"):
        settings = Settings(scorer=version)
        scorer = ToneScorer.load(Metrics(), settings.style_dir, settings.persona_dir)
        try:
            for name, rows in sets.items():
                raters = consensus[name]
                predicted = [{"label": p.label, **p.dims} for p in scorer._predict([r["text"] for r in rows])]
                agreed = [i for i, r in enumerate(raters) if r["agreed"]]
                per_adapter = _summary(rows, predicted)
                out = {
                    "spearman_with_raters": {
                        d: round(spearman([p[d] for p in predicted], [r[d] for r in raters]), 3) for d in DIMS
                    },
                    "label_agreement": round(
                        float(np.mean([predicted[i]["label"] == raters[i]["label"] for i in agreed])), 3
                    ),
                    "per_adapter": per_adapter,
                    **_contrasts(per_adapter),
                }
                result["sets"][name]["scorers"][version] = out
                print(f"  {name} {version}: {json.dumps({k: v for k, v in out.items() if k != 'per_adapter'})}")
        finally:
            scorer.close()
    write("rated_answers", result)
    plot(result)
    return result


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = result["sets"]
    fig, axes = plt.subplots(len(sets), 2, figsize=(10, 3.6 * len(sets)), squeeze=False)
    names = ["raters", "v2", "v3"]
    x = np.arange(len(names))
    for (left, right), (set_name, data) in zip(axes, sets.items(), strict=True):
        contrasts = [data["raters_contrasts"]] + [data["scorers"][v] for v in ("v2", "v3")]
        left.bar(x - 0.2, [c["formal_minus_base_formality"] for c in contrasts], 0.4, label="formality: formal − base")
        left.bar(
            x + 0.2,
            [c["friendly_share_of_friendly_adapter"] for c in contrasts],
            0.4,
            label="friendly adapter: share friendly",
        )
        left.set_xticks(x, names)
        left.set_title(f"{set_name} questions: what the adapter checks rest on", fontsize=10)
        left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
        for i, version in enumerate(("v2", "v3")):
            sp = data["scorers"][version]["spearman_with_raters"]
            right.bar(np.arange(len(DIMS)) + (i - 0.5) * 0.4, [sp[d] for d in DIMS], 0.4, label=version)
        right.set_xticks(np.arange(len(DIMS)), DIMS)
        right.set_ylim(0, 1.15)
        right.set_title(f"{set_name}: Spearman with the raters ({data['answers']} answers)", fontsize=10)
        right.legend(ncol=2, loc="upper center")
    fig.tight_layout()
    fig.savefig(RESULTS / "rated_answers.png", dpi=100)
