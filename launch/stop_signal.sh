# shellcheck shell=bash
# Sourced by the launchers (mpirun.sh, slurm/job.sh), which wait for the job they started and pass
# a stop on to it as SIGUSR1: on it every dpo rank saves a checkpoint and exits 75.

# send_stop PID: SIGUSR1 to PID now, and again after 1, 2, 4, ... 32 s while it runs. mpirun drops
# a signal that comes before it has started the ranks (seconds on many nodes); dpo takes a repeat
# as the same request.
send_stop() {
  kill -USR1 "$1" 2>/dev/null || return 0
  [ -z "${stop_repeater:-}" ] || return 0
  (
    trap 'kill "$pause" 2>/dev/null; exit 0' TERM
    for seconds in 1 2 4 8 16 32; do
      sleep "$seconds" &
      pause=$!
      wait "$pause" && kill -USR1 "$1" 2>/dev/null || exit 0
    done
  ) &
  stop_repeater=$!
}

# wait_for_job PID: waits for the job the launcher started and returns its exit status. A trapped
# signal ends `wait` early while the job runs on, so it waits again; when a signal ended the last
# `wait`, the job's own status is still to be collected.
wait_for_job() {
  local rc last
  while :; do
    wait "$1"
    rc=$?
    kill -0 "$1" 2>/dev/null || break
  done
  wait "$1" 2>/dev/null
  last=$?
  [ "$last" -ne 127 ] && rc=$last
  return "$rc"
}

# stopped_status WHO RC: the launcher's exit status for a job that ended with RC, returned. After
# send_stop, a rank that had not reached dpo's own code yet (the loader maps libtorch in its first
# fifth of a second) dies of the SIGUSR1 (RC 138): it had done nothing, so that is a stop like any
# other, 75.
stopped_status() {
  [ -z "${stop_repeater:-}" ] && return "$2"
  kill "$stop_repeater" 2>/dev/null
  if [ "$2" -eq $((128 + 10)) ]; then
    echo "$1: the ranks were still starting when stopped: nothing ran (exit 75; rerun to start)" >&2
    return 75
  fi
  return "$2"
}
