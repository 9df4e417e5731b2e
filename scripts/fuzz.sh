#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, cargo-fuzz on the pinned nightly, AddressSanitizer, debug assertions and
# overflow checks on) and runs each for a bounded time from its committed seed corpus (fuzz/corpus/<target>);
# fails when any target finds a crash, a hang or a leak. docs/RELIABILITY.md ("Fuzzing") says what each checks.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, every target)
#   TP_FUZZ_FLAGS=-runs=1000000 scripts/fuzz.sh 3600 config   (a long run: a million inputs, at most an hour)
# New inputs the fuzzer finds go to a scratch corpus beside the build (not into the committed seeds); a crashing
# input is written to fuzz/artifacts/<target>/ and reproduced with `cargo +$TP_NIGHTLY fuzz run <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/tools.sh

seconds="${1:-30}"
shift || true
ensure_cargo_fuzz

# The nightly's sanitizer build of the core and its dependencies, kept apart from the stable builds.
FUZZ_TARGET_DIR="${TP_FUZZ_TARGET_DIR:-$CARGO_TARGET_DIR/fuzz}"
SCRATCH="$FUZZ_TARGET_DIR/corpus"
cd fuzz
fuzz=("$CARGO_FUZZ" fuzz)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${fuzz[@]}" list)

# One iteration is a few small ops: rayon's wake-ups would cost more than they save (results do not depend on the
# thread count).
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"
# TP_FUZZ_FLAGS: more libFuzzer flags, e.g. -runs=1000000 for a long run (with a large SECONDS_PER_TARGET).
read -r -a extra <<<"${TP_FUZZ_FLAGS:-}"

# cargo-fuzz runs `cargo`, which the nightly must be: RUSTUP_TOOLCHAIN overrides rust-toolchain.toml.
export RUSTUP_TOOLCHAIN="$TP_NIGHTLY"
"${fuzz[@]}" build -O --debug-assertions --target-dir "$FUZZ_TARGET_DIR"

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$SCRATCH/$t" "artifacts/$t"
  log="$FUZZ_TARGET_DIR/$t.log"
  echo "-- $t: ${seconds} s"
  # -timeout: an input running that long is a hang; -rss_limit_mb: more memory than that is a failure too.
  if "${fuzz[@]}" run -O --debug-assertions --target-dir "$FUZZ_TARGET_DIR" "$t" "$SCRATCH/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
    :
  else
    failed+=("$t")
    tail -n 40 "$log" >&2
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  summary+=("$(printf '%-12s %12s runs %8s exec/s' "$t" "${runs:-?}" "${rate:-?}")")
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: fuzzing found a failure in: ${failed[*]} (inputs in fuzz/artifacts/; logs in $FUZZ_TARGET_DIR)" >&2
  exit 1
fi
