#!/usr/bin/env bash
# The adapter study's training, in order: LoRA r4 (its step-10 checkpoint is the probe), the head selection from
# that probe's ΔW profile, then the sparse, DoRA, AdaLoRA and LoRA r16 runs. Logs: bench/results/tmp/study/logs.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
bench/study/train_all.sh lora-r4
if [ ! -f configs/study/sparse-heads.yaml ]; then
  .venv/bin/python -m bench.study.profiles select bench/results/tmp/study/checkpoints/lora-r4/checkpoint \
    configs/study/sparse-heads.json --template configs/study/lora-r4.yaml --config-out configs/study/sparse-heads.yaml \
    > bench/results/tmp/study/logs/select.log 2>&1
fi
bench/study/train_all.sh sparse-heads dora-r8 adalora-r8 lora-r16
