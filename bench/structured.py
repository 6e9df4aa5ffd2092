"""Structured output that finishes: the share of schema-valid, finished JSON objects at 256 tokens from the bundled
model (greedy), with the repetition guard inside JSON strings off, at 3 and at 4 tokens (app/engine/string_guard.py).

Each prompt asks for a small object of free-text fields, the kind of request where a small model loops inside one
string ("A cat is a cat, a cat is a cat, ...") until the length cap. A result counts when the answer parses, the
schema validates it and finish_reason is "stop". Prompts and schemas are written for this benchmark."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, machine, write

MAX_TOKENS = 256


def _obj(**fields: dict) -> dict:
    return {"type": "object", "properties": fields, "required": list(fields), "additionalProperties": False}


TEXT = {"type": "string"}
CASES = [
    ("Tell me a joke about cats.", _obj(setup=TEXT, punchline=TEXT)),
    ("Tell me a joke about programmers.", _obj(setup=TEXT, punchline=TEXT)),
    ("Write a haiku about autumn rain.", _obj(title=TEXT, lines={"type": "array", "items": TEXT})),
    ("Summarise this review: the blender is loud but crushes ice well.", _obj(summary=TEXT, sentiment=TEXT)),
    ("Describe a cosy cafe for a travel guide.", _obj(name=TEXT, description=TEXT, tip=TEXT)),
    ("Give me a recipe idea with lentils.", _obj(dish=TEXT, ingredients={"type": "array", "items": TEXT})),
    ("Triage this ticket: my parcel never arrived and support did not answer.", _obj(category=TEXT, reply=TEXT)),
    ("Invent a fantasy character.", _obj(name=TEXT, species=TEXT, backstory=TEXT)),
    ("Write a product description for a blue umbrella.", _obj(headline=TEXT, body=TEXT)),
    ("Explain photosynthesis to a child.", _obj(explanation=TEXT, fun_fact=TEXT)),
    ("Suggest a name and slogan for a bakery.", _obj(name=TEXT, slogan=TEXT)),
    ("Write a short motivational quote about running.", _obj(quote=TEXT, author=TEXT)),
    ("Describe the weather on a stormy night.", _obj(scene=TEXT, mood=TEXT)),
    ("Tell me a riddle about the moon.", _obj(riddle=TEXT, answer=TEXT)),
    ("Write an apology e-mail for a late delivery.", _obj(subject=TEXT, body=TEXT)),
    ("Give three tips for learning a language.", _obj(tips={"type": "array", "items": TEXT})),
]
SETTINGS = {"off": 0, "3-gram": 3, "4-gram": 4}


def run_setting(ngram: int, tmp: Path) -> dict:
    import jsonschema
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    settings = Settings(
        db_path=tmp / f"s{ngram}.db", adapter_root=tmp / "adapters", json_string_guard=ngram, score_responses=False
    )
    rows = []
    with TestClient(create_app(settings)) as client:
        for prompt, schema in CASES:
            body = {
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
            }
            t0 = time.perf_counter()
            r = client.post("/v1/chat/completions", json=body)
            seconds = time.perf_counter() - t0
            choice = r.json()["choices"][0]
            content, finish = choice["message"]["content"], choice["finish_reason"]
            try:
                jsonschema.validate(json.loads(content), schema)
                valid = True
            except (ValueError, jsonschema.ValidationError):
                valid = False
            rows.append(
                {
                    "prompt": prompt,
                    "finish_reason": finish,
                    "valid": valid,
                    "ok": valid and finish == "stop",
                    "completion_tokens": r.json()["usage"]["completion_tokens"],
                    "seconds": round(seconds, 2),
                    "content": content[:300],
                }
            )
    ok = sum(r["ok"] for r in rows)
    return {
        "ngram": ngram,
        "finished_valid": ok,
        "of": len(rows),
        "share": round(ok / len(rows), 3),
        "median_tokens": statistics.median(r["completion_tokens"] for r in rows),
        "rows": rows,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["settings"])
    shares = [100 * result["settings"][n]["share"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, shares, color=["#999", "#4a8", "#2a6"])
    for i, v in enumerate(shares):
        ax.text(i, v + 1, f"{v:.0f}%", ha="center")
    ax.set_ylim(0, 110)
    ax.set_ylabel("finished, schema-valid (%)")
    ax.set_title(f"Structured output at {MAX_TOKENS} tokens, {len(CASES)} prompts, greedy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = {name: run_setting(n, Path(tmp)) for name, n in SETTINGS.items()}
    result = {"max_tokens": MAX_TOKENS, "prompts": len(CASES), "settings": settings, "machine": machine()}
    write("structured", result)
    plot(result, RESULTS / "structured.png")
    return result


if __name__ == "__main__":
    out = run()
    print(json.dumps({k: (v["finished_valid"], v["median_tokens"]) for k, v in out["settings"].items()}, indent=2))
