#!/usr/bin/env bash
# Plackett-Luce end to end on ranked synthetic data (4 responses per prompt, best first): it trains
# from the live reference and from precompute-ref's file with the same steps; 2 ranks take the steps
# of 1; from HDF5 as from JSONL; on a file of pairs it takes sigmoid's steps (K = 2 is DPO); a pair
# loss refuses ranked data; and dpo eval's per-example values give the paper's formula's losses.
set -uo pipefail
dpo=$1
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../e2e_helpers.sh"

make_tiny_inputs "$dpo" "$work" 32  # the pairs and the model
"$dpo" make-demo-data --out "$work/ranked" --train-pairs 32 --eval-pairs 16 --vocab-size 64 --responses 4 >/dev/null
cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/run, log_every: 1}
model: {policy: $work/model}
data: {train: $work/ranked/train.jsonl, eval: $work/ranked/eval.jsonl, max_length: 64, max_prompt_length: 32}
loss: {type: plackett_luce, beta: 0.5}
train: {global_batch_size: 8, micro_batch_size: 2, epochs: 2, optimizer: adamw, lr: 1.0e-3, warmup_steps: 0, eval_every: 4}
YAML

"$dpo" train --config "$work/run.yaml" --set run.output_dir="$work/live" >"$work/live.txt" 2>&1 || bad "train: $(tail -3 "$work/live.txt")"
if python3 - "$work/live/metrics.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r]
evals = [r for r in rows if "eval_loss" in r]
assert abs(steps[0]["loss"] - math.log(24)) < 1e-5, steps[0]["loss"]  # policy == reference: log 4!
for r in steps + [{k[5:]: v for k, v in e.items() if k.startswith("eval_")} for e in evals]:
    assert 0 <= r["rewards/ranking_accuracy_full"] <= r["rewards/ranking_accuracy_pairwise"] <= 1, r
assert steps[-1]["loss"] < steps[0]["loss"], (steps[0]["loss"], steps[-1]["loss"])
assert evals, "no eval"
PY
then pass "plackett_luce trains on 4 ranked responses: loss log 4! at step 1, then lower; ranking metrics logged"
else bad "plackett_luce metrics"; fi

"$dpo" precompute-ref --config "$work/run.yaml" --set reference.logps_path="$work/ref.h5" >"$work/pre.txt" 2>&1 \
  || bad "precompute-ref: $(tail -3 "$work/pre.txt")"
"$dpo" inspect "$work/ref.h5" | grep -q "up to 2 responses below rejected" && pass "the reference file holds 4 log-probs per example" \
  || bad "inspect ref.h5: $("$dpo" inspect "$work/ref.h5" | tail -3)"
"$dpo" train --config "$work/run.yaml" --set reference.logps_path="$work/ref.h5" --set run.output_dir="$work/stored" \
  >"$work/stored.txt" 2>&1 || bad "train from ref.h5: $(tail -3 "$work/stored.txt")"
out=$(same_steps "$work/live" "$work/stored" 1e-6 2>&1) && pass "stored reference log-probs give the live reference's steps" \
  || bad "stored vs live: $out"

"$mpiexec" --oversubscribe -np 2 "$dpo" train --config "$work/run.yaml" --set reference.logps_path="$work/ref.h5" \
  --set run.output_dir="$work/np2" >"$work/np2.txt" 2>&1 || bad "2 ranks: $(tail -3 "$work/np2.txt")"
out=$(same_steps "$work/stored" "$work/np2" 1e-4 2>&1) && pass "2 ranks take the steps of 1 rank" || bad "2 ranks vs 1: $out"

"$dpo" convert-data "$work/ranked/train.jsonl" "$work/ranked/train.h5" >/dev/null 2>&1 || bad "convert-data to HDF5"
"$dpo" train --config "$work/run.yaml" --set data.train="$work/ranked/train.h5" --set run.output_dir="$work/h5" \
  >"$work/h5.txt" 2>&1 || bad "train from HDF5: $(tail -3 "$work/h5.txt")"
out=$(same_steps "$work/live" "$work/h5" 1e-9 2>&1) && pass "ranked data from HDF5 trains as from JSONL" || bad "HDF5 vs JSONL: $out"

# K = 2: on pairs, plackett_luce is sigmoid.
for type in sigmoid plackett_luce; do
  "$dpo" train --config "$work/run.yaml" --set loss.type=$type --set data.train="$work/data/train.jsonl" \
    --set data.eval="$work/data/eval.jsonl" --set run.output_dir="$work/k2-$type" >"$work/k2-$type.txt" 2>&1 \
    || bad "$type on pairs: $(tail -3 "$work/k2-$type.txt")"
done
out=$(same_steps "$work/k2-sigmoid" "$work/k2-plackett_luce" 1e-6 2>&1) && pass "plackett_luce on pairs takes sigmoid's steps" \
  || bad "K = 2 vs sigmoid: $out"

if "$dpo" train --config "$work/run.yaml" --set loss.type=sigmoid --set run.output_dir="$work/refused" >"$work/refused.txt" 2>&1; then
  bad "sigmoid trained on ranked data"
else grep -q "data.train: .*ranked records.*plackett_luce" "$work/refused.txt" && pass "a pair loss refuses ranked data naming plackett_luce" \
  || bad "refusal message: $(tail -2 "$work/refused.txt")"; fi
"$dpo" train --config "$work/run.yaml" --set loss.type=plackett_luce,sft >"$work/list.txt" 2>&1
grep -q "plackett_luce ranks K responses" "$work/list.txt" && pass "plackett_luce in a list is refused" || bad "$(cat "$work/list.txt")"

# dpo eval's values fed to the paper's formula give each example's loss and the metrics.
"$dpo" eval --config "$work/run.yaml" --set model.policy="$work/live/final" --set model.reference="$work/model" \
  --set run.output_dir="$work/eval" >"$work/eval.txt" 2>&1 || bad "eval: $(tail -3 "$work/eval.txt")"
if out=$(python3 - "$work/eval" <<'PY' 2>&1
import json, math, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(d + "/eval_pairs.jsonl")]
beta = 0.5
losses, pairwise, full = [], [], []
for r in rows:
    pol = [r["policy_chosen_logps"], r["policy_rejected_logps"]] + r["policy_more_rejected_logps"]
    ref = [r["reference_chosen_logps"], r["reference_rejected_logps"]] + r["reference_more_rejected_logps"]
    rw = [beta * (p - q) for p, q in zip(pol, ref)]
    assert len(rw) == 4, rw
    want = -sum(rw[k] - math.log(sum(math.exp(x) for x in rw[k:])) for k in range(len(rw)))
    assert abs(r["loss"] - want) <= 1e-9 * max(1, abs(want)), (r["loss"], want)
    losses.append(want)
    right = [rw[i] > rw[j] for i in range(4) for j in range(i + 1, 4)]
    pairwise.append(sum(right) / len(right))
    full.append(float(all(right)))
m = json.load(open(d + "/eval_metrics.json"))
assert len(rows) == 16
assert abs(m["loss"] - sum(losses) / 16) <= 1e-9, m["loss"]
assert abs(m["rewards/ranking_accuracy_pairwise"] - sum(pairwise) / 16) <= 1e-12, m
assert abs(m["rewards/ranking_accuracy_full"] - sum(full) / 16) <= 1e-12, m
PY
); then pass "eval_pairs.jsonl: the paper's formula of the written log-probs gives each loss and the ranking accuracies"
else bad "eval_pairs.jsonl: $out"; fi

[ "$failures" -eq 0 ] && echo "all passed" || { echo "$failures failure(s)"; exit 1; }
