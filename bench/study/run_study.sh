#!/usr/bin/env bash
# The adapter study end to end (issue 28), resumable at every stage: a finished adapter, selection, stress run or
# profile is skipped, an interrupted training run resumes from its last checkpoint (every 20 steps). Run it as the
# only heavy job on the machine. Logs: bench/results/tmp/study/logs (gitignored).
#   1. the ~0.92M-parameter methods and the control, then LoRA r4, each with seeds 13 and 14 (seed-interleaved, so
#      that an interruption leaves complete pairs);
#   2. the sparse method's heads, from the ΔW profile of LoRA r4 seed 13 at the full budget;
#   3. sparse heads, LoRA r16, LoRA r1 (q/v) and QLoRA (needs .venv/bin/pip install -e '.[study]');
#   4. the full stress suite per method (both seeds in one run), the ΔW profiles, the report.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
logs=bench/results/tmp/study/logs
mkdir -p "$logs"
SEEDS=${SEEDS:-"13 14"}
runs() { for s in $SEEDS; do for m in "$@"; do printf '%s@%s ' "$m" "$s"; done; done; }

# shellcheck disable=SC2046
bench/study/train_all.sh $(runs lora-r8 dora-r8 adalora-r8) $(runs lora-r4)
if [ ! -f configs/study/sparse-heads.yaml ]; then
  .venv/bin/python -m bench.study.profiles select models/adapters/study/lora-r4/seed13 configs/study/sparse-heads.json \
    --template configs/study/lora-r4.yaml --config-out configs/study/sparse-heads.yaml >"$logs/select.log" 2>&1
fi
# shellcheck disable=SC2046
bench/study/train_all.sh $(runs sparse-heads lora-r16 lora-r1 qlora-r8)

for method in lora-r8 dora-r8 adalora-r8 lora-r4 sparse-heads lora-r16 lora-r1 base qlora-r8; do
  [ -f "bench/results/study/stress/$method/report.json" ] && continue
  if [ "$method" = base ]; then spec=base; else
    paths=$(for s in $SEEDS; do [ -f "models/adapters/study/$method/seed$s/adapter_config.json" ] && printf '%s+' "study/$method/seed$s"; done)
    [ -z "$paths" ] && continue
    spec="$method=${paths%+}"
  fi
  echo "$(date +%T) stress $method"
  bench/study/stress_run.sh "$method" "$spec" >"$logs/stress-$method.log" 2>&1
done
rm -f bench/results/study/profiles.json  # profile adds to the file: start from this run's adapters only
.venv/bin/python -m bench.study.profiles profile bench/results/study/profiles.json \
  $(for d in models/adapters/study/*/seed*/; do m=$(basename "$(dirname "$d")"); printf '%s-%s=%s ' "$m" "$(basename "$d")" "${d%/}"; done) \
  >"$logs/profiles.log" 2>&1
.venv/bin/python -m bench.study.report
