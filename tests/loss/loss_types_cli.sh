#!/usr/bin/env bash
# Every loss type trains and evaluates end to end on a tiny Llama; the batch-wide losses (aot,
# aot_unpaired, sft) give the same steps on 2 ranks as on 1 and do not depend on the micro-batch
# size; with one pair per batch aot and aot_unpaired take exactly sigmoid's steps (their sorts are
# then the identity), which checks the two-pass gradient against plain autograd; the reference-free
# losses never open a reference; and a reference file summed without loss.ld_alpha is refused.
set -uo pipefail
dpo=$1
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../e2e_helpers.sh"

make_tiny_inputs "$dpo" "$work" 32
cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/run, log_every: 1}
model: {policy: $work/model}
data: {train: $work/data/train.jsonl, eval: $work/data/eval.jsonl, max_length: 64, max_prompt_length: 32}
train: {global_batch_size: 8, micro_batch_size: 2, epochs: 1, optimizer: adamw, lr: 1.0e-3, warmup_steps: 0}
YAML

for type in sigmoid ipo ipo_sum hinge robust exo_pair nca_pair bco_pair sppo_hard aot aot_unpaired apo_zero apo_down \
            discopop sft sigmoid_norm simpo cpo unlikelihood; do
  if "$dpo" train --config "$work/run.yaml" --set loss.type=$type --set loss.label_smoothing=0.1 \
       --set run.output_dir="$work/t-$type" --set train.eval_every=4 >"$work/$type.txt" 2>&1 \
     && python3 -c "
import json, math, sys
rows = [json.loads(l) for l in open('$work/t-$type/metrics.jsonl')]
assert any('eval_loss' in r for r in rows) and all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
"; then pass "loss.type $type trains and evaluates with finite metrics"
  else bad "loss.type $type: $(tail -3 "$work/$type.txt")"; fi
done

# A weighted list (TRL's MPO) with WPO's weights, RPO's NLL term, LD-DPO and an f-divergence.
if "$dpo" train --config "$work/run.yaml" --set loss.type=sigmoid,bco_pair,sft --set loss.weights=0.8,0.2,1.0 \
     --set loss.use_weighting=true --set loss.rpo_alpha=0.5 --set loss.ld_alpha=0.5 --set loss.f_divergence=js_divergence \
     --set run.output_dir="$work/mpo" >"$work/mpo.txt" 2>&1; then pass "a weighted list with WPO, RPO, LD-DPO and js_divergence trains"
else bad "mixed loss: $(tail -3 "$work/mpo.txt")"; fi

# The batch-wide losses: 2 ranks equal 1 rank, and the micro-batch size changes nothing.
for type in aot aot_unpaired sft sigmoid,sft; do
  name=${type/,/-}
  "$dpo" train --config "$work/run.yaml" --set loss.type=$type \
    --set run.output_dir="$work/np1-$name-m2" >"$work/np1-$name-m2.txt" 2>&1 || bad "$type: $(tail -3 "$work/np1-$name-m2.txt")"
  "$mpiexec" --oversubscribe -np 2 "$dpo" train --config "$work/run.yaml" --set loss.type=$type \
    --set run.output_dir="$work/np2-$name" >"$work/np2-$name.txt" 2>&1 || bad "$type on 2 ranks: $(tail -3 "$work/np2-$name.txt")"
  "$dpo" train --config "$work/run.yaml" --set loss.type=$type --set train.micro_batch_size=8 \
    --set run.output_dir="$work/np1-$name" >"$work/np1-$name.txt" 2>&1 || bad "$type on 1 rank: $(tail -3 "$work/np1-$name.txt")"
  if out=$(same_steps "$work/np1-$name-m2" "$work/np2-$name" 1e-4 2>&1) &&
     out2=$(same_steps "$work/np1-$name-m2" "$work/np1-$name" 1e-4 2>&1); then
    pass "$type: 2 ranks and one micro-batch of 8 take the steps of 1 rank with micro-batches of 2"
  else bad "$type across ranks / micro-batches: $out $out2"; fi
done

# One pair per batch: the sorts are the identity, so aot and aot_unpaired are sigmoid exactly.
for type in sigmoid aot aot_unpaired; do
  "$dpo" train --config "$work/run.yaml" --set loss.type=$type --set train.global_batch_size=1 --set train.micro_batch_size=1 \
    --set train.max_steps=6 --set run.output_dir="$work/one-$type" >"$work/one-$type.txt" 2>&1 || bad "$type, batch 1"
done
for type in aot aot_unpaired; do
  out=$(same_steps "$work/one-sigmoid" "$work/one-$type" 1e-5 2>&1) && pass "$type with one pair per batch takes sigmoid's steps" \
    || bad "$type vs sigmoid at batch 1: $out"
done

# Reference-free: no reference is loaded or opened, and precompute-ref has nothing to do.
if "$dpo" train --config "$work/run.yaml" --set loss.type=simpo --set reference.logps_path="$work/absent.h5" \
     --set model.reference="$work/absent-model" --set run.output_dir="$work/simpo" >"$work/simpo.txt" 2>&1 \
     && grep -q "is not opened" "$work/simpo.txt"; then
  pass "simpo trains without opening reference.logps_path or loading model.reference (neither exists)"
