#!/usr/bin/env bash
# launch/mpirun.sh on this node: 2 ranks with and without a hostfile; SIGUSR1 and SIGINT (Ctrl-C) to
# the launcher (it passes SIGUSR1 to mpirun, which passes it to the ranks) end every rank after a
# checkpoint with exit code 75, and the same command resumes and finishes with one metrics line per step.
# A stop at the start counts too: before mpirun starts, while it starts the ranks, and through
# launch/slurm/job.sh (which shares launch/stop_signal.sh).
# Usage: launch_mpirun.sh DPO_BINARY SOURCE_DIR
set -uo pipefail
DPO_BIN=$(realpath "$1")
export DPO_BIN
source_dir=$(realpath "$2")
launcher=$source_dir/launch/mpirun.sh
work=$(mktemp -d)
trap 'pkill -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
source "$source_dir/tests/e2e_helpers.sh"

make_tiny_inputs "$DPO_BIN" "$work" 256
cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/run, log_every: 1}
model: {policy: $work/model}
data: {train: $work/data/train.jsonl, max_length: 64, max_prompt_length: 32}
train: {global_batch_size: 16, micro_batch_size: 4, epochs: 40, optimizer: adamw, lr: 1.0e-3, warmup_steps: 0, save_every: 1000}
YAML
steps=640
cd "$work" || exit 1

if "$launcher" --ranks-per-node 2 train --config run.yaml --set run.output_dir="$work/one" --set train.max_steps=3 >one.txt 2>&1 \
   && grep -q -- "-np 2" one.txt && grep -q "2 rank(s) (mpi backend)" one.txt; then
  pass "one node, 2 ranks"
else
  bad "one node: $(tail -5 one.txt)"
fi
echo "localhost slots=2" >hostfile.txt
if "$launcher" --hostfile hostfile.txt --ranks-per-node 2 train --config run.yaml --set run.output_dir="$work/hosts" \
     --set train.max_steps=3 >hosts.txt 2>&1 && grep -q -- "--hostfile hostfile.txt" hosts.txt && grep -q "2 rank(s)" hosts.txt; then
  pass "hostfile, 2 ranks"
else
  bad "hostfile: $(tail -5 hosts.txt)"
fi
"$launcher" --ranks-per-node 0 train --config run.yaml >zero.txt 2>&1 && bad "0 ranks per node accepted" \
  || { grep -q "positive integer" zero.txt && pass "0 ranks per node refused" || bad "message: $(cat zero.txt)"; }

# stop_with SIGNAL AFTER_STEPS LOG: starts the launcher (with SIGINT at its default, as a terminal
# leaves it; a shell's background job would ignore it), signals it once this run has written
# AFTER_STEPS new metrics lines, and checks that every rank stopped with a checkpoint and exit code 75.
# Counting new lines matters on a resumed run: the lines of the run before would otherwise let the
# signal reach mpirun before it has started the ranks, and mpirun drops it then.
stop_with() {
  local before
  before=$(grep -c loss run/metrics.jsonl 2>/dev/null)
  python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    "$launcher" --ranks-per-node 2 train --config run.yaml >"$3" 2>&1 &
  local pid=$! rc
  for _ in $(seq 300); do [ "$(grep -c loss run/metrics.jsonl 2>/dev/null)" -ge $((before + $2)) ] 2>/dev/null && break; sleep 0.1; done
  kill -"$1" "$pid"
  wait "$pid"
  rc=$?
  stopped=$(ls run/checkpoints 2>/dev/null | sed -n 's/^step-//p' | sort -n | tail -1)
  if [ "$rc" -eq 75 ] && [ -n "$stopped" ] && [ -f "run/checkpoints/step-$stopped/DONE" ] && [ ! -e run/final ]; then
    pass "SIG$1 to the launcher (Ctrl-C is SIGINT): every rank stopped after step $stopped with a checkpoint, exit code 75"
  else
    bad "SIG$1: rc=$rc checkpoint='$stopped': $(tail -3 "$3")"
  fi
}
# A stop while the launcher looks for GPUs (a slow nvidia-smi here) ends it before mpirun starts.
mkdir -p slow-gpu-query
printf '#!/bin/sh\ntouch %s/queried\nsleep 2\n' "$work" >slow-gpu-query/nvidia-smi
chmod +x slow-gpu-query/nvidia-smi
PATH=$work/slow-gpu-query:$PATH "$launcher" train --config run.yaml --set run.output_dir="$work/early" >early.txt 2>&1 &
pid=$!
for _ in $(seq 100); do [ -e queried ] && break; sleep 0.05; done
kill -USR1 "$pid"
wait "$pid"
rc=$?
if [ "$rc" -eq 75 ] && grep -q "stopped before mpirun started" early.txt && ! grep -q "^+ mpirun" early.txt && [ ! -e early ]; then
  pass "a stop before mpirun starts: nothing started, exit 75"
else
  bad "stop before mpirun: rc=$rc: $(tail -3 early.txt)"
fi
# A stop the moment mpirun starts, before it has ranks (it drops the signal then) or while they
# load libtorch, still ends the job with exit 75 and no final model.
"$launcher" --ranks-per-node 2 train --config run.yaml --set run.output_dir="$work/starting" >starting.txt 2>&1 &
pid=$!
for _ in $(seq 200); do grep -q "^+ mpirun" starting.txt && break; sleep 0.01; done
kill -USR1 "$pid"
wait "$pid"
rc=$?
if [ "$rc" -eq 75 ] && [ ! -e starting/final ]; then
  pass "a stop while mpirun starts the ranks: exit 75, no final model"
else
  bad "stop while starting: rc=$rc: $(grep -v -- --- starting.txt | tail -3)"
fi
# launch/slurm/job.sh shares the launcher's stop (outside Slurm, with mpirun): a stop as it starts
# ends it with 75, its requeue status.
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 DPO_LAUNCHER=mpirun \
  bash "$source_dir/launch/slurm/job.sh" train run.yaml --set run.output_dir="$work/job" >job.txt 2>&1 &
pid=$!
for _ in $(seq 200); do grep -q "^== .* dpo train --config" job.txt && break; sleep 0.01; done
kill -USR1 "$pid"
wait "$pid"
rc=$?
if [ "$rc" -eq 75 ] && grep -q "got SIGUSR1" job.txt && [ ! -e job/final ]; then
  pass "slurm/job.sh: a stop as it starts: exit 75, no final model"
else
  bad "job.sh stop: rc=$rc: $(grep -v -- --- job.txt | tail -3)"
fi

stop_with USR1 20 first.txt
stop_with INT 20 interrupted.txt
grep -q "resuming from" interrupted.txt || bad "the interrupted run did not resume: $(head -5 interrupted.txt)"
if "$launcher" --ranks-per-node 2 train --config run.yaml >second.txt 2>&1 && grep -q "resuming from .*step-$stopped" second.txt \
   && [ "$(grep -c loss run/metrics.jsonl)" -eq "$steps" ]; then
  pass "the same command resumed from step $stopped and finished ($steps metrics lines)"
else
  bad "resume: $(grep -c loss run/metrics.jsonl) lines: $(tail -3 second.txt)"
fi
exit $((failures > 0))
