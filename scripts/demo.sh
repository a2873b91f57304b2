#!/usr/bin/env bash
# The main job: installs what is missing, builds, then on a synthetic preference task that the repo
# generates (a response is better the more of its tokens occur in the prompt) it initialises a
# small Llama-style model and evaluates DPO preference metrics with `dpo eval`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
dpo=build/dpo
work=out/demo
rm -rf "$work" && mkdir -p "$work"
$dpo make-demo-data --out "$work/data" --vocab-size 256 --train-pairs 2048 --eval-pairs 256
$dpo init-model --arch llama --out "$work/policy" --seed 1 >/dev/null
$dpo init-model --arch llama --out "$work/other" --seed 2 >/dev/null
$dpo inspect "$work/policy"
$dpo inspect "$work/data/eval.jsonl"
echo
echo "== policy == reference: the loss must be ln 2 = 0.693147 and every margin 0"
$dpo eval --config configs/demo.yaml --set run.output_dir="$work/eval-same"
echo
echo "== a different reference model"
$dpo eval --config configs/demo.yaml --set run.output_dir="$work/eval-other" --set model.reference="$work/other"
