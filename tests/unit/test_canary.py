"""The canary's sequential test (pure) and its assignment: a worse canary is rolled back, an equal one is not (at
most alpha of the time), a session always lands on the same side."""

import random

from app.monitor import canary as test
from app.services.canary import arm_for

RULE = test.CanaryRule(alpha=0.05, beta=0.1, relative_risk=2.0, min_turns=30)


def run(p_canary: float, p_current: float, share: float, turns: int, seed: int, rule=RULE):
    """Simulated turns: each arm's answers are off-persona with its own probability; returns (decision, turns)."""
    rng = random.Random(seed)
    state = None
    for t in range(turns):
        arm = "canary" if rng.random() < share else "current"
        p = p_canary if arm == "canary" else p_current
        bad = rng.random() < p
        state = test.observe(
            state,
            arm,
            new_session=True,
            session_id=f"s{t}",
            alert=False,
            mismatch=bad,
            off_label=bad,
            latency_s=None,
            rule=rule,
        )
        if state["decision"] != "running":
            return state["decision"], t + 1
    return state["decision"], turns


def test_a_clearly_worse_canary_is_rolled_back_quickly():
    delays = []
    for seed in range(40):
        decision, turns = run(0.6, 0.1, 0.2, 5000, seed)
        assert decision == "rolled_back"
        delays.append(turns)
    assert sorted(delays)[len(delays) // 2] < 400  # median turns to the rollback at a 20 % canary share


def test_an_equal_canary_is_rarely_rolled_back():
    # sessions of 4 turns on one side: the test must not take one session's turns as independent evidence
    rollbacks = sum(run(0.15, 0.15, 0.1, 4000, seed)[0] == "rolled_back" for seed in range(200))
    assert rollbacks / 200 <= RULE.alpha + 0.03  # Wald's bound, with room for simulation noise


def test_an_equal_canary_passes_after_min_turns():
    decisions = [run(0.15, 0.15, 0.3, 20000, seed)[0] for seed in range(20)]
    assert decisions.count("passed") >= 16


def test_silent_signals_do_not_block_a_pass():
    state = None
    for t in range(200):
        arm = "canary" if t % 2 else "current"
        state = test.observe(
            state,
            arm,
            new_session=True,
            session_id=f"s{t}",
            alert=False,
            mismatch=False,
            off_label=False,
            latency_s=None,
            rule=RULE,
        )
    assert state["decision"] == "passed"


def test_a_session_counts_once_per_signal_and_slow_is_relative_to_the_current_arm():
    state = None
    for t in range(50):  # current arm: latencies 1.0 .. 1.49 s
        state = test.observe(
            state,
            "current",
            new_session=True,
            session_id=f"c{t}",
            alert=False,
            mismatch=False,
            off_label=False,
            latency_s=1.0 + t / 100,
            rule=RULE,
        )
    for _ in range(3):  # one canary session alarmed on three turns, all slow
        state = test.observe(
            state,
            "canary",
            new_session=False,
            session_id="k1",
            alert=True,
            mismatch=False,
            off_label=False,
            latency_s=9.0,
            rule=RULE,
        )
    assert state["bad"]["canary"]["alert"] == 1
    assert state["bad"]["canary"]["slow"] == 1


def test_assignment_is_stable_and_matches_the_share():
    sessions = [f"ticket-{i}" for i in range(4000)]
    first = [arm_for("c1", s, 0.1) for s in sessions]
    assert first == [arm_for("c1", s, 0.1) for s in sessions]  # a session stays on its side
    share = first.count("canary") / len(first)
    assert 0.085 < share < 0.115
    assert first != [arm_for("c2", s, 0.1) for s in sessions]  # a new canary draws new sides
