"""Personas: how a bot should sound, as a centroid in the style space plus a match radius calibrated on the
persona's own exemplars (leave-one-out distances), so "match" means "as close as its own examples are"."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.scoring.labels import DIMENSIONS
from app.scoring.model import StylePrediction, style_distance

# Radius = MARGIN x the 95th percentile of leave-one-out exemplar distances, never below FLOOR: with 5-30
# exemplars the empirical spread underestimates the true one, and a too-tight radius floods mismatch alerts.
MATCH_QUANTILE = 0.95
MATCH_MARGIN = 1.25
MATCH_FLOOR = 0.05


@dataclass
class Persona:
    name: str
    exemplars: list[str]
    description: str = ""
    target: dict[str, float] = field(default_factory=dict)
    source: str = "api"  # "file" (shipped under models/personas) or "api"
    centroid: np.ndarray | None = None
    threshold: float = 0.0
    loo_distances: list[float] = field(default_factory=list)
    exemplar_dims: list[dict[str, float]] = field(default_factory=list)
    exemplar_labels: list[str] = field(default_factory=list)  # the tone label of each exemplar

    def definition(self) -> dict:
        return {"name": self.name, "description": self.description, "exemplars": self.exemplars, "target": self.target}

    def public(self) -> dict:
        spread = {d: round(float(np.mean([e[d] for e in self.exemplar_dims])), 4) for d in DIMENSIONS}
        return {
            **self.definition(),
            "source": self.source,
            "match_threshold": round(self.threshold, 4),
            "exemplar_distance_p50": round(float(np.median(self.loo_distances)), 4),
            "exemplar_dimension_means": spread,
        }

    def distance(self, style: np.ndarray) -> float:
        assert self.centroid is not None
        return style_distance(style, self.centroid)


def _centroid(styles: np.ndarray, target: dict[str, float], dim_weights: list[float]) -> np.ndarray:
    centroid = styles.mean(axis=0)
    for i, dim in enumerate(DIMENSIONS):
        if dim in target:  # an explicit target overrides what the exemplars imply for that dimension
            centroid[i] = (target[dim] - 0.5) * 2.0 * dim_weights[i]
    return centroid


def calibrate(persona: Persona, predictions: list[StylePrediction], dim_weights: list[float]) -> Persona:
    styles = np.stack([p.style for p in predictions])
    persona.centroid = _centroid(styles, persona.target, dim_weights)
    loo = []
    for i in range(len(styles)):
        others = np.delete(styles, i, axis=0)
        loo.append(style_distance(styles[i], _centroid(others, persona.target, dim_weights)))
    persona.loo_distances = loo
    persona.threshold = max(MATCH_FLOOR, MATCH_MARGIN * float(np.quantile(loo, MATCH_QUANTILE)))
    persona.exemplar_dims = [p.dims for p in predictions]
    persona.exemplar_labels = [p.label for p in predictions]
    return persona


def load_shipped(folder: Path) -> list[Persona]:
    personas = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        personas.append(
            Persona(
                name=data["name"],
                exemplars=data["exemplars"],
                description=data.get("description", ""),
                target=data.get("target") or {},
                source="file",
            )
        )
    return personas
