#!/usr/bin/env bash
# Builds the browser builds of the crate into pkg/wasm/ (generated: never edit, never committed), then the package's
# generated data (scripts/pkg-assets.mjs: pkg/presets.js, pkg/lessons-data.js, pkg/data/):
#   threads  — nightly (pinned in tools.sh), atomics + shared memory, std rebuilt, simd128 + relaxed-simd; rayon on
#              Web Workers through wasm-bindgen-rayon. Used when the page is cross-origin isolated.
#   single   — stable, simd128 + relaxed-simd, no atomics; rayon runs everything on the calling thread. Used when
#              the page is not isolated.
#   baseline — stable, simd128 only: for browsers without relaxed SIMD (a module using it does not even load there).
# The choice is made at run time by pkg/protocol.js (chooseBuild).
# All three carry the WebGPU backend (feature gpu: wgpu over the browser's WebGPU) for runs created with
# backend 'webgpu'. Each goes through wasm-bindgen (--target web) and wasm-opt -O3; sizes are printed.
# Usage: scripts/build-wasm.sh [threads|single|baseline]...   (default: all three)
#   TP_WASM_OUT=DIR puts the builds in DIR/<name> instead of pkg/wasm/<name> (for A/B comparisons of two builds).
#   TP_WASM_EXAMPLE=NAME builds examples/NAME.rs (a cdylib over the crate) instead of the library: the browser
#   kernel benchmark (bench/kernels.sh) uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/tools.sh

builds=("$@")
[ ${#builds[@]} -eq 0 ] && builds=(threads single baseline)

ensure_wasm_tools

size_line() { # name file
  local raw gz
  raw=$(stat -c %s "$2"); gz=$(gzip -9 -c "$2" | wc -c)
  awk -v n="$1" -v f="$(basename "$2")" -v r="$raw" -v g="$gz" 'BEGIN { printf "%-8s %s: %8.1f KiB raw, %8.1f KiB gzipped\n", n, f, r / 1024, g / 1024 }'
}

build_one() {
  local name=$1 target_dir out wasm what=(--lib) artefact=transformer_playground
  if [ -n "${TP_WASM_EXAMPLE:-}" ]; then
    what=(--example "$TP_WASM_EXAMPLE"); artefact="examples/$TP_WASM_EXAMPLE"
  fi
  target_dir="$CARGO_TARGET_DIR/wasm-$name"
  out=${TP_WASM_OUT:-pkg/wasm}/$name
  case $name in
    single)
      RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd $TP_WASM_RUSTFLAGS" CARGO_TARGET_DIR="$target_dir" \
        cargo build "${what[@]}" --release --target wasm32-unknown-unknown --features gpu
      ;;
    baseline)
      RUSTFLAGS="-C target-feature=+simd128 $TP_WASM_RUSTFLAGS" CARGO_TARGET_DIR="$target_dir" \
        cargo build "${what[@]}" --release --target wasm32-unknown-unknown --features gpu
      ;;
    threads)
      # rustc (from nightly-2025-10-03 on) does not add the shared-memory linker arguments for +atomics: give them.
      RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128,+relaxed-simd \
-C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296 \
-C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size -C link-arg=--export=__tls_align \
-C link-arg=--export=__tls_base -C link-arg=--export=__heap_base $TP_WASM_RUSTFLAGS" CARGO_TARGET_DIR="$target_dir" \
        cargo "+$TP_NIGHTLY" build "${what[@]}" --release --target wasm32-unknown-unknown --features threads,gpu \
        -Z build-std=panic_abort,std
      ;;
    *) echo "unknown build '$name' (threads|single|baseline)" >&2; exit 2 ;;
  esac
  wasm="$target_dir/wasm32-unknown-unknown/release/$artefact.wasm"
  rm -rf "$out" && mkdir -p "$out"
  "$WASM_BINDGEN" --target web --out-dir "$out" --out-name tp "$wasm"
  local before="$out/tp_bg.wasm"
  cp "$before" "$out/.unoptimised.wasm"
  # --low-memory-unused: the first 1 KiB of memory holds no object (rustc puts the 1 MiB main stack first, growing
  # down towards 0, then the data), so wasm-opt may fold constant address offsets into the loads' and stores'
  # offset fields; V8 then addresses [base + index + offset] directly instead of adding first (the W1 step's
  # gain: docs/BENCHMARKS.md).
  "$WASM_OPT" -O3 --low-memory-unused --strip-debug --enable-threads --enable-simd --enable-relaxed-simd --enable-bulk-memory --enable-mutable-globals \
    --enable-nontrapping-float-to-int --enable-sign-ext --enable-reference-types --enable-multivalue \
    "$out/.unoptimised.wasm" -o "$before"
  rm "$out/.unoptimised.wasm"
  size_line "$name" "$before"
}

for b in "${builds[@]}"; do build_one "$b"; done

# The package's generated data: the presets (from configs/) and the text presets' corpus.
node scripts/pkg-assets.mjs
