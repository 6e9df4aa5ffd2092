"""Adapter comparison report: `tonewatch eval`.

Builds the same serving stack the server uses (app.stack: model, quantization, head, engine, adapter registry,
scorer), sends every prompt through every requested adapter, scores every answer, simulates multi-turn sessions with
the drift detector, and writes ``report.json``, ``report.md`` and PNG plots. This module is the command line; the
work is split by stage: app.evaluation.report_run (drive the stack), report_summary (statistics), report_render
(markdown/JSON/PNG).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from app.evaluation.formatting import fmt as _f
from app.evaluation.formatting import pct as _pct
from app.evaluation.report_run import DEFAULT_OUT, evaluate


def load_prompts(path: str | Path) -> list[list[dict[str, str]]]:
    prompts = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if not row.get("messages"):
                    raise ValueError(f"{path}: every line needs a non-empty 'messages' list")
                prompts.append(row["messages"])
    return prompts


def build_parser() -> argparse.ArgumentParser:
    from app.cli import DefaultsHelpFormatter

    p = argparse.ArgumentParser(
        prog="tonewatch eval",
        description="Compare adapters on held-out prompts (`tonewatch eval --suite stress --help`: the stress suite).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--suite",
        choices=("report", "stress"),
        default="report",
        help="report: this comparison; stress: the tone-consistency stress suite (its own options)",
    )
    p.add_argument(
        "--adapters",
        required=True,
        help="comma-separated adapter names; 'base' (or the base model's name) is the model without an adapter",
    )
    p.add_argument(
        "--prompts", default="data/support/heldout_questions.jsonl", help="JSONL file with a 'messages' list per line"
    )
    p.add_argument("--sessions", type=int, default=4, help="simulated multi-turn sessions per adapter")
    p.add_argument("--turns", type=int, default=4, help="turns per session")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens generated per answer at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (reproducible)")
    p.add_argument("--seed", type=int, default=0, help="per-request seeds (seed + index) when sampling")
    p.add_argument("--limit", type=int, help="use only the first N prompts (default: all)")
    p.add_argument("--max-batch-size", type=int, help="engine batch size (default: the server setting)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (report.md, report.json, PNGs)")
    p.add_argument(
        "--adapter-root", help="folder the adapters (and manifest.json) live in (default: TONEWATCH_ADAPTER_ROOT)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    prompts = load_prompts(args.prompts)[: args.limit] if args.limit else load_prompts(args.prompts)
    report = asyncio.run(
        evaluate(
            adapters,
            prompts,
            args.sessions,
            args.turns,
            args.max_tokens,
            args.out,
            adapter_root=Path(args.adapter_root) if args.adapter_root else None,
            temperature=args.temperature,
            seed=args.seed,
            max_batch_size=args.max_batch_size,
            prompts_source=str(args.prompts),
        )
    )
    for name, s in report["adapters"].items():
        print(
            f"{name}: top label {s['top_label']} ({_pct(s['label_share'][s['top_label']])}), drift alerts "
            f"{s['sessions_alerted']}/{s['sessions']}, p50 {_f(s['latency_p50_s'], 2)} s, "
            f"collapsed {s['quality']['collapsed']}"
        )
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
