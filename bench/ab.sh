#!/usr/bin/env bash
# Interleaved A/B of two git revisions (or "worktree" for the uncommitted tree) in headless Chromium, W1 through
# the engine: builds each revision's browser builds into a root of its own under $TP_AB_DIR (default
# /tmp/tp-ab/<name>), then runs bench/ab.mjs, alternating the two in every round.
#   bench/ab.sh REV_A REV_B [--build threads|single|baseline] [--rounds 5] [--steps 30] [--warmup 5]
# e.g. bench/ab.sh HEAD worktree --build single. TP_AB_BUILD_ONLY=1 builds and stops; TP_AB_REUSE=1 then measures
# with a revision's root as built before (not "worktree"). A revision is checked out with `git worktree` (removed
# after); builds run one after the other (two checkouts building at once into the shared CARGO_TARGET_DIR would mix).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,7p' "$0" >&2; exit 2; }
rev_a=$1 rev_b=$2; shift 2
opts=("$@")
build=threads
for ((i = 0; i < ${#opts[@]}; i++)); do [ "${opts[$i]}" = --build ] && build=${opts[$((i + 1))]}; done
source scripts/env.sh
AB="${TP_AB_DIR:-/tmp/tp-ab}"
mkdir -p "$AB"

make_root() { # rev → prints the root
  local rev=$1 name src root
  if [ "$rev" = worktree ]; then
    name=worktree src=$PWD
  else
    name=$(git rev-parse --short "$rev")
    # TP_AB_REUSE=1: a revision's root built by an earlier run is used as it is (not "worktree", which changes).
    if [ -n "${TP_AB_REUSE:-}" ] && [ -f "$AB/$name/pkg/wasm/$build/.built" ]; then
      echo "$AB/$name"; return
    fi
    src="$AB/src-$name"
    rm -rf "$src"; git worktree prune
    git worktree add --detach -q "$src" "$rev"
    # The checkout uses this one's npm packages (wasm-opt): only when its package-lock.json is the same, and marked
    # as not newer than the install, so that the build's npm check does not reinstall them through the link.
    cmp -s package-lock.json "$src/package-lock.json" \
      || { echo "error: $rev has another package-lock.json; A/B across npm changes is not supported" >&2; exit 1; }
    ln -s "$PWD/node_modules" "$src/node_modules"
    touch -r node_modules/.package-lock.json "$src/package-lock.json"
  fi
  root="$AB/$name"
  rm -rf "$root" && mkdir -p "$root/pkg"
  cp -r "$src/index.html" "$src/www" "$src/bench" "$src/sw.js" "$root/"
  cp "$src"/pkg/*.js "$src"/pkg/*.json "$src"/pkg/*.d.ts "$root/pkg/"
  (cd "$src" && TP_WASM_OUT="$root/pkg/wasm" scripts/build-wasm.sh "$build" >&2)
  touch "$root/pkg/wasm/$build/.built"
  if [ "$rev" != worktree ]; then git worktree remove --force "$src"; fi
  echo "$root"
}

root_a=$(make_root "$rev_a")
root_b=$(make_root "$rev_b")
# TP_AB_BUILD_ONLY=1: build the two roots and stop (to measure later with TP_AB_REUSE=1 on a quiet host).
[ -n "${TP_AB_BUILD_ONLY:-}" ] && { echo "built: $root_a $root_b"; exit 0; }
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
[ -f "$SHARED/bench/wait_idle.sh" ] && bash "$SHARED/bench/wait_idle.sh"
node bench/ab.mjs "$root_a" "$root_b" "${opts[@]}"
