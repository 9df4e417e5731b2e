#!/usr/bin/env bash
# The side-by-side of docs/RECIPES.md section 1: for each task, fine-tuning from scratch vs from the pretrained small
# GPT (scripts/recipes-pretrain.sh), with λ = 0 and λ = 0.5, at equal steps, seed and hyper-parameters.
#   scripts/recipes-finetune-compare.sh [PRETRAINED] [STEPS] [SEED]
# Writes each run's JSON lines to target/recipes/ft-<task>-<start>-<λ>-s<SEED>.jsonl and prints one summary row per
# run (the held-out figures at the last step).
set -euo pipefail
cd "$(dirname "$0")/.."
pre="${1:-www/data/pretrained-gpt-tiny.safetensors}"
steps="${2:-300}"
seed="${3:-1}"
[ -f "$pre" ] || scripts/recipes-pretrain.sh "$pre"
cargo build --release --quiet --bin tp
mkdir -p target/recipes
tp=target/recipes/tp   # a copy: a rebuild while this runs does not change the binary under it
cp "${CARGO_TARGET_DIR:-target}/release/tp" "$tp"
for task in speaker verse_prose; do
  for start in scratch pretrained; do
    for lam in 0 0.5; do
      if [ "$start" = scratch ]; then from=(--config "configs/recipes/finetune-${task/_/-}.json"); else from=(--checkpoint "$pre"); fi
      log="target/recipes/ft-$task-$start-$lam-s$seed.jsonl"
      "$tp" finetune "${from[@]}" --task "$task" --aux-lm "$lam" --steps "$steps" --eval-every 50 --seed "$seed" > "$log"
      tail -n 1 "$log" | python3 -c "import json,sys; r=json.load(sys.stdin); print('$task', '$start', '$lam', 'seed $seed', r['step'], \
        'val_accuracy %.3f baseline %.3f val_task_loss %.3f val_lm_loss %.3f train_accuracy %.3f %.0f s' % \
        (r['val_accuracy'], r['baseline'], r['val_task_loss'], r['val_lm_loss'], r['accuracy'], r['elapsed_s']))"
    done
  done
done
