#!/usr/bin/env bash
# Trains every preset in configs/ to its configured step count and prints its final validation loss and demo
# (a sample, mask fills, or the exact-match rate of task decodings). ~8 min on 2 cores. The presets marked GPU
# (pkg/presets.js GPU_PRESETS, from scripts/pkg-assets.mjs: the baby GPT) are left out: on the CPU they take hours.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --bin tp >&2
node scripts/pkg-assets.mjs >/dev/null # pkg/presets.js, generated (not in git)
gpu=" $(node -e "import('./pkg/presets.js').then((m) => console.log(m.GPU_PRESETS.join(' ')))") "
for cfg in configs/*.json; do
  case "$gpu" in *" $(basename "$cfg" .json) "*) echo "== $cfg: a GPU preset, left out"; continue ;; esac
  data=()
  grep -q '"task": *"\(reverse\|sort\|add\)"' "$cfg" || data=(--data www/data/tinyshakespeare.txt)
  start=$(date +%s)
  out=$("$CARGO_TARGET_DIR/release/tp" train --config "$cfg" "${data[@]}" --log-every 100000 --sample-tokens 200)
  val=$(echo "$out" | grep '"elapsed_s"' | sed 's/.*"val_loss":\([0-9.e-]*\).*/\1/')
  echo "== $cfg: val_loss $val, $(( $(date +%s) - start )) s"
  echo "$out" | tail -1 | cut -c1-400
done
