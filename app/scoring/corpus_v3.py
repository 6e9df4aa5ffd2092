"""The v3 tone corpus: minimal-pair groups (data/style/v3/RUBRIC.md), one situation as a base text plus one rewrite
per style feature. Loading and the checks its rubric states; `python -m app.scoring.corpus_v3 FILE...` prints the
problems of each file (exit 1 if any)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

KEYS = (
    "base",
    "formality_up",
    "formality_down",
    "politeness_up",
    "politeness_down",
    "warmth_up",
    "warmth_down",
    "contraction",
    "casing",
    "terse",
)
LABELS = ("formal", "friendly", "casual", "robotic")
DIMENSIONS = ("formality", "politeness", "warmth")
VOICES = tuple(f"v{i}" for i in range(1, 7))
V3_DIR = Path(__file__).resolve().parents[2] / "data" / "style" / "v3"
_ID = re.compile(r"^(?P<register>[a-z_]+)-(?P<n>\d{3})$")


@dataclass(frozen=True)
class Text:
    group: str
    register: str
    voice: str
    key: str
    text: str
    formality: float
    politeness: float
    warmth: float
    label: str


def _words(text: str) -> int:
    return len(text.split())


def check_group(group: dict, register: str) -> list[str]:
    """The rubric's rules for one group; returns the problems (empty when it is fine)."""
    gid = group.get("id", "?")
    problems: list[str] = []
    m = _ID.match(str(gid))
    if not m or m["register"] != register:
        problems.append(f"{gid}: id must be {register}-NNN")
    if group.get("register") != register:
        problems.append(f"{gid}: register {group.get('register')!r} != file's {register!r}")
    if group.get("voice") not in VOICES:
        problems.append(f"{gid}: voice must be one of {VOICES}")
    if not str(group.get("situation", "")).strip():
        problems.append(f"{gid}: situation missing")
    texts = group.get("texts")
    if not isinstance(texts, list):
        return [*problems, f"{gid}: texts must be a list"]
    keys = [t.get("key") for t in texts]
    if tuple(keys) != KEYS:
        problems.append(f"{gid}: keys must be exactly {KEYS} in that order, got {keys}")
    seen: set[str] = set()
    for t in texts:
        key, text = t.get("key"), str(t.get("text", ""))
        if not text.strip():
            problems.append(f"{gid}/{key}: empty text")
        if text in seen:
            problems.append(f"{gid}/{key}: same text as another key")
        seen.add(text)
        for d in DIMENSIONS:
            v = t.get(d)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1 or abs(v * 20 - round(v * 20)) > 1e-6:
                problems.append(f"{gid}/{key}: {d} must be a multiple of 0.05 in [0, 1], got {v!r}")
        if t.get("label") not in LABELS:
            problems.append(f"{gid}/{key}: label must be one of {LABELS}")
    by_key = {t.get("key"): t for t in texts}
    base, terse = by_key.get("base"), by_key.get("terse")
    if base and not 8 <= _words(str(base.get("text", ""))) <= 120:
        problems.append(f"{gid}: base has {_words(str(base.get('text', '')))} words (8-120)")
    if base and terse and _words(str(terse.get("text", ""))) >= _words(str(base.get("text", ""))):
        problems.append(f"{gid}: terse is not shorter than base")
    return problems


def check_file(path: Path) -> list[str]:
    register = path.stem
    problems: list[str] = []
    ids: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            group = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}:{n}: not JSON ({exc})")
            continue
        if group.get("id") in ids:
            problems.append(f"{path.name}:{n}: duplicate id {group.get('id')}")
        ids.add(group.get("id"))
        problems.extend(f"{path.name}:{n}: {p}" for p in check_group(group, register))
    return problems


def load_texts(folder: Path = V3_DIR) -> list[Text]:
    """Every text of every group in the folder's *.jsonl, in file then line order."""
    out: list[Text] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            g = json.loads(line)
            for t in g["texts"]:
                out.append(
                    Text(
                        group=g["id"],
                        register=g["register"],
                        voice=g["voice"],
                        key=t["key"],
                        text=t["text"],
                        formality=float(t["formality"]),
                        politeness=float(t["politeness"]),
                        warmth=float(t["warmth"]),
                        label=t["label"],
                    )
                )
    return out


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])] or sorted(V3_DIR.glob("*.jsonl"))
    bad = 0
    for path in paths:
        problems = check_file(path)
        groups = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        print(f"{path}: {groups} groups, {len(problems)} problems")
        for p in problems[:50]:
            print("  " + p)
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
