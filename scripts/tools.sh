# Tools the browser builds and tests need, installed once into caches outside the clone and reused.
# Sourced by scripts/build-wasm.sh, run.sh and test.sh (after scripts/env.sh).

# The nightly for the threaded build (atomics need -Z build-std). Pinned by date: a fresh machine builds the same.
TP_NIGHTLY=nightly-2026-05-19
# Must equal the wasm-bindgen crate version in Cargo.lock.
WASM_BINDGEN_VERSION=0.2.130
TP_TOOLS="${TP_TOOLS:-$HOME/.cache/transformer-playground/tools}"
WASM_BINDGEN="$TP_TOOLS/bin/wasm-bindgen"
WASM_OPT="$PWD/node_modules/.bin/wasm-opt"

# cargo-fuzz (libFuzzer driver) for scripts/fuzz.sh; the fuzz targets build on TP_NIGHTLY (-Z sanitizer).
CARGO_FUZZ_VERSION=0.13.2
CARGO_FUZZ="$TP_TOOLS/bin/cargo-fuzz"

ensure_cargo_fuzz() {
  if ! rustup run "$TP_NIGHTLY" rustc -V >/dev/null 2>&1; then
    rustup toolchain install "$TP_NIGHTLY" --profile minimal -c rust-src
  fi
  if [ "$("$CARGO_FUZZ" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$TP_TOOLS" --force
  fi
}

ensure_npm_packages() {
  # binaryen (wasm-opt), playwright-core (drives Debian's chromium), vite (the consumer-project test); pinned by
  # package-lock.json.
  if [ ! -x node_modules/.bin/wasm-opt ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    command -v npm >/dev/null || { echo "error: npm (Node.js 20+) is needed: apt-get install nodejs npm" >&2; exit 1; }
    npm ci --no-audit --no-fund
  fi
}

ensure_wasm_tools() {
  rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  if ! rustup run "$TP_NIGHTLY" rustc -V >/dev/null 2>&1 \
    || ! rustup component list --toolchain "$TP_NIGHTLY" --installed | grep -q rust-src; then
    # The wasm32 std of a dated nightly is not always published; build-std needs only rust-src.
    rustup toolchain install "$TP_NIGHTLY" --profile minimal -c rust-src
  fi
  if [ "$("$WASM_BINDGEN" --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
    # No --locked: the crates.io mirror here lacks one pinned transitive version of wasm-bindgen-cli's lock file.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$TP_TOOLS" --force
  fi
  ensure_npm_packages
}

# Debian packages: Node.js (npm), Chromium and its driver for the browser tests, Mesa's software Vulkan for native
# GPU tests, CJK fonts. Installed only where missing.
ensure_system_packages() {
  local missing=()
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  # CJK glyphs for the 中文 interface in screenshots (the tests pass without them).
  dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
  # Vulkan on the CPU (llvmpipe) for the native WebGPU tests.
  dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || missing+=(mesa-vulkan-drivers)
  dpkg -s libvulkan1 >/dev/null 2>&1 || missing+=(libvulkan1)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}
