#!/usr/bin/env bash
# launch/slurm against a real Slurm (Debian's slurm-wlm + munge, started here by local_cluster.sh):
#   1. train.sbatch as a 2-task job (srun --mpi=pmix) writes its metrics, checkpoint and final model;
#   2. the same job preempted the way a time limit does it (USR1 to the batch shell, what
#      `#SBATCH --signal=B:USR1@...` sends) checkpoints, requeues itself, resumes and finishes with
#      the metrics and the model of the unpreempted run;
#   3. the same job preempted the way Slurm preempts (`scontrol requeue`: SIGTERM to every process,
#      Slurm requeues), with srun and with the mpirun-inside-the-allocation variant, does the same;
#   4. precompute-ref.sbatch writes a complete reference file that training accepts;
#   5. srun without MPI support (--mpi=none) is refused by both tasks.
# Usage: slurm_end_to_end.sh DPO_BINARY SOURCE_DIR
set -uo pipefail
dpo=$(realpath "$1")
source_dir=$(realpath "$2")
launch=$source_dir/launch/slurm
if [ "$(id -u)" -ne 0 ] || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "SKIP: needs root and Debian's slurm-wlm and munge (scripts/install_deps.sh installs them)"
  exit 77
fi

work=$(mktemp -d /tmp/dpo-slurm.XXXXXX)
cluster=$work/cluster
trap 'bash "$source_dir/tests/launch/slurm/local_cluster.sh" stop "$cluster"; [ -n "${DPO_KEEP_TEST_DIR:-}" ] || rm -rf "$work"' EXIT
source "$source_dir/tests/e2e_helpers.sh"

if ! bash "$source_dir/tests/launch/slurm/local_cluster.sh" start "$cluster"; then
  echo "FAIL: could not start the test cluster"
  exit 1
fi
export SLURM_CONF=$cluster/slurm.conf DPO_BIN=$dpo OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
sinfo

make_tiny_inputs "$dpo" "$work" 512
steps=640
cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/plain, log_every: 1}
model: {policy: $work/model}
data: {train: $work/data/train.jsonl, eval: $work/data/eval.jsonl, max_length: 64, max_prompt_length: 32}
train: {global_batch_size: 16, micro_batch_size: 4, epochs: 20, optimizer: adamw, lr: 1.0e-3, warmup_steps: 0,
        save_every: 256, eval_every: 200}
YAML
cd "$work" || exit 1

field() { scontrol show job "$1" | grep -oE "$2=[^ ]+" | head -1 | cut -d= -f2; }
# Waits for the job to end (a requeued one first waits out its BeginTime: cred_expire + 1 s here).
wait_for() {
  local job=$1 state
  for _ in $(seq 600); do
    state=$(field "$job" JobState)
    case $state in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) echo "$state"; return ;;
    esac
    sleep 0.5
  done
  echo "STILL-$state"
}
metric_lines() { grep -c '"loss"' "$1/metrics.jsonl" 2>/dev/null || echo 0; }
# metrics.jsonl without the fields that measure time.
metrics_sans_timing() {
  sed -E 's/"(grad_sync_s|mfu|peak_memory_mib|step_time_s|tokens_per_s|eval_runtime_s)":[^,}]*,?//g; s/,}/}/' "$1/metrics.jsonl"
}

# 1. An unpreempted 2-task job.
job=$(sbatch --parsable --ntasks-per-node=2 --output="$work/plain.out" "$launch/train.sbatch" "$work/run.yaml")
state=$(wait_for "$job")
if [ "$state" = COMPLETED ]; then
  pass "train.sbatch: 2-task job $job completed"
  grep -q "2 rank(s) (mpi backend)" plain.out && pass "srun --mpi=pmix started 2 MPI ranks" || bad "rank banner: $(grep 'rank(s)' plain.out)"
  grep -q "SLURM_NTASKS=2" plain.out && pass "the job logs its Slurm variables" || bad "no SLURM_NTASKS in the log"
  [ "$(metric_lines plain)" -eq "$steps" ] && pass "one metrics line per step ($steps)" || bad "metrics.jsonl has $(metric_lines plain) lines"
  [ -f "plain/checkpoints/step-$steps/DONE" ] && [ -f plain/checkpoints/step-$steps/trainer_state.json ] \
    && pass "checkpoint step-$steps is complete" || bad "no complete checkpoint step-$steps: $(ls plain/checkpoints)"
  [ -f plain/final/model.safetensors ] && pass "final model written" || bad "no final model"
else
  bad "train.sbatch job ended $state: $(tail -5 plain.out)"
fi

# What the job's processes are doing (state, kernel wait channel, each dpo thread's stack when gdb
# is installed): written when a stop takes longer than the few seconds a stop takes here.
snapshot_processes() {
  local pid
  ps -eo pid,ppid,stat,etimes,wchan:32,args | grep -E 'PID|dpo |srun|mpirun|slurmstepd|job.sh' | grep -v grep
  for pid in $(pgrep -f "dpo train --config $work/run.yaml"); do
    echo "--- pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
    if command -v gdb >/dev/null; then
      timeout 20 gdb -p "$pid" -batch -ex 'thread apply all bt 12' 2>/dev/null | grep -E '^(Thread|#)'
    else
      cat "/proc/$pid/stack" 2>/dev/null
    fi
  done
}

