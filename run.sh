#!/usr/bin/env bash
# Build everything and serve the playground at http://127.0.0.1:8080/ (cross-origin isolated, so the threaded
# WebAssembly build runs). Installs what is missing on first use: the wasm32 target, the pinned nightly,
# wasm-bindgen-cli, npm packages.
#   ./run.sh [--port N] [--no-isolation]     the playground in the browser
#   ./run.sh --native [tp train args…]       train the default GPT natively and print a sample (no browser)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
source scripts/tools.sh

if [ "${1:-}" = "--native" ]; then
  shift
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
fi

command -v node >/dev/null || ensure_system_packages
scripts/build-wasm.sh
exec node scripts/serve.mjs "$@"
