"""Sequential tone-drift detection for one chat session (a "stream"); pure functions over a JSON-able state.

Why sequential: a single off-tone reply is noise, a run of them is drift. A CUSUM accumulates small consistent
deviations and ignores isolated ones, and its false-alarm rate can be set directly, so "alert" has a meaning.

Per-turn statistic (``standardized_statistic``)
    Each signal is standardized against the reference distribution (the persona's exemplars, or the session's
    own first turns when there is no persona):

    * distance to the persona centroid, one-sided (only *larger* distance is off-persona):
      ``t_d = (d - mean_d) / scale_d``;
    * each tone dimension (formality, politeness, warmth), two-sided: ``t_j = |x_j - mean_j| / scale_j``;

    with ``scale = max(std * sqrt(1 + 1/n), floor)``: the predictive standard deviation of a new draw when mean
    and std come from ``n`` samples. Floors (``DISTANCE_STD_FLOOR`` = 0.02, ``DIMENSION_STD_FLOOR`` = 0.05, in
    the signals' own units) stop a persona whose 5-30 exemplars happen to agree closely from turning tiny
    wobbles into alarms. Each ``t`` is turned into a tail p-value with Student's t on ``n - 1`` degrees of
    freedom (the exact predictive law for Gaussian data with estimated mean/std; normal when ``n < 2``), which
    is what keeps 5-exemplar personas or a 3-turn self-baseline from over-alarming.

    The p-values are combined by Sidak's min-p, ``q = 1 - (1 - min p)^m`` (m = number of signals present), and
    mapped back to the z scale: ``s_t = Phi^-1(1 - q)``, clipped to ``[-S_CAP, S_CAP]`` (``S_CAP`` = 4).
    In control (independent Gaussian signals) ``s_t`` is therefore exactly standard normal, whichever signals
    are present; correlated tone dimensions make min-p conservative (fewer false alarms). The clip makes one
    wild reply add at most ``S_CAP - k_ref`` = 3.0 to the CUSUM, less than the threshold (3.65): a single outlier
    cannot fire the CUSUM on its own; two in a row can. (It adds at most ``lambda * S_CAP`` = 1.2 to the EWMA,
    under its limit (1.51), so it fires the EWMA only if the preceding turns were already leaning off-persona.)

Detectors
    * CUSUM: ``S_t = min(max(0, S_{t-1} + s_t - k_ref), 2h)``; fires when ``S_t > h``. ``k_ref`` = 1.0 (z units)
      is tuned to detect a sustained shift of about 2 standard deviations fastest (a persona switch moves the
      statistic by 2-4; bench/drift.py measured 1.0 faster than 0.5 at equal false-alarm rate); the cap at
      ``2h`` bounds the recovery time after a long drift (about ``h / k_ref`` in-control turns) and never
      matters before an alarm.
    * EWMA: ``e_t = lambda * s_t + (1 - lambda) * e_{t-1}`` (``lambda`` = 0.3); exported as the drift ``score``
      (z units: about 0 in persona, positive when drifting); fires when ``e_t > L``.

Calibration (no magic constants)
    ``arl0`` (default 5000) is the in-control average run length of the combined alarm: a stream that stays in
    persona raises on average one false alarm per ~5000 turns (so 500 stable turns almost never alarm).
    ``h`` and ``L`` are chosen by Monte Carlo (a vectorized numpy simulation of many in-control streams,
    < 1 s, cached per parameter set) so that each detector alone has the same ARL ``A`` and the union
    "CUSUM or EWMA" has ARL ``arl0``. The in-control ``s_t`` is simulated as N(0, 1) clipped at ``S_CAP``
    (the law implied by the construction above), or
    bootstrapped from observed in-persona statistics when ``null_samples`` are given.
    ``calibrate_threshold`` gives the CUSUM-alone threshold for a target ARL; with the defaults the combined
    scheme uses ``h`` ~ 3.65 and ``L`` ~ 1.51 (see ``thresholds``); the CUSUM alone at ARL 5000 would use
    h ~ 3.47. (For k_ref 0.5, ARL 1000: h ~ 5.03 alone; Siegmund's approximation gives 5.06.)
    The first call costs ~0.3 s: pre-warm at startup.

Alert latch
    Once a detector fires, ``alert`` stays true (and ``detector`` names the one that fired first, "cusum" or
    "ewma") until ``cooldown`` (default 5) consecutive turns in which neither detector is above its limit, or
    until ``reset``. When the latch clears the CUSUM restarts at 0, so the next false alarm is again ~arl0 away.

No persona
    With ``baseline=None`` the first ``warmup_turns`` (default 3) observations of the session form the
    reference (tone dimensions only) and are not scored: the detector then flags a session whose tone moves
    away from how it started. With only 3 reference turns the t-tails make it much less sensitive than with a
    persona; its false-alarm rate is exact only on average over sessions. The Monte-Carlo calibration of the
    limits lives in app/monitor/calibration.py.

Dispersion
    ``dispersion`` = 2 * RMS over dimensions of the per-dimension standard deviation over the last
    ``dispersion_window`` (default 10) turns, in [0, 1] (a dimension in [0, 1] has std <= 0.5). It catches a
    session that swings casual <-> robotic while its mean stays near the persona. It is reported, not alarmed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from app.monitor.calibration import S_CAP, calibrate_limits
from app.scoring.labels import DIMENSIONS

DEFAULT_K_REF = 1.0  # z units: CUSUM reference value, optimal for a ~2 sd sustained shift
DEFAULT_ARL0 = 5000.0  # in-control average run length of the combined alarm, in turns
DEFAULT_EWMA_LAMBDA = 0.3  # EWMA weight of the newest turn
DISTANCE_STD_FLOOR = 0.02  # in cosine-distance units (distance is in [0, 2])
DIMENSION_STD_FLOOR = 0.05  # in tone-dimension units ([0, 1])
CUSUM_CAP_FACTOR = 2.0  # CUSUM is capped at CUSUM_CAP_FACTOR * h

_STATE_VERSION = 1
_NORMAL = NormalDist()


# --------------------------------------------------------------------------------------------------- data types


@dataclass
class Observation:
    """One scored turn. ``persona_distance`` in [0, 2] (None without a persona); dimensions in [0, 1]."""

    persona_distance: float | None
    formality: float
    politeness: float
    warmth: float

    def dims(self) -> dict[str, float]:
        return {"formality": self.formality, "politeness": self.politeness, "warmth": self.warmth}


@dataclass
class Baseline:
    """Reference distribution of the signals: means and sample stds (ddof=1) over ``n`` exemplars.

    ``distance_mean``/``distance_std`` may be None (no distance signal). Floors are applied at use, not here.
    """

    distance_mean: float | None
    distance_std: float | None
    dims_mean: dict[str, float]
    dims_std: dict[str, float]
    n: int

    @classmethod
    def from_exemplars(cls, distances: list[float], dims: list[dict[str, float]]) -> Baseline:
        """Build from the exemplars' leave-one-out distances to the centroid and their tone dimensions.

        Both lists describe the same exemplars; ``distances`` may be empty (no distance signal).
        """
        if not dims and not distances:
            raise ValueError("a baseline needs at least one exemplar")
        d_mean = d_std = None
        if distances:
            arr = np.asarray(distances, dtype=float)
            d_mean, d_std = float(arr.mean()), _sample_std(arr)
        dims_mean: dict[str, float] = {}
        dims_std: dict[str, float] = {}
        for name in DIMENSIONS:
            values = [float(d[name]) for d in dims if name in d]
            if values:
                arr = np.asarray(values, dtype=float)
                dims_mean[name], dims_std[name] = float(arr.mean()), _sample_std(arr)
        n = len(dims) if dims else len(distances)
        return cls(d_mean, d_std, dims_mean, dims_std, n)

    def to_dict(self) -> dict:
        return {
            "distance_mean": self.distance_mean,
            "distance_std": self.distance_std,
            "dims_mean": dict(self.dims_mean),
            "dims_std": dict(self.dims_std),
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Baseline:
        return cls(
            data.get("distance_mean"),
            data.get("distance_std"),
            dict(data["dims_mean"]),
            dict(data["dims_std"]),
            int(data["n"]),
        )


@dataclass(frozen=True)
class DriftParams:
    """Detector settings; ``h`` and the EWMA limit are derived from ``k_ref``, ``ewma_lambda`` and ``arl0``."""

    k_ref: float = DEFAULT_K_REF
    arl0: float = DEFAULT_ARL0
    ewma_lambda: float = DEFAULT_EWMA_LAMBDA
    warmup_turns: int = 3
    dispersion_window: int = 10
    cooldown: int = 5

    def __post_init__(self):
        if not self.k_ref >= 0:
            raise ValueError("k_ref must be >= 0")
        if not self.arl0 > 1:
            raise ValueError("arl0 must be > 1")
        if not 0 < self.ewma_lambda <= 1:
            raise ValueError("ewma_lambda must be in (0, 1]")
        if self.warmup_turns < 1 or self.dispersion_window < 2 or self.cooldown < 0:
            raise ValueError("warmup_turns >= 1, dispersion_window >= 2 and cooldown >= 0 are required")


@dataclass
class DriftReport:
    """Result of one ``update``. ``score`` is the EWMA (z units), ``threshold`` the CUSUM's ``h``."""

    score: float
    alert: bool
    detector: str | None
    cusum: float
    threshold: float
    dispersion: float
    turns: int
    ewma_limit: float = field(default=0.0)

    def public(self) -> dict:
        return {
            "score": self.score,
            "alert": self.alert,
            "detector": self.detector,
            "cusum": self.cusum,
            "threshold": self.threshold,
            "ewma_limit": self.ewma_limit,
            "dispersion": self.dispersion,
            "turns": self.turns,
        }


