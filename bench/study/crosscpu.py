"""Does a stress run on this machine reproduce one made on another CPU? Compares the answers of a (subset) run with
the same adapters' answers in a reference run: single messages by customer text, session turns by session and turn.
Greedy decoding should give the same words; the study's arms were scored on two CPUs (docs/study.md, Limits).

    python -m bench.study.crosscpu NEW_REPORT REFERENCE_REPORT [--out bench/results/study/crosscpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def compare(new: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"adapters": {}}
    for name, rows in new["rows"].items():
        ref = reference["rows"][name]
        by_customer = {r["customer"]: r for r in ref["single"]}
        single = [(r, by_customer[r["customer"]]) for r in rows["single"]]
        turns = [
            (x, y)
            for k, session in enumerate(rows["sessions"])
            for x, y in zip(session, ref["sessions"][k], strict=False)
            if x["customer"] == y["customer"]
        ]
        out["adapters"][name] = {
            kind: {
                "compared": len(pairs),
                "same_answer": sum(a["answer"] == b["answer"] for a, b in pairs),
                "same_label": sum(a["label"] == b["label"] for a, b in pairs),
            }
            for kind, pairs in (("single", single), ("session_turns", turns))
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study.crosscpu")
    p.add_argument("new")
    p.add_argument("reference")
    p.add_argument("--out", default="bench/results/study/crosscpu.json")
    args = p.parse_args(argv)
    new, reference = (json.loads(Path(f).read_text()) for f in (args.new, args.reference))
    result = {
        "new": {"report": args.new, "cpu": new["meta"].get("cpu"), "created": new["meta"]["created"]},
        "reference": {
            "report": args.reference,
            "cpu": reference["meta"].get("cpu"),
            "created": reference["meta"]["created"],
        },
        **compare(new, reference),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
