"""The canary decision: is the new adapter's tone worse than the current one's? A sequential test that may be
checked after every turn without inflating its error rates. Pure functions over a JSON-able state.

Each scored turn of an experiment session is reduced to "bad" indicators, one per signal:

* ``alert``   — the session is in a drift alarm;
* ``mismatch`` — the answer fell outside the persona's radius;
* ``off_label`` — the answer's tone label is not the persona's own (the majority label of its exemplars);
* ``slow``     — the answer took longer than the current arm's running 90th percentile (so ~10 % of the
  current arm's turns are "slow" by construction, and a canary that is slower shows up as more).

The unit of the test is the session, not the turn: a session counts as bad for a signal at its first bad turn, and
exposure is the number of sessions per arm. Sessions are assigned to arms independently (a hash per session), turns
are not (every turn of a session is on its side): a per-turn test would treat one bad session's bursts as
independent evidence and roll back good canaries far more often than alpha (measured: 13 % instead of 5 %).

Test (per signal). Conditional on a session turning bad, the chance that it is a canary session is
``e = n_canary / (n_canary + n_current)`` under H0 (equal rates; n = sessions so far) and
``r·e / (r·e + 1 − e)`` under H1 (the canary's rate is ``relative_risk`` = r times the current one's). Wald's SPRT
on that sequence of Bernoulli outcomes: the log-likelihood ratio crosses ``log((1 − β) / α')`` → the canary is
worse (roll back); it crosses ``log(β / (1 − α'))`` → no regression of that size (accept H0). With four signals the
false-rollback rate is split Bonferroni-style, α' = α / 4, so the overall false-rollback rate is at most α and each
signal's missed-regression rate at most β (Wald's bounds; `bench/canary.py` measures both by simulation).

The canary is rolled back as soon as any signal says "worse"; it *passes* when every signal has accepted H0 (or
never fired in either arm) and both arms have at least ``min_turns`` turns (it is then promoted if the operator
asked for that, else it keeps serving its share until stopped or promoted by hand).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SIGNALS = ("alert", "mismatch", "off_label", "slow")
ARMS = ("canary", "current")
SLOW_QUANTILE = 0.9
LATENCY_WINDOW = 200


@dataclass(frozen=True)
class CanaryRule:
    alpha: float = 0.05  # false rollback: a canary as good as the current one is rolled back at most this often
    beta: float = 0.10  # missed regression: a canary `relative_risk` times worse passes at most this often
    relative_risk: float = 2.0  # the regression to detect, as a ratio of bad-event rates
    min_turns: int = 30  # per arm, before the canary can pass

    @property
    def upper(self) -> float:
        return math.log((1 - self.beta) / (self.alpha / len(SIGNALS)))

    @property
    def lower(self) -> float:
        return math.log(self.beta / (1 - self.alpha / len(SIGNALS)))


def new_state() -> dict:
    return {
        "sessions": {arm: 0 for arm in ARMS},
        "turns": {arm: 0 for arm in ARMS},
        "bad": {arm: {s: 0 for s in SIGNALS} for arm in ARMS},
        "llr": {s: 0.0 for s in SIGNALS},
        "verdict": {s: None for s in SIGNALS},  # None | "worse" | "not_worse", once crossed it sticks
        "latencies": [],  # recent current-arm latencies (the "slow" threshold)
        "counted": {s: [] for s in SIGNALS},  # sessions already counted as bad per signal (bounded)
        "decision": "running",  # running | rolled_back | passed
    }


def slow_threshold(state: dict) -> float | None:
    values = sorted(state["latencies"])
    if len(values) < 10:
        return None
    return values[min(len(values) - 1, int(SLOW_QUANTILE * len(values)))]


def _exposure(state: dict, signal: str, arm: str) -> int:
    return state["sessions"][arm]


def _update_llr(state: dict, signal: str, arm: str, rule: CanaryRule) -> None:
    n_k, n_c = _exposure(state, signal, "canary"), _exposure(state, signal, "current")
    if n_k == 0 or n_c == 0:
        return
    e = n_k / (n_k + n_c)
    r = rule.relative_risk
    p0, p1 = e, r * e / (r * e + 1 - e)
    step = math.log(p1 / p0) if arm == "canary" else math.log((1 - p1) / (1 - p0))
    state["llr"][signal] += step
    if state["verdict"][signal] is None:
        if state["llr"][signal] >= rule.upper:
            state["verdict"][signal] = "worse"
        elif state["llr"][signal] <= rule.lower:
            state["verdict"][signal] = "not_worse"


def observe(
    state: dict | None,
    arm: str,
    *,
    new_session: bool,
    session_id: str,
    alert: bool,
    mismatch: bool | None,
    off_label: bool | None,
    latency_s: float | None,
    rule: CanaryRule,
) -> dict:
    """Fold one scored turn of an experiment session into the state (a new dict is returned)."""
    import copy

    st = copy.deepcopy(state) if state else new_state()
    if st["decision"] != "running":
        return st
    if new_session:
        st["sessions"][arm] += 1
    st["turns"][arm] += 1
    threshold = slow_threshold(st)
    turn_bad = {
        "alert": alert,
        "mismatch": bool(mismatch),
        "off_label": bool(off_label),
        "slow": latency_s is not None and threshold is not None and latency_s > threshold,
    }
    bad = {}
    for signal, is_bad in turn_bad.items():  # a session counts once per signal, at its first bad turn
        bad[signal] = is_bad and session_id not in st["counted"][signal]
        if bad[signal]:
            st["counted"][signal] = [*st["counted"][signal], session_id][-5000:]
    if arm == "current" and latency_s is not None:
        st["latencies"] = [*st["latencies"], float(latency_s)][-LATENCY_WINDOW:]
    for signal, is_bad in bad.items():
        if is_bad:
            st["bad"][arm][signal] += 1
            _update_llr(st, signal, arm, rule)
    st["decision"] = decide(st, rule)
    return st


def decide(state: dict, rule: CanaryRule) -> str:
    if any(v == "worse" for v in state["verdict"].values()):
        return "rolled_back"
    enough = all(state["turns"][arm] >= rule.min_turns for arm in ARMS)

    def settled(signal: str) -> bool:
        # a signal that never fired in either arm carries no evidence of a (relative) regression
        quiet = all(state["bad"][arm][signal] == 0 for arm in ARMS)
        return state["verdict"][signal] == "not_worse" or quiet

    if enough and all(settled(s) for s in SIGNALS):
        return "passed"
    return "running"


def summary(state: dict | None, rule: CanaryRule) -> dict:
    st = state or new_state()
    rates = {}
    for arm in ARMS:
        rates[arm] = {
            s: (st["bad"][arm][s] / _exposure(st, s, arm)) if _exposure(st, s, arm) else None for s in SIGNALS
        }
    return {
        "decision": st["decision"],
        "sessions": st["sessions"],
        "turns": st["turns"],
        "bad": st["bad"],
        "rates": rates,
        "llr": {s: round(v, 4) for s, v in st["llr"].items()},
        "verdict": st["verdict"],
        "boundaries": {"rollback": round(rule.upper, 4), "accept": round(rule.lower, 4)},
        "slow_threshold_s": slow_threshold(st),
    }
