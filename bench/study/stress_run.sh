#!/usr/bin/env bash
# One method's run of the full stress suite (every style's messages, every session, every turn; greedy, 64 tokens):
# OUT_NAME then the --adapters spec (name=path+path under models/adapters for a method's seeds, or base). A method's
# seeds run together (--together: their rows share the engine's batches) with up to STRESS_BATCH rows per forward.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
# the study's judge is scorer v2 (the default when it ran); its report refuses runs scored by different heads
export TONEWATCH_SCORER=${TONEWATCH_SCORER:-v2}
export TONEWATCH_MAX_BATCH_SIZE=${STRESS_BATCH:-32}
# a session re-reads its whole history each turn (up to ~2,000 tokens, ~90 MB of keys/values): room for every
# session of the run, or each turn would prefill it all again (measured: prefill was 3/4 of the run)
export TONEWATCH_PREFIX_CACHE_MB=${STRESS_PREFIX_MB:-4096}
exec .venv/bin/python -m app.cli eval --suite stress --adapters "$2" --persona support-friendly --max-tokens 64 --together \
  --out "bench/results/study/stress/$1"
