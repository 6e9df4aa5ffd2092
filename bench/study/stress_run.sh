#!/usr/bin/env bash
# One stress-suite run of the study's bounded subset: OUT_NAME then adapters (name=path under models/adapters).
# Subset: the first 3 messages of each of the 10 styles, the first 6 sessions x 10 turns, greedy, 64 tokens.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
name=$1; shift
adapters=$(IFS=,; echo "$*")
exec .venv/bin/python -m app.cli eval --suite stress --adapters "$adapters" --persona support-friendly \
  --per-style 3 --sessions 6 --turns 10 --max-tokens 64 --out "bench/results/study/stress/$name"
