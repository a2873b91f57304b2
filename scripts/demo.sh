#!/usr/bin/env bash
# The main job: installs what is missing, builds, then end to end on a synthetic preference task the
# repo generates (a response is better the more of its tokens occur in the prompt; the rule is the
# ground-truth reward): a random tiny Llama -> SFT on the chosen responses -> DPO against the SFT
# model -> held-out preference metrics, the ground-truth reward of sampled responses, and the
# DPO run's curves (out/demo/dpo/plot.png and plot.svg).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
dpo=build/dpo
work=out/demo
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)
$dpo make-demo-data --out "$work/data" --vocab-size 64 --train-pairs 8192 --eval-pairs 256
$dpo init-model --arch llama --out "$work/init" --seed 1 --set vocab_size=64 >/dev/null
$dpo inspect "$work/init"
echo; echo "== 1. SFT on the chosen responses"
$dpo sft --config configs/demo_sft.yaml
echo; echo "== 2. DPO against the SFT model"
$dpo train --config configs/demo_dpo.yaml
echo; echo "== 3. held-out pairs: before (the SFT model, which is the reference) and after DPO"
$dpo eval --config configs/demo_eval.yaml --set model.policy="$work/sft/final" --set run.output_dir="$work/eval-before"
$dpo eval --config configs/demo_eval.yaml --set run.output_dir="$work/eval-after"
echo; echo "== 4. ground-truth reward of responses sampled for the held-out prompts"
reward() {
  local line
  line=$($dpo score-synthetic --model "$1" --data "$work/data/eval.jsonl" --max-new-tokens 6 --seed 0)
  echo "$line" >&2
  echo "$line" | sed -E 's/.*sampled responses ([0-9.]+).*/\1/'
}
r_init=$(reward "$work/init"); r_sft=$(reward "$work/sft/final"); r_dpo=$(reward "$work/dpo/final")
metric() { grep -oE "\"$2\": *[-0-9.eE+]+" "$work/$1/eval_metrics.json" | sed -E 's/.*: *//'; }
echo
printf '%-22s %10s %10s %10s %14s\n' model loss accuracy margin "true reward"
printf '%-22s %10s %10s %10s %14.4f\n' "random init" - - - "$r_init"
for row in "before: SFT eval-before $r_sft" "after: DPO eval-after $r_dpo"; do
  set -- $row
  printf '%-22s %10.4f %10.4f %10.4f %14.4f\n' "$1 $2" "$(metric "$3" loss)" "$(metric "$3" rewards/accuracies)" \
    "$(metric "$3" rewards/margins)" "$4"
done
echo "(loss, accuracy and margin: DPO metrics on 256 held-out pairs with the SFT model as reference; before DPO the"
echo " policy is the reference, so the loss is ln 2 and the margin 0. true reward: the task's rule on sampled responses.)"
echo; echo "== 5. the training curves (TensorBoard: tensorboard --logdir $work)"
$dpo plot "$work/dpo"
echo; echo "demo finished in $(( $(date +%s) - start )) s"
