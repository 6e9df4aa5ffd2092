"""Canary benchmark: the sequential tone test's false-rollback rate and detection delay, by simulation on real tone
scores. Every answer of the support corpus (data/support, friendly / formal / robotic answers to the same 320
questions) is scored once by the real scorer against the support-friendly persona; simulated sessions of 4 turns
then draw answers from one pool per arm, fold them through the real drift detector, and feed the canary test
exactly as the service does.

* same voice (both arms draw friendly answers): how often is a good canary rolled back? (goal: <= alpha = 5 %)
* robotic / formal canary against a friendly current: after how many canary sessions is it rolled back?
"""

from __future__ import annotations

import random
import statistics

from bench.common import RESULTS, write
from bench.drift import load_responses

SHARE = 0.1
TURNS_PER_SESSION = 4
H0_RUNS, H0_SESSIONS = 200, 1000
H1_RUNS, H1_MAX_SESSIONS = 200, 3000


def scored_pools() -> tuple[dict[str, list[dict]], object]:
    import asyncio

    from app.config import Settings
    from app.metrics import Metrics
    from app.scoring.scorer import ToneScorer

    settings = Settings()
    scorer = ToneScorer.load(Metrics(), settings.style_dir, settings.persona_dir)
    try:
        pools = {
            voice: asyncio.run(scorer.score(texts, persona="support-friendly"))
            for voice, texts in load_responses().items()
        }
        persona = scorer.personas["support-friendly"]
    finally:
        scorer.close()
    return pools, persona


def simulate(pools, persona, canary_voice: str, sessions: int, seed: int, rule) -> tuple[str, int, int]:
    """(decision, canary sessions, all sessions) when the run ends (decision or the session budget)."""
    from app.monitor import canary as test
    from app.monitor import drift

    rng = random.Random(seed)
    baseline = drift.Baseline.from_exemplars(persona.loo_distances, persona.exemplar_dims)
    intended = max(set(persona.exemplar_labels), key=persona.exemplar_labels.count)
    state = None
    canary_sessions = 0
    for s in range(sessions):
        arm = "canary" if rng.random() < SHARE else "current"
        canary_sessions += arm == "canary"
        pool = pools[canary_voice if arm == "canary" else "friendly"]
        session_state = None
        for t in range(TURNS_PER_SESSION):
            tone = rng.choice(pool)
            obs = drift.Observation(tone["persona_distance"], tone["formality"], tone["politeness"], tone["warmth"])
            session_state, report = drift.update(session_state, obs, baseline)
            state = test.observe(
                state,
                arm,
                new_session=t == 0,
                session_id=f"s{s}",
                alert=report.alert,
                mismatch=not tone["persona_match"],
                off_label=tone["label"] != intended,
                latency_s=rng.lognormvariate(0.5, 0.3),
                rule=rule,
            )
            if state["decision"] != "running":
                return state["decision"], canary_sessions, s + 1
    return state["decision"], canary_sessions, sessions


def run() -> dict:
    from app.monitor import canary as test

    rule = test.CanaryRule()
    pools, persona = scored_pools()
    rates = {
        v: {
            "mismatch": statistics.fmean(not r["persona_match"] for r in p),
            "off_label": statistics.fmean(r["label"] != "friendly" for r in p),
        }
        for v, p in pools.items()
    }
    h0 = [simulate(pools, persona, "friendly", H0_SESSIONS, seed, rule) for seed in range(H0_RUNS)]
    false_rollbacks = sum(d == "rolled_back" for d, _, _ in h0) / H0_RUNS
    passed = sum(d == "passed" for d, _, _ in h0) / H0_RUNS
    result: dict = {
        "share": SHARE,
        "turns_per_session": TURNS_PER_SESSION,
        "rule": rule.__dict__,
        "persona": "support-friendly",
        "bad_rates_per_pool": rates,
        "same_voice": {
            "runs": H0_RUNS,
            "sessions_per_run": H0_SESSIONS,
            "false_rollback_rate": false_rollbacks,
            "passed_rate": passed,
            "goal_false_rollback_rate": rule.alpha,
        },
    }
    delays = {}
    for voice in ("robotic", "formal"):
        runs = [simulate(pools, persona, voice, H1_MAX_SESSIONS, 1000 + seed, rule) for seed in range(H1_RUNS)]
        detected = [(k, n) for d, k, n in runs if d == "rolled_back"]
        canary_sessions = sorted(k for k, _ in detected)
        all_sessions = sorted(n for _, n in detected)
        delays[voice] = canary_sessions
        result[f"{voice}_canary"] = {
            "runs": H1_RUNS,
            "detected_rate": len(detected) / H1_RUNS,
            "canary_sessions_to_rollback": {
                "p50": statistics.median(canary_sessions) if detected else None,
                "p90": canary_sessions[int(0.9 * len(detected))] if detected else None,
                "max": max(canary_sessions) if detected else None,
            },
            "all_sessions_to_rollback": {"p50": statistics.median(all_sessions) if detected else None},
        }
    write("canary", result)
    _plot(result, delays)
    print(
        f"  same voice: {false_rollbacks:.1%} false rollbacks (goal <= {rule.alpha:.0%}); robotic canary rolled "
        f"back after {result['robotic_canary']['canary_sessions_to_rollback']['p50']} canary sessions (median)"
    )
    return result


def _plot(result: dict, delays: dict[str, list[int]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.bar(["same voice"], [result["same_voice"]["false_rollback_rate"]])
    a.axhline(result["rule"]["alpha"], ls="--", c="grey", label="alpha")
    a.set_ylabel("false rollback rate")
    a.legend()
    for voice, values in delays.items():
        if values:
            b.hist(values, bins=30, alpha=0.6, label=f"{voice} canary")
    b.set_xlabel("canary sessions until rollback")
    b.legend()
    fig.suptitle(f"canary vs support-friendly, {result['share']:.0%} of new sessions, {TURNS_PER_SESSION} turns each")
    fig.tight_layout()
    fig.savefig(RESULTS / "canary.png", dpi=100)
