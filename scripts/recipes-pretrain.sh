#!/usr/bin/env bash
# Pretrains the small GPT the fine-tuning recipe starts from (docs/RECIPES.md, section 1): configs/recipes/
# pretrain-gpt-tiny.json on Tiny Shakespeare with the project's own trainer, seeded, so the checkpoint is the same
# bits on every run, whatever RAYON_NUM_THREADS (the CPU backend cuts its work by the shapes, not the threads:
# tests/invariants.rs, tests/cpu_vs_reference.rs), on one machine (another CPU's gemm path may round differently).
#   scripts/recipes-pretrain.sh [OUT]   (default: www/data/pretrained-gpt-tiny.safetensors, the shipped checkpoint)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-www/data/pretrained-gpt-tiny.safetensors}"
mkdir -p "$(dirname "$out")"
cargo run --release --quiet --bin tp -- train --config configs/recipes/pretrain-gpt-tiny.json \
  --data www/data/tinyshakespeare.txt --out "$out" --log-every 100 --sample-tokens 200
