"""`tonewatch train-style`: fit the style head on the project's own tone corpus (data/style/*.jsonl).

Reproducible (seeded split and solvers), prints held-out metrics, writes models/style/ and its model card metrics.
Held-out checks mirror how the scorer is judged: Spearman of formality and politeness against graded ratings,
label accuracy, and formality style-similarity quadruples by cosine in the style space (vs raw MiniLM cosine).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.scoring.features import FEATURE_NAMES, extract_many
from app.scoring.model import ARTIFACT_DIR, DIMENSIONS, LABELS, StyleHead

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "style"
PROJ_DIMS = 24
STYLE_WEIGHTS = {"dims": [1.6, 1.0, 1.0], "probs": 1.0, "proj": 0.12}


def load_corpus(folder: Path = DATA_DIR) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def held_out(row: dict, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{row['set']}".encode()).digest()
    return digest[0] / 256.0 < fraction


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def tone_subspace(embeddings: np.ndarray, rows: list[dict], k: int) -> np.ndarray:
    """Directions along which the same message varies when only its tone changes (within-set deviations)."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if row["kind"] == "rewrite":
            groups.setdefault(row["set"], []).append(i)
    deviations = [embeddings[idx] - embeddings[idx].mean(axis=0) for idx in groups.values() if len(idx) > 1]
    stacked = np.concatenate(deviations)
    _, _, vt = np.linalg.svd(stacked, full_matrices=False)
    return vt[:k].T.astype(np.float32)


def quadruple_accuracy(vectors: np.ndarray, rows: list[dict], seed: int, n: int = 4000) -> float:
    """STEL-style: anchors (formal A1, casual A2) from one set, (formal S1, casual S2) from another; correct when
    cos(A1,S1)+cos(A2,S2) > cos(A1,S2)+cos(A2,S1)."""
    by_set: dict[str, dict[str, int]] = {}
    for i, row in enumerate(rows):
        if row["kind"] == "rewrite":
            by_set.setdefault(row["set"], {})[row["label"]] = i
    pairs = [(d["formal"], d["casual"]) for d in by_set.values() if "formal" in d and "casual" in d]
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    rng = random.Random(seed)
    correct = total = 0
    for _ in range(n):
        (a1, a2), (s1, s2) = rng.sample(pairs, 2)
        if rng.random() < 0.5:
            s1, s2 = s2, s1
            truth = False
        else:
            truth = True
        same = unit[a1] @ unit[s1] + unit[a2] @ unit[s2]
        swapped = unit[a1] @ unit[s2] + unit[a2] @ unit[s1]
        correct += int((same > swapped) == truth)
        total += 1
    return correct / total


def cross_genre_quadruples(vectors: np.ndarray, rows: list[dict], seed: int, n: int = 4000) -> float:
    """Quadruples from standalone graded sentences of different genres: one clearly formal (>=0.75), one clearly
    informal (<=0.3) per side; content differs everywhere, so only style can decide."""
    formal = [i for i, r in enumerate(rows) if r["kind"] == "single" and r["formality"] >= 0.75]
    informal = [i for i, r in enumerate(rows) if r["kind"] == "single" and r["formality"] <= 0.3]
    if len(formal) < 2 or len(informal) < 2:
        return float("nan")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    rng = random.Random(seed)
    correct = 0
    for _ in range(n):
        a1, s1 = rng.sample(formal, 2)
        a2, s2 = rng.sample(informal, 2)
        truth = rng.random() < 0.5
        if not truth:
            s1, s2 = s2, s1
        same = unit[a1] @ unit[s1] + unit[a2] @ unit[s2]
        swapped = unit[a1] @ unit[s2] + unit[a2] @ unit[s1]
        correct += int((same > swapped) == truth)
    return correct / n


