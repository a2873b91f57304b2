#!/usr/bin/env bash
# Ranks that disagree stop the job instead of training on silently, under mpiexec with 2 ranks: a
# rank that reads another data file, or other model weights, under the same config (a node-local
# copy: each rank runs in its own directory, where the config's relative paths lead elsewhere) ends
# train, precompute-ref and eval non-zero within seconds, naming the rank and the file. An srun
# step of 2 tasks without MPI (simulated by Slurm's variables) is refused with how to launch; the
# batch script of a 2-task job and mpirun inside a step are not.
# Usage: rank_agreement_end_to_end.sh DPO_BINARY MPIEXEC
set -uo pipefail
dpo=$(realpath "$1")
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../e2e_helpers.sh"
mpi() { "$mpiexec" --oversubscribe "$@"; }

# Node a and node b: the same data and model, except what a case changes on b.
make_tiny_inputs "$dpo" "$work/a" 48
mkdir -p "$work/b" && cp -r "$work/a/data" "$work/a/model" "$work/b/"
cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/out, log_every: 1}
model: {policy: model}
data: {train: data/train.jsonl, eval: data/eval.jsonl, max_length: 64, max_prompt_length: 32}
reference: {logps_path: $work/ref.h5}
train: {global_batch_size: 8, micro_batch_size: 2, max_steps: 2, optimizer: adamw, lr: 1.0e-3, warmup_steps: 0}
YAML

# expect_refusal NAME COMMAND TEXT...: rank 0 in a/, rank 1 in b/; non-zero, quickly, every TEXT in the output.
expect_refusal() {
  local name=$1 command=$2 start rc out
  shift 2
  start=$(date +%s)
  out=$(timeout 120 "$mpiexec" --oversubscribe -np 1 -wdir "$work/a" "$dpo" $command --config "$work/run.yaml" : \
          -np 1 -wdir "$work/b" "$dpo" $command --config "$work/run.yaml" 2>&1)
  rc=$?
  local seconds=$(( $(date +%s) - start )) missing=""
  for text in "$@"; do grep -qF -- "$text" <<<"$out" || missing="$missing '$text'"; done
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ -n "$missing" ]; then
    bad "$name: exit $rc after $seconds s, missing$missing: $(grep -i error <<<"$out" | head -3)"
  else
    pass "$name: refused in $seconds s: $(grep -m1 -o 'rank 1: [^(]*' <<<"$out" | cut -c1-150)"
  fi
}

# Same inputs on both nodes: the job runs.
same="train --config $work/run.yaml --set reference.logps_path= --set run.output_dir=$work/same"
mpi -np 1 -wdir "$work/a" "$dpo" $same : -np 1 -wdir "$work/b" "$dpo" $same >"$work/same.txt" 2>&1 \
  && pass "same inputs on both ranks: trains" || bad "same inputs refused: $(tail -3 "$work/same.txt")"

# Rank 1's data file has fewer pairs.
head -n 40 "$work/a/data/train.jsonl" >"$work/b/data/train.jsonl"
expect_refusal "train, other data on rank 1" "train --set reference.logps_path=" \
  "rank 1: data.train data/train.jsonl: 40 pairs, fingerprint" "but rank 0 has 48 pairs, fingerprint"
expect_refusal "precompute-ref, other data on rank 1" "precompute-ref" "rank 1: data.train data/train.jsonl: 40 pairs"
cp "$work/a/data/train.jsonl" "$work/b/data/"

# Rank 1's eval file differs in one token (same number of pairs).
sed -i '1s/"prompt_input_ids":\[/"prompt_input_ids":[5,/' "$work/b/data/eval.jsonl"
expect_refusal "eval, other eval data on rank 1" "eval --set reference.logps_path=" \
  "rank 1: data.eval data/eval.jsonl: 16 pairs, fingerprint" "but rank 0 has 16 pairs"
cp "$work/a/data/eval.jsonl" "$work/b/data/"

# Rank 1 holds other weights (a stale copy of the model).
"$dpo" init-model --arch llama --out "$work/b/model" --seed 1 --set vocab_size=64 --set hidden_size=32 \
  --set intermediate_size=64 --set num_attention_heads=4 --set num_key_value_heads=2 >/dev/null
expect_refusal "train, other weights on rank 1" "train --set reference.logps_path=" \
  "rank 1: model.policy: model, weights fingerprint" "but rank 0 has model, weights fingerprint"
expect_refusal "precompute-ref, other weights on rank 1" "precompute-ref" "rank 1: model.reference: model, weights"
expect_refusal "eval, other weights on rank 1" "eval --set reference.logps_path=" "rank 1: model.policy: model, weights"

# srun without MPI: each of the step's tasks alone would run the whole job; refused before any work.
start=$(date +%s)
out=$(cd "$work/a" && SLURM_JOB_ID=1 SLURM_STEP_ID=0 SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2 \
        "$dpo" train --config "$work/run.yaml" --set run.output_dir="$work/srun" 2>&1)
rc=$?
if [ "$rc" -ne 0 ] && grep -qF "srun --mpi=pmix" <<<"$out" && grep -qF "srun --mpi=list" <<<"$out" && [ ! -e "$work/srun" ]; then
  pass "srun step of 2 tasks without MPI refused (exit $rc, $(( $(date +%s) - start )) s): $(cut -c1-120 <<<"$out")"
else
  bad "srun without MPI: exit $rc: $out"
fi
(cd "$work/a" && SLURM_JOB_ID=1 SLURM_NTASKS=2 "$dpo" train --config "$work/run.yaml" --set reference.logps_path= \
   --set run.output_dir="$work/batch" >"$work/batch.txt" 2>&1) \
  && pass "the batch script of a 2-task job runs dpo alone" || bad "batch script refused: $(tail -2 "$work/batch.txt")"
SLURM_JOB_ID=1 SLURM_STEP_ID=0 SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2 mpi -np 2 -wdir "$work/a" "$dpo" train \
  --config "$work/run.yaml" --set reference.logps_path= --set run.output_dir="$work/mpirun" >"$work/mpirun.txt" 2>&1 \
  && pass "mpirun inside a Slurm step runs" || bad "mpirun inside a step refused: $(tail -2 "$work/mpirun.txt")"

[ "$failures" -eq 0 ] && echo "rank agreement end-to-end: all checks passed" || { echo "rank agreement end-to-end: $failures failed"; exit 1; }
