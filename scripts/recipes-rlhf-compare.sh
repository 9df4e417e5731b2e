#!/usr/bin/env bash
# The comparison of docs/RECIPES.md section 4: the default mini-RLHF recipe (configs/recipes/rlhf.json: SFT, reward
# model, PPO with β = 0.05, γ_ptx = 0) from the small pretrained GPT (scripts/recipes-pretrain.sh), then PPO again
# from the same SFT model and reward model with β = 0 (no KL penalty: reward hacking), β = 0.2, and the pretraining
# mix γ_ptx = 0.2, 0.5 and 1.
#   scripts/recipes-rlhf-compare.sh [PRETRAINED] [SEED]
# Writes each run's JSON lines to target/recipes/rlhf-s<SEED>-<run>.jsonl (checkpoints in target/recipes/rlhf-s<SEED>-
# <run>/) and prints one summary row per run: the held-out evaluation at the end of PPO.
set -euo pipefail
cd "$(dirname "$0")/.."
pre="${1:-www/data/pretrained-gpt-tiny.safetensors}"
seed="${2:-1}"
[ -f "$pre" ] || scripts/recipes-pretrain.sh "$pre"
cargo build --release --quiet --bin tp
mkdir -p target/recipes
tp=target/recipes/tp   # a copy: a rebuild while this runs does not change the binary under it
cp "${CARGO_TARGET_DIR:-target}/release/tp" "$tp"
base="target/recipes/rlhf-s$seed-default"
summary() {
  python3 -c "import json,sys
rows=[json.loads(l) for l in open(sys.argv[1])]
ev=lambda s:[r for r in rows if r.get('eval') and r['stage']==s]
p=ev('ppo'); f=p[-1]
rm=ev('rm')
head=('rm_accuracy %.3f on %d held-out pairs; ' % (rm[-1]['rm_accuracy'], rm[-1]['pairs'])) if rm else ''
print(sys.argv[2], head + 'PPO step %d: score %.2f (start %.2f) reward %.2f kl %.2f lm_loss %.3f (start %.3f)' % (f['step'], f['score'], p[0]['score'], f['reward'], f['kl'], f['lm_loss'], p[0]['lm_loss']))
print('   ', f['samples'][:2])" "$1" "$2"
}
"$tp" rlhf --config configs/recipes/rlhf.json --checkpoint "$pre" --seed "$seed" --out "$base" > "$base.jsonl"
summary "$base.jsonl" "default (β 0.05, γ_ptx 0)"
for run in "b0 0 0" "b0.2 0.2 0" "ptx0.2 0.05 0.2" "ptx0.5 0.05 0.5" "ptx1 0.05 1"; do
  set -- $run
  dir="target/recipes/rlhf-s$seed-$1"
  mkdir -p "$dir"
  cp "$base/sft.safetensors" "$base/rm.safetensors" "$dir/"
  "$tp" rlhf --config configs/recipes/rlhf.json --stage ppo --seed "$seed" --out "$dir" --beta "$2" --gamma-ptx "$3" > "$dir.jsonl"
  summary "$dir.jsonl" "β $2, γ_ptx $3"
done
