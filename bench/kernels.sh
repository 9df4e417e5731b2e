#!/usr/bin/env bash
# Kernel benchmark in headless Chromium: builds examples/browser_kernels.rs with the threaded build's flags into
# pkg/wasm/kernels/threads (generated, not committed), then runs bench/kernels.mjs: the FMA ceiling V8 reaches
# here, each hot op of W1 on 1 and on N threads, and W1's step timed op by op. Prints markdown tables.
#   bench/kernels.sh [--threads N] [--reps 10] [--rounds 7] [--steps 20]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/tools.sh
TP_WASM_EXAMPLE=browser_kernels TP_WASM_OUT=pkg/wasm/kernels scripts/build-wasm.sh threads >&2
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
[ -f "$SHARED/bench/wait_idle.sh" ] && bash "$SHARED/bench/wait_idle.sh"
node bench/kernels.mjs "$@"
