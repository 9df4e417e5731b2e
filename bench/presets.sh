#!/usr/bin/env bash
# Trains every preset in configs/ to its configured step count and prints its final validation loss and demo
# (a sample, mask fills, or the exact-match rate of task decodings). ~8 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --bin tp >&2
for cfg in configs/*.json; do
  data=()
  grep -q '"task": *"\(reverse\|sort\|add\)"' "$cfg" || data=(--data www/data/tinyshakespeare.txt)
  start=$(date +%s)
  out=$("$CARGO_TARGET_DIR/release/tp" train --config "$cfg" "${data[@]}" --log-every 100000 --sample-tokens 200)
  val=$(echo "$out" | grep '"elapsed_s"' | sed 's/.*"val_loss":\([0-9.e-]*\).*/\1/')
  echo "== $cfg: val_loss $val, $(( $(date +%s) - start )) s"
  echo "$out" | tail -1 | cut -c1-400
done
