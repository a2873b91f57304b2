#!/usr/bin/env bash
# The DPO paper's Figure 2 on the synthetic task (known ground-truth reward): from one SFT model,
# DPO at several betas, Preferred-FT (more SFT on the chosen responses) and Unlikelihood, each
# trained for two lengths; for each policy the mean true reward of its samples and its
# sequence-level KL to the SFT model estimated from the same samples (dpo score-synthetic
# --reference). Writes docs/frontier/frontier.csv and frontier.svg (reward against KL).
# FRONTIER_QUICK=1: two arms, few steps, into $FRONTIER_OUT (the smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."
dpo=${DPO:-build/dpo}
quick=${FRONTIER_QUICK:-0}
work=${FRONTIER_WORK:-out/frontier}
out=${FRONTIER_OUT:-docs/frontier}
rm -rf "$work" && mkdir -p "$work" "$out"
start=$(date +%s)
pairs=8192; sft_epochs=2; lengths="128 512"; betas="0.05 0.1 0.25 0.5 1.0"
if [ "$quick" = 1 ]; then pairs=512; sft_epochs=1; lengths="8"; betas="0.1"; fi

"$dpo" make-demo-data --out "$work/data" --vocab-size 64 --train-pairs "$pairs" --eval-pairs 256 >/dev/null
"$dpo" init-model --arch llama --out "$work/init" --seed 1 --set vocab_size=64 >/dev/null
common=(--set data.train="$work/data/train.jsonl" --set data.eval="" --set run.log_every=64)
"$dpo" sft --config configs/demo_sft.yaml "${common[@]}" --set model.policy="$work/init" \
  --set run.output_dir="$work/sft" --set train.epochs="$sft_epochs" --set train.eval_every=0 >"$work/sft.log" 2>&1
sft=$work/sft/final
# The reference's log-probs once; every DPO arm reads them and never loads the reference model.
"$dpo" precompute-ref --config configs/demo_dpo.yaml "${common[@]}" --set model.policy="$sft" \
  --set reference.logps_path="$work/ref.h5" --set run.output_dir="$work/pre" >"$work/pre.log" 2>&1

# arm NAME METHOD STEPS [--set ...]: trains one policy from the SFT model and scores it.
echo "method,param,steps,kl,kl_se,reward,reward_se" >"$work/frontier.csv"
arm() {
  local method=$1 param=$2 steps=$3 dir=$work/$1-$2-$3
  shift 3
  case $method in
    dpo) "$dpo" train --config configs/demo_dpo.yaml "${common[@]}" --set model.policy="$sft" \
           --set reference.logps_path="$work/ref.h5" --set loss.beta="$param" --set train.max_steps="$steps" \
           --set train.eval_every=0 --set run.output_dir="$dir" >"$dir.log" 2>&1 ;;
    preferred-ft) "$dpo" sft --config configs/demo_sft.yaml "${common[@]}" --set model.policy="$sft" \
           --set train.lr="$param" --set train.max_steps="$steps" --set train.eval_every=0 \
           --set run.output_dir="$dir" >"$dir.log" 2>&1 ;;
    unlikelihood) "$dpo" train --config configs/demo_dpo.yaml "${common[@]}" --set model.policy="$sft" \
           --set loss.type=unlikelihood --set train.lr="$param" --set train.max_steps="$steps" \
           --set train.eval_every=0 --set run.output_dir="$dir" >"$dir.log" 2>&1 ;;
  esac
  "$dpo" score-synthetic --model "$dir/final" --reference "$sft" --data "$work/data/eval.jsonl" --max-new-tokens 6 \
    --seed 0 --json | tail -1 | python3 -c "
import json, sys
r = json.loads(sys.stdin.read())
print(f\"$method,$param,$steps,{r['kl']:.6f},{r['kl_se']:.6f},{r['reward']:.6f},{r['reward_se']:.6f}\")" >>"$work/frontier.csv"
  tail -1 "$work/frontier.csv"
}
for steps in $lengths; do
  for beta in $betas; do arm dpo "$beta" "$steps"; done
  arm preferred-ft 3.0e-3 "$steps"
  [ "$quick" = 1 ] || arm unlikelihood 3.0e-4 "$steps"
done
# The SFT model itself: KL 0, its reward the starting point of every arm.
"$dpo" score-synthetic --model "$sft" --reference "$sft" --data "$work/data/eval.jsonl" --max-new-tokens 6 --seed 0 \
  --json | tail -1 | python3 -c "
import json, sys
r = json.loads(sys.stdin.read())
print(f\"sft,-,0,{r['kl']:.6f},{r['kl_se']:.6f},{r['reward']:.6f},{r['reward_se']:.6f}\")" >>"$work/frontier.csv"
cp "$work/frontier.csv" "$out/frontier.csv"
python3 scripts/frontier_plot.py "$out/frontier.csv" "$out/frontier.svg"
echo "frontier: $(( $(date +%s) - start )) s; $out/frontier.csv, $out/frontier.svg"
