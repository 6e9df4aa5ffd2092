#!/usr/bin/env bash
# One method's run of the full stress suite (every style's messages, every session, every turn; greedy, 64 tokens):
# OUT_NAME then the --adapters spec (name=path+path under models/adapters for a method's seeds, or base).
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m app.cli eval --suite stress --adapters "$2" --persona support-friendly --max-tokens 64 \
  --out "bench/results/study/stress/$1"
