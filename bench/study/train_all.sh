#!/usr/bin/env bash
# Train the adapter study's methods one after another (CPU, torch threads = cores); logs in bench/results/tmp/study/logs (gitignored).
# Resumable: each config resumes from its checkpoint. Usage: bench/study/train_all.sh [config names...]
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
logs=bench/results/tmp/study/logs
mkdir -p "$logs"
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(lora-r4 lora-r16 dora-r8 adalora-r8 sparse-heads)
for name in "${names[@]}"; do
  out=$(grep '^output:' "configs/study/$name.yaml" | awk '{print $2}')
  if [ -f "$out/training_summary.json" ]; then echo "skip $name (done)"; continue; fi
  echo "$(date +%T) start $name"
  .venv/bin/python -m app.cli train-adapter --config "configs/study/$name.yaml" >"$logs/$name.log" 2>&1
  echo "$(date +%T) end $name rc=$?"
done