def train(seed: int = 13, holdout: float = 0.2, out_dir: Path = ARTIFACT_DIR, embedder=None) -> dict:
    from sklearn.linear_model import LogisticRegression, Ridge

    from app.scoring.embedder import Embedder

    np.random.seed(seed)
    steps = tqdm(total=6, desc="train-style", unit="step")
    rows = load_corpus()
    texts = [r["text"] for r in rows]
    embedder = embedder or Embedder()
    embeddings = embedder.encode(texts)
    steps.update()
    features = extract_many(texts)
    steps.update()
    test_mask = np.array([held_out(r, holdout, seed) for r in rows])
    train_idx, test_idx = np.where(~test_mask)[0], np.where(test_mask)[0]
    train_rows = [rows[i] for i in train_idx]

    proj = tone_subspace(embeddings[train_idx], train_rows, PROJ_DIMS)
    projected = embeddings @ proj
    feat_mean = features[train_idx].mean(0)
    feat_std = features[train_idx].std(0) + 1e-3
    proj_mean = projected[train_idx].mean(0)
    proj_std = projected[train_idx].std(0) + 1e-6
    steps.update()

    x = np.concatenate([(features - feat_mean) / feat_std, (projected - proj_mean) / proj_std], 1).astype(np.float32)
    y_dims = np.array([[r[d] for d in DIMENSIONS] for r in rows], dtype=np.float32)
    y_lab = np.array([LABELS.index(r["label"]) for r in rows])
    ridge = Ridge(alpha=30.0).fit(x[train_idx], y_dims[train_idx])
    steps.update()
    logit = LogisticRegression(C=0.3, max_iter=3000, random_state=seed).fit(x[train_idx], y_lab[train_idx])
    steps.update()

    meta = {
        "feature_names": FEATURE_NAMES,
        "labels": LABELS,
        "dimensions": DIMENSIONS,
        "proj_dims": PROJ_DIMS,
        "style_weights": STYLE_WEIGHTS,
        "seed": seed,
        "holdout_fraction": holdout,
        "train_rows": len(train_idx),
        "heldout_rows": len(test_idx),
        "data_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16],
    }
    head = StyleHead(
        {
            "feat_mean": feat_mean,
            "feat_std": feat_std,
            "proj": proj,
            "proj_mean": proj_mean,
            "proj_std": proj_std,
            "dim_w": ridge.coef_.T.astype(np.float32),
            "dim_b": ridge.intercept_.astype(np.float32),
            "lab_w": logit.coef_.T.astype(np.float32),
            "lab_b": logit.intercept_.astype(np.float32),
        },
        meta,
    )
    metrics = evaluate(head, rows, embeddings, features, test_idx, seed)
    meta["heldout_metrics"] = metrics
    head.save(out_dir)
    steps.update()
    steps.close()
    return metrics


def evaluate(head: StyleHead, rows, embeddings, features, test_idx, seed) -> dict:
    x = head.design(features, embeddings)
    dims, probs = head.predict_design(x)
    styles = head.style_vectors(x, dims, probs)
    test_rows = [rows[i] for i in test_idx]
    metrics: dict[str, float] = {}
    for dim_i, dim in enumerate(DIMENSIONS):
        truth = np.array([r[dim] for r in test_rows])
        metrics[f"spearman_{dim}_all"] = spearman(dims[test_idx, dim_i], truth)
    graded_f = [i for i in test_idx if rows[i]["kind"] == "single"]
    graded_p = [i for i in test_idx if rows[i]["kind"] == "request"]
    metrics["spearman_formality_graded_sentences"] = spearman(
        dims[graded_f, 0], np.array([rows[i]["formality"] for i in graded_f])
    )
    metrics["spearman_politeness_requests"] = spearman(
        dims[graded_p, 1], np.array([rows[i]["politeness"] for i in graded_p])
    )
    rewrites = [i for i in test_idx if rows[i]["kind"] == "rewrite"]
    pred = np.argmax(probs[rewrites], 1)
    metrics["label_accuracy_rewrites"] = float(np.mean(pred == [LABELS.index(rows[i]["label"]) for i in rewrites]))
    sub_rows = [rows[i] for i in rewrites]
    metrics["quadruples_style_space"] = quadruple_accuracy(styles[rewrites], sub_rows, seed)
    metrics["quadruples_raw_minilm"] = quadruple_accuracy(embeddings[rewrites], sub_rows, seed)
    singles = [rows[i] for i in graded_f]
    metrics["cross_genre_quadruples_style_space"] = cross_genre_quadruples(styles[graded_f], singles, seed)
    metrics["cross_genre_quadruples_raw_minilm"] = cross_genre_quadruples(embeddings[graded_f], singles, seed)
    return {k: round(v, 4) for k, v in metrics.items()}
