#!/usr/bin/env bash
# The body of launch/slurm/*.sbatch: starts one dpo command on every task of the allocation, forwards
# the preemption signal to it, and requeues the job when dpo exits with 75 (it was preempted and wrote
# a complete checkpoint), so the next start of the same job resumes from that checkpoint.
#
#   job.sh COMMAND [CONFIG] [DPO FLAGS...]   e.g. job.sh train run.yaml --set train.lr=1e-6
#
# CONFIG defaults to $DPO_CONFIG, else run.yaml (relative to the submission directory).
# Environment (all optional):
#   DPO_BIN          the dpo binary [<this checkout>/build/dpo, else dpo on PATH]
#   DPO_LAUNCHER     srun (default: srun --mpi=pmix) or mpirun (Open MPI's mpirun inside the allocation)
#   DPO_SRUN_ARGS    extra srun arguments, e.g. "--cpu-bind=cores"
#   DPO_MPIRUN_ARGS  extra mpirun arguments, e.g. "--mca btl_tcp_if_include ib0"
# Rank and local rank come from MPI (PMIx); the Slurm variables below are only logged.
set -uo pipefail

command=${1:?usage: job.sh COMMAND [CONFIG] [DPO FLAGS...]}
shift
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  config=$1
  shift
else
  config=${DPO_CONFIG:-run.yaml}
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../stop_signal.sh"
# Slurm signals this shell (sbatch --signal=B:USR1@SECONDS, scancel --batch) or every process of the
# job (preemption, scontrol requeue: SIGTERM). Either way the launcher gets USR1, which srun and
# mpirun pass on to the ranks; they finish the current step, checkpoint and exit 75. Not TERM:
# srun answers TERM by killing the ranks at once. The traps come first: a signal before the launcher
# starts keeps it from starting, and the job is requeued as stopped.
launcher="" stopped_by=""
forward() {
  echo "== $(date -Is) got SIG$1: asking dpo to checkpoint and stop"
  if [ -n "$launcher" ]; then send_stop "$launcher"; else stopped_by=$1; fi
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
source "$here/../dpo_binary.sh"
dpo=$(dpo_binary "$here/../..") || exit 2

echo "== $(date -Is) dpo $command --config $config: job ${SLURM_JOB_ID:-?} (${SLURM_JOB_NAME:-?}), start $((${SLURM_RESTART_COUNT:-0} + 1))"
for var in SLURM_JOB_NODELIST SLURM_NNODES SLURM_NTASKS SLURM_NTASKS_PER_NODE SLURM_CPUS_PER_TASK \
  SLURM_GPUS_PER_NODE SLURM_JOB_GPUS CUDA_VISIBLE_DEVICES SLURM_SUBMIT_DIR; do
  [ -n "${!var:-}" ] && echo "   $var=${!var}"
done

start_launcher() {
  case ${DPO_LAUNCHER:-srun} in
    srun)
      args=(--mpi=pmix)
      # Slurm 22.05's srun no longer takes --cpus-per-task from the allocation; pass it on explicitly.
      [ -n "${SLURM_CPUS_PER_TASK:-}" ] && args+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
      # shellcheck disable=SC2086  # DPO_SRUN_ARGS is a list of words
      srun "${args[@]}" ${DPO_SRUN_ARGS:-} "$dpo" "$command" --config "$config" "$@" &
      ;;
    mpirun)
      # Open MPI reads the allocation from Slurm (one rank per task) and starts its daemons with srun.
      # On SIGTERM Open MPI kills the ranks 1 s after signalling them, too soon for a checkpoint.
      args=(--mca odls_base_sigkill_timeout 30)
      if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
        args+=(--map-by "slot:PE=$SLURM_CPUS_PER_TASK" --bind-to core)
      else
        args+=(--bind-to none)
      fi
      [ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
      # shellcheck disable=SC2086
      mpirun "${args[@]}" ${DPO_MPIRUN_ARGS:-} "$dpo" "$command" --config "$config" "$@" &
      ;;
    *)
      echo "job.sh: error: DPO_LAUNCHER=$DPO_LAUNCHER: expected srun or mpirun" >&2
      exit 2
      ;;
  esac
  launcher=$!
}

if [ -n "$stopped_by" ]; then
  echo "== $(date -Is) stopped by SIG$stopped_by before dpo started: nothing ran"
  rc=75
else
  start_launcher "$@"
  [ -z "$stopped_by" ] || send_stop "$launcher"  # a stop between the check and the start
  wait_for_job "$launcher"
  stopped_status job.sh $?
  rc=$?
fi

if [ "$rc" -eq 75 ]; then
  echo "== $(date -Is) dpo $command was preempted and saved its progress; requeueing job ${SLURM_JOB_ID:-?}"
  if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "job.sh: not in a Slurm job: rerun the same command to resume" >&2
  elif ! out=$(scontrol requeue "$SLURM_JOB_ID" 2>&1); then
    # Slurm requeues a job it preempts itself (and on `scontrol requeue` from outside): ours fails.
    state=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | cut -d= -f2)
    if [ -n "$state" ] && [ "$state" != RUNNING ]; then
      echo "   Slurm has requeued it already (state $state)"
    else
      echo "job.sh: scontrol requeue failed ($out): resubmit the same command to resume" >&2
    fi
  fi
fi
exit "$rc"
