#!/usr/bin/env bash
# The WebGPU backend's native benchmark on a machine with a real GPU, in one short run (the figures that
# docs/BENCHMARKS.md lists as needing a real GPU): matmul GFLOP/s and % of the GPU's fp32 peak (with the 4×4 and the
# 8×8 register tile each, N = 256 … 4096), the kernels whose workgroups reduce (LayerNorm, cross-entropy, Σx²) on
# the tree and on subgroups, fused vs naive attention for T = 64…1024, and the training step on the gpu against the
# cpu backend for d_model 64…512 (the GPU/CPU ratio at d_model ≥ 192); then W1's step on the gpu through
# `tp bench --backend gpu`: ms/step, and the host time to issue one step (issue_ms, goal ≤ 0.3 ms), its dispatches
# and the bind groups it creates (goal 0); then the baby GPT's step (configs/baby-gpt.json: nanoGPT's Shakespeare
# config, 6 × 384, ctx 256, batch 64) on the gpu, and on the cpu backend for the ratio (3 steps: one takes seconds
# there).
#   bench/gpu_device.sh [PEAK_GFLOPS]     PEAK_GFLOPS: the GPU's fp32 peak (default 66900: an NVIDIA H100/H200 SXM)
# Needs a Vulkan driver for the GPU (wgpu's vulkan backend); prints the adapter first, so a run that fell back to
# lavapipe shows it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PEAK=${1:-66900}
cargo build --release --features gpu --example gpu_bench --bin tp >&2
"$CARGO_TARGET_DIR/release/examples/gpu_bench" --peak-gflops "$PEAK"
echo "W1 (configs/gpt-shakespeare.json) on the gpu, 5 warm-up + 30 timed steps:"
"$CARGO_TARGET_DIR/release/tp" bench --config configs/gpt-shakespeare.json --data www/data/tinyshakespeare.txt \
  --backend gpu --warmup 5 --steps 30
echo "baby GPT (configs/baby-gpt.json) on the gpu, 3 warm-up + 20 timed steps:"
"$CARGO_TARGET_DIR/release/tp" bench --config configs/baby-gpt.json --data www/data/tinyshakespeare.txt \
  --backend gpu --warmup 3 --steps 20
echo "baby GPT on the cpu backend, 1 warm-up + 3 timed steps:"
"$CARGO_TARGET_DIR/release/tp" bench --config configs/baby-gpt.json --data www/data/tinyshakespeare.txt \
  --backend cpu --warmup 1 --steps 3
