"""The records of a `tonewatch eval` run: one answer (text, timings, tone, persona distances, quality) and one
simulated session (its answers and the drift detector's report per turn). The run module fills them, the summary
module reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.scoring.labels import DIMENSIONS


@dataclass
class Answer:
    adapter: str
    messages: list[dict[str, str]]
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    total_s: float
    ttft_s: float
    tone: dict[str, Any] = field(default_factory=dict)  # label, probs, dims (no persona fields)
    personas: dict[str, dict[str, Any]] = field(default_factory=dict)  # persona -> {distance, match}
    quality: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionResult:
    plan: list[str]  # adapter per turn
    persona: str | None
    answers: list[Answer]
    drift: list[dict[str, Any]]  # DriftReport.public() per turn

    @property
    def alerted(self) -> bool:
        return any(d["alert"] for d in self.drift)

    @property
    def first_alert_turn(self) -> int | None:
        """1-based turn of the first alert."""
        return next((i + 1 for i, d in enumerate(self.drift) if d["alert"]), None)

    def public(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "persona": self.persona,
            "alerted": self.alerted,
            "first_alert_turn": self.first_alert_turn,
            "final_dispersion": self.drift[-1]["dispersion"] if self.drift else None,
            "turns": [
                {
                    "adapter": a.adapter,
                    "user": a.messages[-1]["content"],
                    "answer": a.text,
                    "label": a.tone.get("label"),
                    **{d: a.tone.get(d) for d in DIMENSIONS},
                    "persona_distance": a.personas.get(self.persona, {}).get("distance") if self.persona else None,
                    "drift": d,
                }
                for a, d in zip(self.answers, self.drift, strict=True)
            ],
        }
