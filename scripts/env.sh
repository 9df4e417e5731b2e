# Shared set-up for run.sh and test.sh: a Rust toolchain (the one pinned in rust-toolchain.toml) and a build
# directory outside the clone, so CI and fresh clones reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/transformer-playground/target}"
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "error: no Rust toolchain found (cargo); this project needs rustup with Rust 1.95" >&2
    exit 1
  fi
fi
# rustup installs the toolchain named in rust-toolchain.toml on first use; make that explicit and visible.
if command -v rustup >/dev/null 2>&1; then
  rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install "$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)"
fi
# Code-generation flags of every wasm32 build (the shipped builds and the kernel tests). LLVM turns a copy or fill
# loop over slices into memcpy/memset, which become `memory.copy`/`memory.fill`, and V8 runs those as calls into the
# runtime, several times slower for a short row than two v128 loads and stores (docs/BENCHMARKS.md). The hot loops
# copy rows of 8–128 floats (packing, the KV cache's appends), so the loops stay loops.
TP_WASM_RUSTFLAGS="-C llvm-args=-disable-loop-idiom-memcpy -C llvm-args=-disable-loop-idiom-memset"
