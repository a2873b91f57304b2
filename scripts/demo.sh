#!/usr/bin/env bash
# The main job: installs what is missing, builds, then end to end on a synthetic preference task the
# repo generates (a response is better the more of its tokens occur in the prompt; the rule is the
# ground-truth reward): a random tiny Llama -> SFT on the chosen responses -> DPO against the SFT
# model -> held-out preference metrics and the ground-truth reward of sampled responses.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
dpo=build/dpo
work=out/demo
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)
$dpo make-demo-data --out "$work/data" --vocab-size 64 --train-pairs 2048 --eval-pairs 256
$dpo init-model --arch llama --out "$work/init" --seed 1 --set vocab_size=64 >/dev/null
$dpo inspect "$work/init"
echo; echo "== 1. SFT on the chosen responses"
$dpo sft --config configs/demo_sft.yaml
echo; echo "== 2. DPO against the SFT model"
$dpo train --config configs/demo_dpo.yaml
echo; echo "== 3. held-out pairs: DPO model vs the SFT reference"
$dpo eval --config configs/demo_eval.yaml
echo; echo "== 4. ground-truth reward of sampled responses to the held-out prompts (higher is better)"
for m in init sft/final dpo/final; do
  $dpo score-synthetic --model "$work/$m" --data "$work/data/eval.jsonl" --max-new-tokens 6 --seed 0
done
echo; echo "demo finished in $(( $(date +%s) - start )) s"
