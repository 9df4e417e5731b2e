#!/usr/bin/env bash
# Set up and run every test. Safe on a fresh machine: installs what is missing (the pinned toolchains, the wasm32
# target, wasm-bindgen-cli, Chromium and chromedriver, npm packages) into caches outside the clone, and reuses them.
#   1. native: cargo test (core, kernels, PyTorch fixtures, CLI); the WebGPU kernels on Mesa's lavapipe; each fuzz
#      target for a bounded time (scripts/fuzz.sh)
#   2. wasm kernels in headless Chromium (wasm-bindgen-test): simd128, simd128 + relaxed-simd, scalar
#   3. both browser builds, then the engine, the page and a Vite consumer in headless Chromium (playwright-core)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
source scripts/tools.sh

ensure_system_packages
ensure_wasm_tools

echo "== native tests"
cargo test --release --no-fail-fast "$@"
cargo build --release --bin tp

echo "== WebGPU kernels, training and the recipes' pretraining natively (wgpu on Mesa's lavapipe)"
XDG_CACHE_HOME="${TMPDIR:-/tmp}/tp-gpu-cache" cargo test --release --no-fail-fast --features gpu --test gpu_kernels --test gpu_training --test gpu_recipes

echo "== fuzzing (bounded)"
# Every fuzz target for 20 s from its committed seeds (scripts/fuzz.sh, docs/RELIABILITY.md "Fuzzing"): ~2.5 min
# once built. The first time also installs cargo-fuzz and builds the sanitized core on the nightly (21 min on a
# 2-core machine busy with other builds); both are cached.
scripts/fuzz.sh "${TP_FUZZ_SECONDS:-20}"

echo "== wasm kernels in Chromium"
scripts/test-wasm-kernels.sh

echo "== browser builds"
scripts/build-wasm.sh
# bench/kernels.sh's example (the op-by-op timing in Chromium) compiles only for wasm32: check it here so it does not rot.
RUSTFLAGS="$TP_WASM_RUSTFLAGS" cargo check --release --target wasm32-unknown-unknown --example browser_kernels --features gpu

echo "== engine, page and npm package in Chromium"
node --test --test-concurrency=1 tests/browser/
