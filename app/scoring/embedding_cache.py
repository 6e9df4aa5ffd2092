"""A content-addressed cache of sentence embeddings for training (models/cache/, git-ignored).

Re-training the heads then takes seconds: only texts never embedded before go through MiniLM. Keys are hashes of
the exact (normalised) text, so a changed normaliser or corpus re-embeds just what changed. Pickle-free npz.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def cached_encode(texts: list[str], encode, path: Path) -> np.ndarray:
    """Embeddings of texts (rows in order), computing with `encode(list[str]) -> ndarray` only the missing ones."""
    store: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            store = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    keys = [_key(t) for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in store}.items())
    if missing:
        vectors = encode([t for _, t in missing])
        store.update({k: v for (k, _), v in zip(missing, vectors, strict=True)})
        path.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(store)
        np.savez(path, keys=np.array(names), vectors=np.stack([store[k] for k in names]).astype(np.float32))
    return np.stack([store[k] for k in keys]).astype(np.float32)