else bad "simpo with an absent reference file: $(tail -3 "$work/simpo.txt")"; fi
if "$dpo" precompute-ref --config "$work/run.yaml" --set loss.type=cpo --set reference.logps_path="$work/cpo.h5" \
     >"$work/pre-cpo.txt" 2>&1 && grep -q "nothing to compute" "$work/pre-cpo.txt" && [ ! -e "$work/cpo.h5" ]; then
  pass "precompute-ref says a reference-free loss needs no reference file, and writes none"
else bad "precompute-ref with cpo: $(cat "$work/pre-cpo.txt")"; fi

# LD-DPO's sums are recorded in the reference file; a file summed otherwise is refused.
"$dpo" precompute-ref --config "$work/run.yaml" --set reference.logps_path="$work/ref.h5" --set run.output_dir="$work/pre" \
  >"$work/pre.txt" 2>&1 || bad "precompute-ref: $(tail -3 "$work/pre.txt")"
if "$dpo" train --config "$work/run.yaml" --set reference.logps_path="$work/ref.h5" --set loss.ld_alpha=0.5 \
     --set run.output_dir="$work/ld" >"$work/ld.txt" 2>&1; then bad "a reference summed without ld_alpha was accepted"
else grep -q "ld_alpha" "$work/ld.txt" && pass "a reference file summed otherwise is refused naming loss.ld_alpha" \
  || bad "ld_alpha message: $(tail -2 "$work/ld.txt")"; fi
"$dpo" precompute-ref --config "$work/run.yaml" --set reference.logps_path="$work/ref-ld.h5" --set loss.ld_alpha=0.5 \
  --set run.output_dir="$work/pre-ld" >"$work/pre-ld.txt" 2>&1 || bad "precompute-ref with ld_alpha"
"$dpo" train --config "$work/run.yaml" --set reference.logps_path="$work/ref-ld.h5" --set loss.ld_alpha=0.5 \
  --set run.output_dir="$work/ld-file" >"$work/ld-file.txt" 2>&1 || bad "training from the ld_alpha file: $(tail -2 "$work/ld-file.txt")"
"$dpo" train --config "$work/run.yaml" --set loss.ld_alpha=0.5 --set run.output_dir="$work/ld-live" >/dev/null 2>&1
out=$(same_steps "$work/ld-live" "$work/ld-file" 1e-4 2>&1) && pass "LD-DPO from its reference file equals the live reference" \
  || bad "LD-DPO file vs live: $out"

# dpo eval writes each pair's log-probs and loss; TRL's formulas fed those values give the losses.
for type in sigmoid bco_pair sppo_hard aot_unpaired; do
  "$dpo" eval --config "$work/run.yaml" --set model.policy="$work/t-sigmoid/final" --set model.reference="$work/model" \
    --set loss.type=$type --set run.output_dir="$work/eval-$type" >"$work/eval-$type.txt" 2>&1 || bad "eval $type"
  if out=$(python3 - "$work/eval-$type" $type <<'PY' 2>&1
import json, math, sys
d, kind = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(d + "/eval_pairs.jsonl")]
beta = 0.1
ls = lambda x: -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))
c = [r["policy_chosen_logps"] - r["reference_chosen_logps"] for r in rows]
rj = [r["policy_rejected_logps"] - r["reference_rejected_logps"] for r in rows]
if kind == "sigmoid": want = [-ls(beta * (x - y)) for x, y in zip(c, rj)]
if kind == "bco_pair": want = [-ls(beta * x) - ls(-beta * y) for x, y in zip(c, rj)]
if kind == "sppo_hard": want = [(x - 0.5 / beta) ** 2 + (y + 0.5 / beta) ** 2 for x, y in zip(c, rj)]
if kind == "aot_unpaired": want = [-ls(beta * (x - y)) for x, y in zip(sorted(c), sorted(rj))]
got = [r["loss"] for r in rows]
assert len(rows) == 16, len(rows)
assert all(abs(g - w) <= 1e-9 * max(1, abs(w)) for g, w in zip(got, want)), (got, want)
mean = json.load(open(d + "/eval_metrics.json"))["loss"]
assert abs(mean - sum(want) / len(want)) <= 1e-9, (mean, sum(want) / len(want))
PY
  ); then pass "eval_pairs.jsonl of $type: TRL's formula of the written log-probs gives each loss and the mean"
  else bad "eval_pairs.jsonl of $type: $out"; fi
done

# Config errors name the key.
"$dpo" train --config "$work/run.yaml" --set loss.type=sigmoid,sft --set loss.weights=1 >"$work/w.txt" 2>&1
grep -q "loss.weights" "$work/w.txt" && pass "a weight count that does not match is refused naming loss.weights" || bad "$(cat "$work/w.txt")"
"$dpo" train --config "$work/run.yaml" --set loss.type=sigmoid,bco >"$work/t.txt" 2>&1
grep -q "'bco' is not one of" "$work/t.txt" && pass "an unknown list item is refused naming it" || bad "$(cat "$work/t.txt")"

[ "$failures" -eq 0 ] && echo "all passed" || { echo "$failures failure(s)"; exit 1; }
