#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on this machine, for the launch/ scripts' tests:
# munged + slurmctld + slurmd from Debian's munge and slurm-wlm packages, on free loopback ports,
# with every file (config, key, sockets, state, logs, pid files) under one directory.
#
#   tests/launch/slurm/local_cluster.sh start DIR   # prints nothing; then `export SLURM_CONF=DIR/slurm.conf`
#   tests/launch/slurm/local_cluster.sh stop DIR    # stops the daemons by pid (and their job steps)
#
# Needs root (slurmd runs jobs as their submitting user). 2 CPUs, one partition "debug".
set -euo pipefail

action=${1:?usage: local_cluster.sh start|stop DIR}
dir=${2:?usage: local_cluster.sh start|stop DIR}

free_port() {  # a port nothing listens on, from the range Linux does not hand out as ephemeral
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  echo "local_cluster.sh: no free port found" >&2
  return 1
}

start() {
  mkdir -p "$dir"/{munge,state,spool,log}
  chmod 700 "$dir" "$dir/munge"
  dir=$(cd "$dir" && pwd)
  local node ctld_port slurmd_port
  node=$(hostname -s)
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

  mungekey --create --keyfile="$dir/munge/munge.key" --force
  chmod 400 "$dir/munge/munge.key"
  # --force: the temporary directory's parents (/tmp) are world-writable, which munged refuses by default.
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"

  cat >"$dir/slurm.conf" <<EOF
ClusterName=dpotest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: Slurm holds a requeued job this long (+1 s) before it may start again (default 120).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
# Look at pending jobs every 2 s (default 60), so a requeued job starts as soon as it may.
SchedulerParameters=sched_interval=2
ReturnToService=2
SlurmdParameters=config_overrides
JobRequeue=1
KillWait=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -c -f "$dir/slurm.conf"
  slurmd -f "$dir/slurm.conf" -N "$node"
  for _ in $(seq 60); do
    if sinfo -h -o '%t' 2>/dev/null | grep -qx 'idle'; then return 0; fi
    sleep 0.5
  done
  echo "local_cluster.sh: the node did not become idle in 30 s; logs in $dir/log" >&2
  sinfo >&2 || true
  tail -n 20 "$dir"/log/*.log >&2 || true
  return 1
}

stop() {
  local pid pids=()
  for name in slurmd slurmctld munge/munged; do
    pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  # slurmstepd and the job's processes outlive slurmd; ours are those whose environment names this
  # cluster's config (and, not to hit the caller, that are slurmstepd or inside a job).
  local environ
  for proc in /proc/[0-9]*; do
    environ=$(tr '\0' '\n' 2>/dev/null <"$proc/environ") || continue
    grep -qx "SLURM_CONF=$dir/slurm.conf" <<<"$environ" || continue
    if grep -q '^SLURM_JOB_ID=' <<<"$environ" || [ "$(cat "$proc/comm" 2>/dev/null)" = slurmstepd ]; then
      kill -9 "${proc#/proc/}" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: local_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
