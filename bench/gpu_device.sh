#!/usr/bin/env bash
# The WebGPU backend's native benchmark on a machine with a real GPU, in one short run (the figures that
# docs/BENCHMARKS.md lists as needing a real GPU): matmul GFLOP/s and % of the GPU's fp32 peak, fused vs naive
# attention for T = 64…1024, and the training step on the gpu against the cpu backend for d_model 64…512 (the
# GPU/CPU ratio at d_model ≥ 192).
#   bench/gpu_device.sh [PEAK_GFLOPS]     PEAK_GFLOPS: the GPU's fp32 peak (default 66900: an NVIDIA H100/H200 SXM)
# Needs a Vulkan driver for the GPU (wgpu's vulkan backend); prints the adapter first, so a run that fell back to
# lavapipe shows it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PEAK=${1:-66900}
cargo build --release --features gpu --example gpu_bench >&2
"$CARGO_TARGET_DIR/release/examples/gpu_bench" --peak-gflops "$PEAK"
