#!/usr/bin/env bash
# Data-parallel gauges on this machine: MPI allreduce bandwidth for gradient-sized buffers, and the
# share of step time spent summing gradients in a 2-rank DPO run of the demo model.
# Usage: scripts/bench_dist.sh [ranks]   (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}
dpo=build/dpo
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi() { mpirun --oversubscribe --bind-to none -np "$ranks" "$@"; }
work=out/bench-dist
rm -rf "$work" && mkdir -p "$work"
mpi $dpo bench-comm --repeats 5
$dpo make-demo-data --out "$work/data" --vocab-size 64 --train-pairs 2048 --eval-pairs 64 >/dev/null
$dpo init-model --arch llama --out "$work/model" --seed 1 --set vocab_size=64 >/dev/null
mpi $dpo train --config configs/demo_dpo.yaml --set model.policy="$work/model" --set run.output_dir="$work/run" \
  --set data.train="$work/data/train.jsonl" --set data.eval="$work/data/eval.jsonl" --set train.epochs=1 \
  --set train.eval_every=0 --set run.log_every=1 >"$work/train.log"
# Skip the first steps (warm-up of allocators and connections).
awk -F'[:,}]' '{ for (i = 1; i < NF; i++) { if ($i ~ /"grad_sync_s"/) s = $(i+1); if ($i ~ /"step_time_s"/) t = $(i+1);
                 if ($i ~ /"tokens_per_s"/) k = $(i+1) } if (NR > 3) { S += s; T += t; K += k; n++ } }
     END { printf "demo model, %d ranks: %d steps, mean step %.1f ms, gradient sum %.2f ms (%.1f%% of the step), %.0f tokens/s\n",
           '"$ranks"', n, 1000 * T / n, 1000 * S / n, 100 * S / T, K / n }' "$work/run/metrics.jsonl"