# Submits a training job into OUTPUT_DIR, lets it run a while, preempts it with PREEMPT (a command
# run with the job id appended), and checks that it requeued, resumed and matched run 1. When it
# did not resume from a checkpoint written on the signal, prints the job's whole log.
preempted_run() {
  local name=$1 preempt=$2 job state
  shift 2
  job=$(env "$@" sbatch --parsable --ntasks-per-node=2 --output="$work/$name.out" "$launch/train.sbatch" "$work/run.yaml" \
    --set run.output_dir="$work/$name")
  for _ in $(seq 600); do [ "$(metric_lines "$name")" -ge 40 ] && break; sleep 0.1; done
  $preempt "$job"
  # A stop takes 1-5 s with srun here; mpirun holds the job for its 30 s kill timeout.
  (sleep 20; [ "$(field "$job" Restarts)" = 0 ] && snapshot_processes >"$work/$name.stuck" 2>&1) &
  local watchdog=$!
  state=$(wait_for "$job")
  kill "$watchdog" 2>/dev/null
  if [ "$state" != COMPLETED ]; then bad "$name: job ended $state: $(tail -5 "$name.out")"; return; fi
  local restarts resumed
  restarts=$(field "$job" Restarts)
  resumed=$(grep -oE 'resuming from [^ ]+ \(step [0-9]+\)' "$name.out" | grep -oE '[0-9]+\)$' | tr -d ')')
  # A step that is no multiple of save_every: the checkpoint was written because of the signal.
  if [ "$restarts" -ge 1 ] && [ -n "$resumed" ] && [ "$resumed" -lt "$steps" ] && [ $((resumed % 256)) -ne 0 ]; then
    pass "$name: checkpointed step $resumed on the signal, requeued ($restarts restart), resumed from it"
  else
    echo "$name: restarts=$restarts resumed='$resumed'; the job's log without its step lines:"
    grep -vE '^(\{|step [0-9]+/)' "$name.out" | sed 's/^/  | /'
    [ -s "$work/$name.stuck" ] && sed 's/^/  stuck | /' "$work/$name.stuck"
    bad "$name: not resumed from a checkpoint written on the signal"
    return
  fi
  if diff <(metrics_sans_timing plain) <(metrics_sans_timing "$name") >/dev/null; then
    pass "$name: metrics.jsonl equals the unpreempted run's ($(metric_lines "$name") steps)"
  else
    bad "$name: metrics differ from the unpreempted run: $(diff <(metrics_sans_timing plain) <(metrics_sans_timing "$name") | head -4)"
  fi
  cmp -s plain/final/model.safetensors "$name/final/model.safetensors" \
    && pass "$name: final model bit-identical to the unpreempted run's" || bad "$name: final model differs"
}

preempt_batch_shell() { scancel --batch --signal=USR1 "$1"; }
preempt_requeue() { scontrol requeue "$1"; }

# 2. The time-limit path: the batch shell gets USR1 and passes it on through srun.
preempted_run signalled preempt_batch_shell
# 3. The preemption path (SIGTERM to every process of the job, Slurm requeues), with srun and with
#    mpirun inside the allocation.
preempted_run requeued preempt_requeue
preempted_run requeued-mpirun preempt_requeue DPO_LAUNCHER=mpirun

# 4. Reference log-probs as their own job, then training from the file.
job=$(sbatch --parsable --ntasks-per-node=2 --output="$work/ref.out" "$launch/precompute-ref.sbatch" "$work/run.yaml" \
  --set reference.logps_path="$work/ref.h5" --set run.output_dir="$work/pre")
state=$(wait_for "$job")
if [ "$state" = COMPLETED ] && [ -f ref.h5 ] && [ ! -e ref.h5.partial ] && grep -q "2 rank(s)" ref.out; then
  pass "precompute-ref.sbatch: 2 ranks wrote one complete reference file"
  "$dpo" train --config run.yaml --set reference.logps_path="$work/ref.h5" --set run.output_dir="$work/fromfile" \
    --set train.max_steps=4 >fromfile.out 2>&1 && pass "training accepts the file" || bad "training from the file: $(tail -3 fromfile.out)"
else
  bad "precompute-ref job ended $state: $(tail -5 ref.out)"
fi

# 5. srun without MPI support starts 2 independent single-rank jobs: both refuse, naming how to launch.
srun --mpi=none -n 2 "$dpo" train --config run.yaml --set run.output_dir="$work/nompi" >nompi.out 2>&1
rc=$?
if [ "$rc" -ne 0 ] && [ "$(grep -c 'srun --mpi=pmix' nompi.out)" -eq 2 ] && [ ! -e nompi ]; then
  pass "srun --mpi=none -n 2: both tasks refuse (exit $rc), nothing written"
else
  bad "srun --mpi=none -n 2: exit $rc: $(head -3 nompi.out)"
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s); slurmctld log tail:"
  tail -n 20 "$cluster/log/slurmctld.log"
  exit 1
fi
echo "all Slurm checks passed"
