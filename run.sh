#!/usr/bin/env bash
# Train the default GPT (nanoGPT's CPU config, workload W1) on tiny Shakespeare natively, then print a sample.
# Extra arguments go to `tp train` (e.g. --steps 200, --config configs/llama-style.json, --out model.safetensors).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
cfg=configs/gpt-shakespeare.json
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) cfg="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cargo build --release --bin tp
data=()
grep -q '"task": *"\(reverse\|sort\|add\)"' "$cfg" || data=(--data www/data/tinyshakespeare.txt)
exec "$CARGO_TARGET_DIR/release/tp" train --config "$cfg" "${data[@]}" "${args[@]}"
