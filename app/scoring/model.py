"""The trained style head: features -> tone label, formality/politeness/warmth, and a style-space vector.

The artifact is plain numpy arrays (npz, loaded with allow_pickle=False) plus a JSON header, so loading it can
never execute code. Inference is a few matrix products; the sentence encoder dominates the cost.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.scoring.features import FEATURE_NAMES, extract_many
from app.scoring.labels import DIMENSIONS, LABELS

Z_CLIP = 6.0  # standardized features are clipped: one rare marker must not outvote everything else


@dataclass
class StylePrediction:
    label: str
    probs: dict[str, float]
    dims: dict[str, float]
    style: np.ndarray  # style-space vector (centered; compare with cosine)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class StyleHead:
    """Linear heads over [standardized stylistic features, tone-subspace projection of the sentence embedding]."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict):
        if meta.get("feature_names") != FEATURE_NAMES:
            raise ValueError("style artifact was trained with a different feature set; run `tonewatch train-style`")
        self.meta = meta
        self.feat_mean, self.feat_std = arrays["feat_mean"], arrays["feat_std"]
        self.proj, self.proj_mean, self.proj_std = arrays["proj"], arrays["proj_mean"], arrays["proj_std"]
        self.dim_w, self.dim_b = arrays["dim_w"], arrays["dim_b"]
        self.lab_w, self.lab_b = arrays["lab_w"], arrays["lab_b"]
        self.style_weights = meta["style_weights"]

    @classmethod
    def load(cls, folder: Path) -> StyleHead:
        meta = json.loads((folder / "style_head.json").read_text())
        with np.load(folder / "style_head.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return cls(arrays, meta)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / "style_head.npz",
            feat_mean=self.feat_mean,
            feat_std=self.feat_std,
            proj=self.proj,
            proj_mean=self.proj_mean,
            proj_std=self.proj_std,
            dim_w=self.dim_w,
            dim_b=self.dim_b,
            lab_w=self.lab_w,
            lab_b=self.lab_b,
        )
        (folder / "style_head.json").write_text(json.dumps(self.meta, indent=2) + "\n")

    def design(self, features: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        f = np.clip((features - self.feat_mean) / self.feat_std, -Z_CLIP, Z_CLIP)
        p = (embeddings @ self.proj - self.proj_mean) / self.proj_std
        return np.concatenate([f, p], axis=1).astype(np.float32)

    def predict_design(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dims = np.clip(x @ self.dim_w + self.dim_b, 0.0, 1.0)
        probs = _softmax(x @ self.lab_w + self.lab_b)
        return dims, probs

    def style_vectors(
        self, x: np.ndarray, dims: np.ndarray, probs: np.ndarray, proj_weight: float | None = None
    ) -> np.ndarray:
        """Style space: tone dimensions and label probabilities (centered) plus the tone-subspace projection.
        Centering matters: cosine between uncentered positive vectors says little. ``proj_weight`` overrides the
        artifact's projection weight (evaluation compares weights on one fitted head)."""
        w = self.style_weights
        n_feat, n_proj = self.feat_mean.shape[0], self.proj.shape[1]  # the design's own widths
        parts = [
            (dims - 0.5) * 2.0 * np.asarray(w["dims"], dtype=np.float32),
            (probs - 1.0 / len(LABELS)) * w["probs"],
            x[:, n_feat : n_feat + n_proj] * (w["proj"] if proj_weight is None else proj_weight),
        ]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def predict(self, texts: list[str], embeddings: np.ndarray) -> list[StylePrediction]:
        x = self.design(extract_many(texts), embeddings)
        dims, probs = self.predict_design(x)
        styles = self.style_vectors(x, dims, probs)
        out = []
        for i in range(len(texts)):
            out.append(
                StylePrediction(
                    label=LABELS[int(np.argmax(probs[i]))],
                    probs={label: round(float(p), 4) for label, p in zip(LABELS, probs[i], strict=True)},
                    dims={d: round(float(v), 4) for d, v in zip(DIMENSIONS, dims[i], strict=True)},
                    style=styles[i],
                )
            )
        return out


def graded_style_vectors(grades: np.ndarray, labels: list[str], style_weights: dict) -> np.ndarray:
    """The style space's tone part built from graded truth (grades in [0, 1], one-hot labels) instead of
    predictions: what a persona distance between two texts should follow."""
    onehot = np.eye(len(LABELS))[[LABELS.index(label) for label in labels]]
    return np.concatenate(
        [
            (grades - 0.5) * 2.0 * np.asarray(style_weights["dims"]),
            (onehot - 1.0 / len(LABELS)) * style_weights["probs"],
        ],
        axis=1,
    )


def style_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Persona distance: Euclidean in the style space, halved so a full swing of one unit-weight dimension is 1.
    (Cosine is unstable for mid-range styles, whose centered vectors sit near the origin.)"""
    return float(np.linalg.norm(a - b) / 2.0)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0.0:
        return 1.0
    return float(1.0 - np.dot(a, b) / denom)


def head_version(style_dir: str | Path) -> str:
    """Short content hash of the style head in ``style_dir``: which scorer a result was scored with."""
    digest = hashlib.sha256()
    for name in ("style_head.json", "style_head.npz"):
        path = Path(style_dir) / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
