#!/usr/bin/env bash
# dpo under mpiexec: a 2-rank training run writes its metrics and checkpoint once; ranks with
# different configs are refused naming the key; a rank killed mid-run ends the whole job quickly.
set -uo pipefail
dpo=$1
mpiexec=$2
work=$(mktemp -d)
trap 'pkill -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
source "$(dirname "$0")/../e2e_helpers.sh"
mpi() { "$mpiexec" --oversubscribe "$@"; }

make_tiny_inputs "$dpo" "$work" 96
cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/run, log_every: 1}
model: {policy: $work/model}
data: {train: $work/data/train.jsonl, eval: $work/data/eval.jsonl, max_length: 64, max_prompt_length: 32}
train: {global_batch_size: 16, micro_batch_size: 4, epochs: 1, optimizer: adamw, lr: 1.0e-3, warmup_steps: 0, save_every: 3}
YAML

if mpi -np 2 "$dpo" train --config "$work/run.yaml" >"$work/train.txt" 2>&1; then
  lines=$(grep -c '"loss"' "$work/run/metrics.jsonl")
  [ "$lines" -eq 6 ] && pass "2 ranks: one metrics line per step, written once" || bad "metrics.jsonl has $lines lines"
  [ -f "$work/run/checkpoints/step-6/DONE" ] && [ -f "$work/run/final/model.safetensors" ] \
    && pass "2 ranks: checkpoint and final model" || bad "no checkpoint/final model"
  grep -q "2 rank(s) (mpi backend)" "$work/train.txt" && pass "2 ranks over MPI" || bad "banner: $(head -3 "$work/train.txt")"
else
  bad "2-rank training failed: $(tail -5 "$work/train.txt")"
fi

# Reference log-probs precomputed by 2 ranks, then training from the file without the reference model.
ref=$work/ref.h5
if mpi -np 2 "$dpo" precompute-ref --config "$work/run.yaml" --set reference.logps_path="$ref" --set run.output_dir="$work/pre" \
     >"$work/pre.txt" 2>&1 && [ -f "$ref" ] && [ ! -e "$ref.partial" ]; then
  pass "2-rank precompute-ref wrote one complete file"
  "$dpo" inspect "$ref" | grep -qi "fingerprint" && pass "inspect shows the provenance" || bad "inspect $ref"
  mpi -np 2 "$dpo" train --config "$work/run.yaml" --set reference.logps_path="$ref" --set run.output_dir="$work/fromfile" \
    >"$work/fromfile.txt" 2>&1 && pass "2-rank training from the file" || bad "training from the file: $(tail -3 "$work/fromfile.txt")"
  # The reference file no longer matches edited data: refused, naming the dataset.
  cp "$work/data/train.jsonl" "$work/edited.jsonl"
  sed -i '1s/"prompt_input_ids":\[/"prompt_input_ids":[5,/' "$work/edited.jsonl"
  if "$dpo" train --config "$work/run.yaml" --set reference.logps_path="$ref" --set data.train="$work/edited.jsonl" \
       --set run.output_dir="$work/edited" >"$work/edited.txt" 2>&1; then bad "edited data accepted"
  else grep -qi "dataset" "$work/edited.txt" && pass "edited data refused" || bad "edited data message: $(cat "$work/edited.txt")"; fi
else
  bad "precompute-ref failed: $(tail -3 "$work/pre.txt")"
fi

# Different configs on the two ranks (Open MPI's app contexts): refused, naming the key.
start=$(date +%s)
if mpi -np 1 "$dpo" train --config "$work/run.yaml" --set run.output_dir="$work/x" --set train.lr=0.001 : \
     -np 1 "$dpo" train --config "$work/run.yaml" --set run.output_dir="$work/x" --set train.lr=0.002 >"$work/mismatch.txt" 2>&1; then
  bad "mismatched configs were accepted"
else
  grep -q "lr" "$work/mismatch.txt" && grep -q "differs" "$work/mismatch.txt" && pass "mismatched configs refused naming the key" \
    || bad "mismatch message: $(cat "$work/mismatch.txt")"
fi
[ $(( $(date +%s) - start )) -lt 60 ] || bad "mismatch took too long"

# Kill one rank in the middle of a long run: mpiexec must end the job, non-zero, within seconds.
mpi -np 2 "$dpo" train --config "$work/run.yaml" --set run.output_dir="$work/killed" --set train.epochs=1000 \
  >"$work/killed.txt" 2>&1 &
launcher=$!
for _ in $(seq 1 100); do grep -q '"step"' "$work/killed/metrics.jsonl" 2>/dev/null && break; sleep 0.2; done
victim=$(pgrep -f "$work/run.yaml" -n -x -- 2>/dev/null || pgrep -f "dpo train --config $work/run.yaml" | tail -1)
if [ -n "$victim" ]; then
  kill -9 "$victim"
  start=$(date +%s)
  for _ in $(seq 1 60); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$launcher" 2>/dev/null; then bad "job still running 30 s after a rank was killed"; kill -9 "$launcher"
  else wait "$launcher"; rc=$?; [ "$rc" -ne 0 ] && pass "a killed rank ends the job (exit $rc) in $(( $(date +%s) - start )) s" || bad "exit 0 after kill"; fi
else
  bad "no rank process found to kill"
fi

[ "$failures" -eq 0 ] && echo "mpi cli end-to-end: all checks passed" || { echo "mpi cli end-to-end: $failures failed"; exit 1; }
