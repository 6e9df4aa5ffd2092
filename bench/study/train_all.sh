#!/usr/bin/env bash
# Train the adapter study's runs one after another (CPU, torch threads = cores), each as NAME@SEED: configs/study/NAME.yaml
# with that seed, written to models/adapters/study/NAME/seedSEED. Logs in bench/results/tmp/study/logs (gitignored).
# Resumable: a finished run (training_summary.json present) is skipped, an interrupted one resumes from its
# checkpoint (every 20 steps). Usage: bench/study/train_all.sh lora-r8@13 dora-r8@13 ...
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
logs=bench/results/tmp/study/logs
mkdir -p "$logs"
for run in "$@"; do
  name=${run%@*}
  seed=${run#*@}
  out=models/adapters/study/$name/seed$seed
  if [ -f "$out/training_summary.json" ]; then echo "skip $run (done)"; continue; fi
  echo "$(date +%T) start $run"
  .venv/bin/python -m app.cli train-adapter --config "configs/study/$name.yaml" --seed "$seed" --output "$out" \
    --name "$name-s$seed" --checkpoint-dir "bench/results/tmp/study/checkpoints/$name-s$seed/checkpoint" \
    >>"$logs/$name-s$seed.log" 2>&1
  echo "$(date +%T) end $run rc=$?"
done
