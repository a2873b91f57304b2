#!/usr/bin/env bash
# Starts one dpo command on one node or many with Open MPI's mpirun: one rank per GPU (or the
# number of ranks you ask for), each rank bound to its own share of the node's cores.
#
#   launch/mpirun.sh [--hostfile FILE] [--ranks-per-node N] COMMAND [ARGS...]
#
#   launch/mpirun.sh train --config run.yaml                          # this node, one rank per GPU
#   launch/mpirun.sh --ranks-per-node 2 train --config run.yaml       # this node, 2 CPU ranks
#   launch/mpirun.sh --hostfile hosts precompute-ref --config run.yaml  # every host in the file
#
# --hostfile      Open MPI hostfile, one node per line ("node07 slots=8"); default: this node only.
# --ranks-per-node  default: the GPUs `nvidia-smi -L` lists on this node, else 1.
# Nodes are assumed alike (cores and GPUs counted here). The mpirun line is printed before it runs.
# Environment: DPO_BIN (the dpo binary [<checkout>/build/dpo, else dpo on PATH]), DPO_MPIRUN_ARGS
# (extra mpirun arguments), and the NCCL_*/OMPI_MCA_*/UCX_* knobs listed in launch/README.md, which
# are passed on to every rank.
set -euo pipefail

# Stopping: mpirun answers SIGINT/SIGTERM by killing the ranks after a moment, before they can save,
# and exits 1; it forwards SIGUSR1 to every rank, on which dpo saves a checkpoint and exits 75, and
# mpirun then exits 75. So mpirun runs in its own session (a terminal's Ctrl-C reaches only this
# script) and the first Ctrl-C, SIGTERM or SIGUSR1 here becomes SIGUSR1 for it; a second, SIGTERM.
# The trap is set first: a signal while this script looks for GPUs (bash lets a running child
# outlive an untrapped SIGINT and carries on) or before mpirun starts must not be lost.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/stop_signal.sh"
stops=0
stop_job() {
  stops=$((stops + 1))
  [ -n "${job:-}" ] || return 0  # mpirun has not started: the lines around its start look at $stops
  if [ "$stops" -eq 1 ]; then
    echo "launch/mpirun.sh: stopping: every rank saves a checkpoint and exits 75 (again: kill the job)" >&2
    send_stop "$job"
  else
    kill -TERM "$job" 2>/dev/null || true
  fi
}
trap stop_job INT TERM USR1
usage() { sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
hostfile="" per_node=""
while [ $# -gt 0 ]; do
  case $1 in
    --hostfile) hostfile=${2:?--hostfile needs a file}; shift 2 ;;
    --ranks-per-node) per_node=${2:?--ranks-per-node needs a number}; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "launch/mpirun.sh: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || usage

source "$here/dpo_binary.sh"
dpo=$(dpo_binary "$here/..") || exit 2

if [ -z "$per_node" ]; then
  per_node=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "$per_node" -gt 0 ] || per_node=1
fi
[[ $per_node =~ ^[1-9][0-9]*$ ]] || { echo "launch/mpirun.sh: --ranks-per-node must be a positive integer" >&2; exit 2; }

nodes=1
args=()
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || { echo "launch/mpirun.sh: cannot read hostfile $hostfile" >&2; exit 2; }
  nodes=$(awk '!/^[[:space:]]*#/ && NF {print $1}' "$hostfile" | sort -u | wc -l)
  [ "$nodes" -gt 0 ] || { echo "launch/mpirun.sh: no hosts in $hostfile" >&2; exit 2; }
  args+=(--hostfile "$hostfile")
fi

# Each rank gets cores/ranks of the node, bound, so its libtorch threads (dpo sets as many as the
# cores it may run on) do not migrate or compete; with more ranks than cores, no binding at all.
cores=$(nproc --all)
pe=$((cores / per_node))
if [ "$pe" -ge 1 ]; then
  args+=(--map-by "ppr:$per_node:node:PE=$pe" --bind-to core)
else
  args+=(--map-by "ppr:$per_node:node" --bind-to none --oversubscribe)
fi
args+=(-np "$((nodes * per_node))")
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)  # containers often run as root
# mpirun passes OMPI_MCA_* on by itself; the rest must be named with -x.
for name in PATH LD_LIBRARY_PATH $(compgen -e | grep -E '^(NCCL_|UCX_|CUDA_|OMP_|DPO_)' || true); do
  if [ -n "${!name+set}" ]; then args+=(-x "$name"); fi
done

if [ "$stops" -gt 0 ]; then
  echo "launch/mpirun.sh: stopped before mpirun started: nothing ran (exit 75; rerun to start)" >&2
  exit 75
fi
# shellcheck disable=SC2086  # DPO_MPIRUN_ARGS is a list of words
set -- mpirun "${args[@]}" ${DPO_MPIRUN_ARGS:-} "$dpo" "$@"
echo "+ $*"

setsid "$@" &
job=$!
if [ "$stops" -gt 0 ]; then stops=0 && stop_job; fi  # a stop between the check and the start
set +e
wait_for_job "$job"
stopped_status launch/mpirun.sh $?
