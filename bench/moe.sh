#!/usr/bin/env bash
# A Mixture-of-Experts step against the dense step of the same active parameter count (issue 16): configs/mixtral-moe.json
# (8 SwiGLU experts of F = 176, top 2) vs bench/configs/moe-dense-equivalent.json (the same model with one SwiGLU FFN
# of F = 352: the two experts a token runs, as one FFN; only the 8 × 128 routers differ). Native (`tp bench`,
# interleaved rounds) and in Chromium (bench/browser.mjs --step-only, threaded and single builds). Prints RESULT lines.
#   bench/moe.sh [--rounds 3] [--steps 30] [--no-browser]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
rounds=3 steps=30 browser=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --no-browser) browser=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
MOE=configs/mixtral-moe.json DENSE=bench/configs/moe-dense-equivalent.json
cargo build --release --bin tp >&2
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p')"
for r in $(seq "$rounds"); do
  for cfg in "$DENSE" "$MOE"; do
    echo "round $r $cfg: $("$CARGO_TARGET_DIR/release/tp" bench --config "$cfg" --data www/data/tinyshakespeare.txt --steps "$steps" --warmup 5 | grep RESULT)"
  done
done
if [ "$browser" = 1 ]; then
  for cfg in "$DENSE" "$MOE"; do
    node bench/browser.mjs --config "$cfg" --step-only --steps "$steps" --builds threads,single
  done
fi
