#!/usr/bin/env bash
# The CPU kernels in headless Chromium (wasm-bindgen-test), built for wasm32 three ways:
#   simd128   explicit simd128 kernels (src/backend/cpu/wasm128.rs), multiply then add: bit-identical to the plain Rust
#   relaxed   the same with +relaxed-simd: multiply-adds are f32x4.relaxed_madd (fused where the CPU has FMA)
#   scalar    no target features: the plain-Rust fallback
# Each runs tests/cpu_vs_reference.rs (the CPU backend against the scalar reference on awkward sizes) and
# tests/attention_naive.rs (the naive attention against the reference) and tests/cpu_outputs.rs (every op given a
# lent, poisoned output writes all of it); simd128 and
# relaxed also run the kernel tests in wasm128.rs (each kernel against the plain-Rust code it replaces).
#
# Usage: scripts/test-wasm-kernels.sh [simd128|relaxed|scalar ...]      (default: all three)
# Needs wasm-bindgen-test-runner of the wasm-bindgen version in Cargo.lock (on PATH, or in
# ~/.cache/transformer-playground/tools/bin where test.sh installs it), chromedriver ($CHROMEDRIVER, default
# /usr/bin/chromedriver) and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

TP_TOOLS="${TP_TOOLS:-$HOME/.cache/transformer-playground/tools}"
export PATH="$TP_TOOLS/bin:$PATH"
command -v wasm-bindgen-test-runner >/dev/null || {
  echo "error: wasm-bindgen-test-runner not found (cargo install wasm-bindgen-cli --version <the wasm-bindgen version in Cargo.lock> --root $TP_TOOLS)" >&2
  exit 1
}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
[ -x "$CHROMEDRIVER" ] || { echo "error: no chromedriver at $CHROMEDRIVER (apt-get install chromium-driver)" >&2; exit 1; }

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(simd128 relaxed scalar)

failed=()
for v in "${variants[@]}"; do
  case "$v" in
    simd128) features="+simd128"; targets=(--lib --test cpu_vs_reference --test attention_naive --test cpu_outputs) ;;
    relaxed) features="+simd128,+relaxed-simd"; targets=(--lib --test cpu_vs_reference --test attention_naive --test cpu_outputs) ;;
    # Without simd128 the lib has no browser tests (the kernel tests are simd128's).
    scalar) features=""; targets=(--test cpu_vs_reference --test attention_naive --test cpu_outputs) ;;
    *) echo "error: unknown variant '$v' (simd128, relaxed, scalar)" >&2; exit 2 ;;
  esac
  echo "== wasm32 kernels, $v (target-feature=${features:-none})"
  # One build directory per variant: RUSTFLAGS differ, and sharing one would rebuild everything on each switch.
  # RUSTFLAGS replaces any rustflags from a Cargo config file, so each variant builds with exactly these flags.
  if ! RUSTFLAGS="-C target-feature=$features $TP_WASM_RUSTFLAGS" cargo test --release --no-fail-fast --target wasm32-unknown-unknown \
    --target-dir "$CARGO_TARGET_DIR/wasm-kernels-$v" "${targets[@]}"; then
    failed+=("$v")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "wasm kernel tests FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "wasm kernel tests passed: ${variants[*]}"
