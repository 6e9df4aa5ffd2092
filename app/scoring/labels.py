"""The tone vocabulary, defined once: the four labels and the three graded dimensions."""

from __future__ import annotations

LABELS: tuple[str, ...] = ("formal", "friendly", "casual", "robotic")
DIMENSIONS: tuple[str, ...] = ("formality", "politeness", "warmth")
