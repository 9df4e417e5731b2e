#!/usr/bin/env bash
# Set up and run every test. Safe to run on a fresh machine: installs the pinned toolchain if missing.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
cargo test --release --no-fail-fast "$@"
