#!/usr/bin/env bash
# The demo's DPO step (scripts/demo.sh, which must have run: it leaves out/demo/) once more in
# bf16-mixed, from the same SFT model on the same data, then both DPO models evaluated the same way
# (held-out DPO metrics in fp32, the ground-truth reward of sampled responses): bf16-mixed should
# land within a few points of fp32.
set -euo pipefail
cd "$(dirname "$0")/.."
dpo=build/dpo
work=out/demo
[ -d "$work/dpo/final" ] || { echo "run scripts/demo.sh first (no $work/dpo/final)" >&2; exit 1; }
rm -rf "$work/dpo-bf16" "$work/eval-after-bf16"
$dpo train --config configs/demo_dpo.yaml --set run.output_dir="$work/dpo-bf16" --set train.precision=bf16-mixed
$dpo eval --config configs/demo_eval.yaml --set model.policy="$work/dpo-bf16/final" \
  --set run.output_dir="$work/eval-after-bf16" >/dev/null
reward() {
  $dpo score-synthetic --model "$1" --data "$work/data/eval.jsonl" --max-new-tokens 6 --seed 0 |
    sed -E 's/.*sampled responses ([0-9.]+).*/\1/'
}
metric() { grep -oE "\"$2\": *[-0-9.eE+]+" "$work/$1/eval_metrics.json" | sed -E 's/.*: *//'; }
echo
printf '%-24s %10s %10s %10s %14s\n' "DPO trained in" loss accuracy margin "true reward"
for row in "fp32 dpo eval-after" "bf16-mixed dpo-bf16 eval-after-bf16"; do
  set -- $row
  printf '%-24s %10.4f %10.4f %10.4f %14.4f\n' "$1" "$(metric "$3" loss)" "$(metric "$3" rewards/accuracies)" \
    "$(metric "$3" rewards/margins)" "$(reward "$work/$2/final")"
done
echo "(256 held-out pairs, evaluated in fp32 against the SFT reference; true reward: the task's rule on sampled responses)"
