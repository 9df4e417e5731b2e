#!/usr/bin/env bash
# Workload W1 in the browser, side by side in one run: our three wasm builds in headless Chromium,
# our native build, PyTorch (CPU, 2 threads) and tf.js's wasm backend in the same Chromium (its best setting,
# --fastmm 1). Prints the RESULT lines and a table of medians and ratios to PyTorch.
#   bench/browser.sh           timing (~3 min)
#   bench/browser.sh --full    also trains W1 to 2000 iters in the browser (threaded), seeds 1337, 1 and 2, and
#                              reports the val loss every 100 iterations and the time to reach 1.89
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/tools.sh
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
scripts/build-wasm.sh >&2
cargo build --release --bin tp >&2
CFG=configs/gpt-shakespeare.json
DATA=www/data/tinyshakespeare.txt
ms_of() { sed -n 's/^RESULT .*: \([0-9.]*\) ms\/iter.*/\1/p' | tail -1; }

bash "$SHARED/bench/wait_idle.sh"
declare -A R
out=$(node bench/browser.mjs --steps 40 | tee >(cat >&2))
R[threads]=$(echo "$out" | grep '^RESULT browser-threads' | ms_of)
R[single]=$(echo "$out" | grep '^RESULT browser-single' | ms_of)
R[baseline]=$(echo "$out" | grep '^RESULT browser-baseline' | ms_of)
gen_single=$(echo "$out" | sed -n 's/^RESULT browser-single.*generation \([0-9]*\) tok\/s.*/\1/p')
gen=$(echo "$out" | sed -n 's/^RESULT browser-threads.*generation \([0-9]*\) tok\/s.*/\1/p')
R[native]=$("$CARGO_TARGET_DIR/release/tp" bench --config $CFG --data $DATA --steps 60 --warmup 10 | tee >(cat >&2) | ms_of)
R[torch]=$(THREADS=2 bash "$SHARED/bench/run_torch.sh" --iters 60 | tee >(cat >&2) | ms_of)
R[tfjs]=$( (cd "$SHARED/bench" && node tfjs/run.mjs --backend wasm --fastmm 1) | tee >(cat >&2) | ms_of)

echo
echo "| W1, 2 cores | ms/iter (median) | tokens/s | / PyTorch |"
echo "|---|---:|---:|---:|"
row() { awk -v n="$1" -v m="$2" -v t="${R[torch]}" 'BEGIN{printf "| %s | %.1f | %.0f | %.2f× |\n", n, m, 768/m*1000, m/t}'; }
row "ours, wasm threads (Chromium)" "${R[threads]}"
row "ours, wasm single (Chromium, relaxed SIMD)" "${R[single]}"
row "ours, wasm baseline (Chromium, SIMD128 only)" "${R[baseline]}"
row "ours, native cpu backend" "${R[native]}"
row "PyTorch 2.15, CPU 2 threads" "${R[torch]}"
row "tf.js 4.22, wasm (Chromium, --fastmm 1)" "${R[tfjs]}"
echo
echo "generation with the KV cache: $gen tokens/s (threaded build), $gen_single tokens/s (single build)"

if [ "${1:-}" = "--full" ]; then
  node bench/browser.mjs --steps 10 --builds threads --full | grep 'full W1'
fi
