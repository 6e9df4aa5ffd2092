"""Drift detection on simulated sessions built from our own support answers (data/support/*.jsonl).

Stable streams: responses of one persona scored against that persona -> false alarms per turn.
Switch streams: 10 in-persona turns, then another persona's responses -> detection delay in turns.
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

from bench.common import RESULTS, write

DATA = Path(__file__).resolve().parent.parent / "data" / "support"
PAIRS = [
    ("friendly", "support-friendly", "robotic"),
    ("friendly", "support-friendly", "formal"),
    ("formal", "support-formal", "robotic"),
    ("formal", "support-formal", "friendly"),
]


def load_responses() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"friendly": [], "formal": [], "robotic": []}
    for path in sorted(DATA.glob("exchanges_*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for k in out:
                out[k].append(row["responses"][k])
    return out


def run(
    seed: int = 7,
    stable_turns: int = 500,
    switch_streams: int = 100,
    switch_at: int = 10,
    arl0: float | None = None,
    k_ref: float | None = None,
) -> dict:
    from app.config import Settings
    from app.metrics import Metrics
    from app.monitor import drift
    from app.scoring.scorer import ToneScorer

    settings = Settings()
    scorer = ToneScorer.load(Metrics(), settings.style_dir, settings.persona_dir)
    responses = load_responses()
    rng = random.Random(seed)
    defaults = drift.DriftParams()
    params = drift.DriftParams(arl0=arl0 or defaults.arl0, k_ref=k_ref or defaults.k_ref)
    scored: dict[tuple[str, str], list] = {}
    for _, persona_name, _ in PAIRS:
        persona = scorer.personas[persona_name]
        for style, texts in responses.items():
            if (style, persona_name) in scored:
                continue
            reports = [scorer._report(p, persona, False) for p in scorer._predict(texts)]
            scored[(style, persona_name)] = [
                drift.Observation(r["persona_distance"], r["formality"], r["politeness"], r["warmth"]) for r in reports
            ]
    result: dict = {
        "stable_turns": stable_turns,
        "switch_streams": switch_streams,
        "switch_at": switch_at,
        "params": params.__dict__,
        "thresholds": drift.thresholds(params),
        "cases": [],
    }
    for persona_key, persona_name, other in PAIRS:
        persona = scorer.personas[persona_name]
        baseline = drift.Baseline.from_exemplars(persona.loo_distances, persona.exemplar_dims)
        own, foreign = scored[(persona_key, persona_name)], scored[(other, persona_name)]
        state, false_alarms, alert_prev = None, 0, False
        for _ in range(stable_turns):
            state, report = drift.update(state, rng.choice(own), baseline, params)
            false_alarms += int(report.alert and not alert_prev)
            alert_prev = report.alert
        delays, pre_switch_alarms = [], 0
        for _ in range(switch_streams):
            state, delay = None, None
            for t in range(switch_at + 30):
                obs = rng.choice(own) if t < switch_at else rng.choice(foreign)
                state, report = drift.update(state, obs, baseline, params)
                if report.alert and t < switch_at:
                    pre_switch_alarms += 1
                    break
                if report.alert and t >= switch_at:
                    delay = t - switch_at + 1
                    break
            delays.append(delay if delay is not None else float("inf"))
        finite = [d for d in delays if d != float("inf")]
        result["cases"].append(
            {
                "persona": persona_name,
                "switch_to": other,
                "stable_false_alarms": false_alarms,
                "median_delay_turns": statistics.median(delays) if finite else None,
                "p90_delay_turns": sorted(delays)[int(0.9 * len(delays))] if finite else None,
                "detected_share": len(finite) / len(delays),
                "pre_switch_alarms": pre_switch_alarms,
            }
        )
        print(f"  {persona_name} -> {other}: {result['cases'][-1]}")
    # the scorer version's own result (TONEWATCH_SCORER=v3 writes drift-v3.*), so versions compare side by side
    name = "drift" if settings.scorer == "v2" else f"drift-{settings.scorer}"
    result["scorer"] = settings.scorer
    write(name, result)
    plot(result, name)
    return result


def plot(result: dict, name: str = "drift") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = result["cases"]
    names = [f"{c['persona'].removeprefix('support-')}\n→ {c['switch_to']}" for c in cases]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [c["median_delay_turns"] or 0 for c in cases], label="median delay (turns)")
    ax.bar(
        names,
        [c["stable_false_alarms"] for c in cases],
        alpha=0.6,
        label=f"false alarms / {result['stable_turns']} stable turns",
    )
    ax.axhline(3, ls="--", c="grey", lw=1)
    ax.set_title("Tone-drift detection on simulated sessions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=100)
