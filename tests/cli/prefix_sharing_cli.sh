#!/usr/bin/env bash
# train.prefix_sharing end to end: training with shared prefixes and packed rows takes the steps of
# training with padded rows (to float rounding), logs padding_share, and its precompute-ref file
# serves a run without sharing with policy == reference at loss ln 2; `dpo bench` reports both
# layouts side by side (padding, executed FLOPs, the share outside matrix products).
set -uo pipefail
dpo=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../e2e_helpers.sh"

make_tiny_inputs "$dpo" "$work" 24 || bad "tiny inputs"
# Responses of varied length: cut each line's chosen/rejected by its index, so rows pad.
python3 - "$work/data/train.jsonl" <<'PY'
import json, sys
path = sys.argv[1]
rows = [json.loads(l) for l in open(path)]
for i, r in enumerate(rows):
    r["chosen_input_ids"] = r["chosen_input_ids"][: 2 + i % 7]
    r["rejected_input_ids"] = r["rejected_input_ids"][: 2 + (3 * i) % 5]
    r["prompt_input_ids"] = r["prompt_input_ids"][: 1 + (5 * i) % 9]
open(path, "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/unused}
model: {policy: $work/model}
data: {train: $work/data/train.jsonl, eval: $work/data/eval.jsonl, max_length: 32, max_prompt_length: 16}
train: {global_batch_size: 8, micro_batch_size: 4, max_steps: 3, eval_every: 3, warmup_steps: 0, optimizer: sgd, lr: 0.5}
YAML

for sharing in false true; do
  "$dpo" train --config "$work/run.yaml" --set run.output_dir="$work/run-$sharing" --set train.prefix_sharing=$sharing \
    >"$work/train-$sharing.txt" 2>&1 || bad "train prefix_sharing=$sharing: $(tail -3 "$work/train-$sharing.txt")"
done
if same_steps "$work/run-false" "$work/run-true" 1e-4; then
  pass "shared prefixes take the padded rows' steps (loss, grad norm, margins, rewards; SGD, 3 steps)"
else
  bad "shared prefixes and padded rows took different steps"
fi
if python3 - "$work/run-false/metrics.jsonl" "$work/run-true/metrics.jsonl" <<'PY'
import json, sys
share = [[json.loads(l)["padding_share"] for l in open(p) if '"loss"' in l and '"eval_loss"' not in l] for p in sys.argv[1:3]]
assert all(0 <= s < 1 for s in share[0] + share[1]), share
assert all(shared < padded for padded, shared in zip(*share)), share
eval_loss = [[json.loads(l)["eval_loss"] for l in open(p) if '"eval_loss"' in l] for p in sys.argv[1:3]]
assert eval_loss[0] and abs(eval_loss[0][-1] - eval_loss[1][-1]) <= 1e-4, eval_loss
PY
then
  pass "padding_share is logged and smaller with packed rows; eval agrees"
else
  bad "padding_share or eval loss"
fi

# A reference file made with shared prefixes, read by a run without them: policy == reference.
"$dpo" precompute-ref --config "$work/run.yaml" --set run.output_dir="$work/pre" --set reference.logps_path="$work/ref.h5" \
  >"$work/pre.txt" 2>&1 || bad "precompute-ref: $(tail -3 "$work/pre.txt")"
"$dpo" train --config "$work/run.yaml" --set run.output_dir="$work/run-stored" --set train.prefix_sharing=false \
  --set reference.logps_path="$work/ref.h5" --set train.max_steps=1 >"$work/stored.txt" 2>&1 ||
  bad "train on the stored reference: $(tail -3 "$work/stored.txt")"
if python3 - "$work/run-stored/metrics.jsonl" <<'PY' && ! grep -q "differ" "$work/stored.txt"; then
import json, math, sys
first = json.loads(open(sys.argv[1]).readline())
assert abs(first["loss"] - math.log(2)) < 1e-5 and abs(first["rewards/margins"]) < 1e-5, first
PY
  pass "shared-prefix reference log-probs give loss ln 2 to a padded-row policy == reference"
else
  bad "stored shared-prefix reference against padded rows: $(head -c 400 "$work/run-stored/metrics.jsonl"; grep differ "$work/stored.txt")"
fi

# dpo bench, both layouts side by side on lengths that vary.
if "$dpo" bench --config "$work/run.yaml" --set run.output_dir="$work/bench" --seq-len 24 --prompt-len 8 \
  --length-spread 0.5 --warmup 0 --steps 1 --compare train.prefix_sharing=false,true >"$work/bench.txt" 2>&1 &&
  grep -q "one right-padded row per response" "$work/bench.txt" && grep -q "pairs packed" "$work/bench.txt" &&
  grep -q "^executed " "$work/bench.txt" && grep -q "outside matrix products" "$work/bench.txt" &&
  grep -q "^train.prefix_sharing=true " "$work/bench.txt"; then
  pass "dpo bench compares the layouts (padding, executed FLOPs, time outside matrix products)"
else
  bad "dpo bench: $(tail -20 "$work/bench.txt")"
fi
# dpo bench scores responses as the configured loss does in training: LD-DPO's weighting,
# unlikelihood's sums and WPO's weights (it once gave the loss plain sums, so these failed).
if "$dpo" bench --config "$work/run.yaml" --set run.output_dir="$work/bench" --seq-len 24 --prompt-len 8 \
  --warmup 0 --steps 1 --set loss.type=sigmoid,unlikelihood --set loss.ld_alpha=0.5 --set loss.use_weighting=true \
  >"$work/bench-scoring.txt" 2>&1 && grep -q "^executed " "$work/bench-scoring.txt"; then
  pass "dpo bench runs LD-DPO, unlikelihood and WPO's scoring"
else
  bad "dpo bench with the loss's scoring: $(tail -5 "$work/bench-scoring.txt")"
fi
# What the process set up for itself: float32 products on oneDNN (Debian's libtorch links it), or
# on libtorch's BLAS where DPO_FLOAT_MATMUL=blas asks (scripts/test_blas_kernels.sh's pass), and
# the heap on transparent huge pages where the kernel offers them (GLIBC_TUNABLES unset here).
expected_products="float32 products on oneDNN"
if [ "${DPO_FLOAT_MATMUL:-}" = blas ]; then
  expected_products="float32 products on libtorch's BLAS (DPO_FLOAT_MATMUL=blas)"
fi
if grep -qF "$expected_products" "$work/bench.txt"; then
  pass "dpo bench: $expected_products"
else
  bad "dpo bench: not $expected_products: $(grep '^device' "$work/bench.txt")"
fi
if grep -qE '\[(madvise|always)\]' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null && [ -z "${GLIBC_TUNABLES:-}" ]; then
  if grep -q "^heap .*transparent huge pages" "$work/bench.txt"; then
    pass "dpo bench: the heap asks for transparent huge pages"
  else
    bad "dpo bench: no huge pages asked for: $(grep '^heap' "$work/bench.txt")"
  fi
fi
if "$dpo" bench --config "$work/run.yaml" --set run.output_dir="$work/bench" --seq-len 24 --prompt-len 24 \
  >"$work/bad.txt" 2>&1; then
  bad "bench accepted a prompt as long as the row"
elif grep -q "prompt-len 24 leaves no response" "$work/bad.txt"; then
  pass "bench refuses a prompt that leaves no response"
else
  bad "bench's refusal: $(tail -2 "$work/bad.txt")"
fi

[ "$failures" -eq 0 ] && echo "prefix sharing: all checks passed"
exit "$failures"
