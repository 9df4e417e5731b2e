#!/usr/bin/env bash
# Workload W1 (nanoGPT's CPU config on tiny Shakespeare) side by side, in one run: our native cpu backend and
# PyTorch on the CPU, each with 2 threads and 1 thread, in ROUNDS alternating rounds; prints medians and the ratio.
#   bench/w1.sh            timing only (~5 min)
#   bench/w1.sh --full     also trains both to 2000 iters and reports val loss and wall time (~5 min more)
# The PyTorch side comes from ../shared/bench (its setup.sh makes the venv on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
cargo build --release --bin tp >&2
TP="$CARGO_TARGET_DIR/release/tp"
CFG=configs/gpt-shakespeare.json
DATA=www/data/tinyshakespeare.txt
ms_of() { sed -n 's/^RESULT .*: \([0-9.]*\) ms\/iter.*/\1/p' | tail -1; }

bash "$SHARED/bench/wait_idle.sh"
# ROUNDS rounds (default 3), ours and PyTorch alternating within each, so a burst of load on this shared machine
# hits both; the table shows the median over rounds of each side's per-round median.
ROUNDS=${ROUNDS:-3}
declare -A R
for threads in 2 1; do
  for round in $(seq "$ROUNDS"); do
    R[ours$threads]+=" $(RAYON_NUM_THREADS=$threads "$TP" bench --config $CFG --data $DATA --steps 60 --warmup 10 | tee >(cat >&2) | ms_of)"
    R[torch$threads]+=" $(THREADS=$threads bash "$SHARED/bench/run_torch.sh" --iters 60 | tee >(cat >&2) | ms_of)"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
echo "| threads | ours (cpu backend) ms/iter | PyTorch ms/iter | ours / PyTorch | rounds: ours; PyTorch |"
echo "|---:|---:|---:|---:|---|"
for threads in 2 1; do
  o=$(echo "${R[ours$threads]}" | median); t=$(echo "${R[torch$threads]}" | median)
  echo "| $threads | $o | $t | $(awk -v o="$o" -v t="$t" 'BEGIN{printf "%.2f×", o/t}') |${R[ours$threads]};${R[torch$threads]} |"
done

if [ "${1:-}" = "--full" ]; then
  echo
  echo "== full W1 run, ours (2 threads) =="
  start=$(date +%s.%N)
  "$TP" train --config $CFG --data $DATA --log-every 250 --sample-tokens 300 | tee /tmp/w1-ours.jsonl
  end=$(date +%s.%N)
  echo "ours: $(awk -v s="$start" -v e="$end" 'BEGIN{printf "%.1f", e-s}') s wall for 2000 iters (incl. evals)"
  echo "== full W1 run, PyTorch (2 threads) =="
  THREADS=2 bash "$SHARED/bench/run_torch.sh" | tee /tmp/w1-torch.txt | tail -8
fi