# ------------------------------------------------------------------------------------------- per-turn statistic


def _sample_std(arr: np.ndarray) -> float:
    return float(arr.std(ddof=1)) if arr.size >= 2 else 0.0


def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` >= 1 and t >= 0 (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        if df == 1:
            return 2.0 * theta / math.pi
        term = total = math.cos(theta)
        for j in range(1, (df - 3) // 2 + 1):
            term *= cos2 * (2 * j) / (2 * j + 1)
            total += term
        return 2.0 / math.pi * (theta + sin * total)
    term = total = 1.0
    for j in range(1, (df - 2) // 2 + 1):
        term *= cos2 * (2 * j - 1) / (2 * j)
        total += term
    return sin * total


def _upper_tail(t: float, df: int | None) -> float:
    """P(T > t): Student's t with ``df`` degrees of freedom, or standard normal when ``df`` is None or large."""
    if df is None or df > 200:
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    two_sided = max(0.0, 1.0 - _t_abs_cdf(abs(t), df))
    return 0.5 * two_sided if t >= 0 else 1.0 - 0.5 * two_sided


def _combine(p_values: list[float]) -> float:
    """Sidak min-p of independent p-values mapped to a standard-normal score (large = anomalous), clipped."""
    m, p = len(p_values), min(max(min(p_values), 0.0), 1.0)
    q = 1.0 if p >= 1.0 else -math.expm1(m * math.log1p(-p))
    q = min(max(q, 1e-300), 1.0 - 1e-15)
    return max(-S_CAP, min(S_CAP, -_NORMAL.inv_cdf(q)))


def standardized_statistic(obs: Observation, baseline: Baseline) -> float | None:
    """The per-turn statistic ``s_t`` (N(0, 1) in control, see module docstring); None if no signal is usable.

    Useful to collect ``null_samples`` for calibration from turns known to be in persona.
    """
    n = max(int(baseline.n), 1)
    df = n - 1 if n >= 2 else None
    inflate = math.sqrt(1.0 + 1.0 / n)
    p_values = []
    if obs.persona_distance is not None and baseline.distance_mean is not None:
        scale = max((baseline.distance_std or 0.0) * inflate, DISTANCE_STD_FLOOR)
        p_values.append(_upper_tail((obs.persona_distance - baseline.distance_mean) / scale, df))
    for name, value in obs.dims().items():
        if name in baseline.dims_mean:
            scale = max(baseline.dims_std.get(name, 0.0) * inflate, DIMENSION_STD_FLOOR)
            p_values.append(2.0 * _upper_tail(abs(value - baseline.dims_mean[name]) / scale, df))
    return _combine(p_values) if p_values else None


def thresholds(params: DriftParams | None = None) -> tuple[float, float]:
    """(CUSUM h, EWMA limit) used by ``update`` for ``params``; call once at startup to pre-warm the cache."""
    params = params or DriftParams()
    return calibrate_limits(params.k_ref, params.ewma_lambda, params.arl0)


# ------------------------------------------------------------------------------------------------------- state


@dataclass
class DriftState:
    """One session's detector state. Stored as a JSON dict (``to_dict``); a stored dict of another version, or none,
    reads as a new session (``from_dict``). Keys other code keeps beside it (the replay's applied request ids) are
    not part of it and are not carried by ``update``."""

    turns: int = 0
    cusum: float = 0.0
    ewma: float = 0.0
    alert: bool = False
    detector: str | None = None  # the detector that fired first: "cusum" | "ewma"
    quiet: int = 0  # consecutive in-control turns since the last firing, while in alarm
    recent: list[list[float]] = field(default_factory=list)  # the last dispersion_window turns' dimensions
    self_ref: list[list[float]] = field(default_factory=list)  # the no-persona reference turns

    @classmethod
    def from_dict(cls, state: dict | None) -> DriftState:
        if not isinstance(state, dict) or state.get("v") != _STATE_VERSION:
            return cls()
        fresh = cls()
        for name in ("turns", "cusum", "ewma", "alert", "detector", "quiet"):
            setattr(fresh, name, state.get(name, getattr(fresh, name)))
        fresh.recent = [list(row) for row in state.get("recent", [])]
        fresh.self_ref = [list(row) for row in state.get("self_ref", [])]
        return fresh

    def to_dict(self) -> dict:
        return {
            "v": _STATE_VERSION,
            "turns": self.turns,
            "cusum": self.cusum,
            "ewma": self.ewma,
            "alert": self.alert,
            "detector": self.detector,
            "quiet": self.quiet,
            "recent": [list(row) for row in self.recent],
            "self_ref": [list(row) for row in self.self_ref],
        }

    def report(self, params: DriftParams | None = None) -> DriftReport:
        h, limit = thresholds(params)
        return DriftReport(
            score=float(self.ewma),
            alert=bool(self.alert),
            detector=self.detector,
            cusum=float(self.cusum),
            threshold=float(h),
            dispersion=_dispersion(self.recent),
            turns=int(self.turns),
            ewma_limit=float(limit),
        )


def reset(state: dict | None, rebaseline: bool = False) -> dict:
    """Clear the alarm and the detectors (e.g. after an operator acknowledged it); keep history.

    ``rebaseline`` also forgets the no-persona self-reference, so the next turns define a new "normal".
    """
    st = DriftState.from_dict(state)
    st.cusum, st.ewma, st.alert, st.detector, st.quiet = 0.0, 0.0, False, None, 0
    if rebaseline:
        st.self_ref = []
    return st.to_dict()


def _dispersion(recent: list[list[float]]) -> float:
    if len(recent) < 2:
        return 0.0
    stds = np.asarray(recent, dtype=float).std(axis=0)
    return float(min(1.0, 2.0 * math.sqrt(float(np.mean(stds**2)))))


def update(
    state: dict | None, obs: Observation, baseline: Baseline | None, params: DriftParams | None = None
) -> tuple[dict, DriftReport]:
    """Fold one turn into the session's state; returns the new state (a JSON-able dict) and the report.

    ``state`` None (or of an unknown version) starts a new session. The input state is not modified.
    """
    params = params or DriftParams()
    dims = [float(v) for v in obs.dims().values()]
    distance = obs.persona_distance
    if not all(math.isfinite(v) for v in dims) or (distance is not None and not math.isfinite(distance)):
        raise ValueError("observation values must be finite")
    h, limit = thresholds(params)
    st = DriftState.from_dict(state)
    st.turns += 1
    st.recent = [*st.recent, [min(1.0, max(0.0, v)) for v in dims]][-params.dispersion_window :]

    reference = baseline
    if reference is None:
        if len(st.self_ref) < params.warmup_turns:
            st.self_ref.append(dims)  # this turn is part of the reference: not scored
        else:
            rows = st.self_ref[: params.warmup_turns]
            reference = Baseline.from_exemplars([], [dict(zip(DIMENSIONS, row, strict=True)) for row in rows])
    s = standardized_statistic(obs, reference) if reference is not None else None

    if s is not None:
        lam = params.ewma_lambda
        st.cusum = min(max(0.0, st.cusum + s - params.k_ref), CUSUM_CAP_FACTOR * h)
        st.ewma = lam * s + (1.0 - lam) * st.ewma
        fired_cusum, fired_ewma = st.cusum > h, st.ewma > limit
        if st.alert:
            if fired_cusum or fired_ewma:
                st.quiet = 0
            else:
                st.quiet += 1
                if st.quiet >= params.cooldown:
                    st.alert, st.detector, st.quiet, st.cusum = False, None, 0, 0.0
        elif fired_cusum or fired_ewma:
            st.alert, st.detector, st.quiet = True, "cusum" if fired_cusum else "ewma", 0
    return st.to_dict(), st.report(params)


def report(state: dict | None, params: DriftParams | None = None) -> DriftReport:
    """The report of a stored state, without folding in a new turn."""
    return DriftState.from_dict(state).report(params)


def view(state: dict | None, params: DriftParams | None = None) -> dict:
    """The public report of a stored state (for read endpoints)."""
    return report(state, params).public()
