#!/usr/bin/env bash
# Builds dpo and runs its unit tests against Debian 13 (trixie): libtorch 2.6, GCC 14, Open MPI 5,
# HDF5 1.14, Catch2 3, fmt 10, yaml-cpp 0.8. Makes a trixie root with debootstrap in .debian13/
# (ignored by git; reused once complete, so a second run only rebuilds), mounts this source tree
# read-only at /src inside it, builds (Release) in /build there and fails on any compiler
# "warning:", then runs `ctest -L unit`. Run as root on Debian 12 (or 13). Each phase is bounded by
# `timeout` and timed; mounts are undone on any exit.
#
# Usage: scripts/debian13_check.sh [--fresh-build]   (--fresh-build: empty /build first)
# Env: DPO_DEB13_ROOT (default <repo>/.debian13), DPO_DEB13_MIRROR (default deb.debian.org),
#      DPO_DEB13_JOBS (default 2), DPO_DEB13_TIMEOUT_S (the whole check; default 2700).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${DPO_DEB13_ROOT:-$repo/.debian13}
mirror=${DPO_DEB13_MIRROR:-http://deb.debian.org/debian}
jobs=${DPO_DEB13_JOBS:-2}
fresh_build=0
[ "${1:-}" = "--fresh-build" ] && fresh_build=1

# What CMakeLists.txt finds, in trixie's names (install_deps.sh lists Debian 12's).
packages=(
  g++ make cmake pkg-config ca-certificates
  libtorch-dev libopenblas0-pthread
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev
  libyaml-cpp-dev libfmt-dev nlohmann-json3-dev catch2
  libpcre2-dev libutf8proc-dev zlib1g-dev
  libprotobuf-dev protobuf-compiler libcairo2-dev fonts-dejavu-core
)
stamp=$root/.dpo-root-complete
stamp_content="trixie ${packages[*]}"

# The whole check is bounded (CI must not hang): each long step runs under `timeout` with its own
# limit or what is left of the whole, whichever is less. (One `timeout` around the whole script
# would not do: each inner `timeout` runs in its own process group, out of reach of the outer.)
deadline=$(( $(date +%s) + ${DPO_DEB13_TIMEOUT_S:-2700} ))
bounded() {  # bounded LIMIT_S COMMAND...
  local left=$(( deadline - $(date +%s) ))
  if [ "$left" -le 0 ]; then echo "debian13_check: out of time before: ${*:2}" >&2; return 124; fi
  timeout --kill-after=30 $(( $1 < left ? $1 : left )) "${@:2}"
}

if [ "$(id -u)" -ne 0 ]; then
  echo "debian13_check: needs root (debootstrap, chroot, mount)" >&2
  exit 1
fi

phase_start=0
begin_phase() { phase_name=$1; phase_start=$(date +%s); echo "== debian13_check: $phase_name"; }
end_phase() { echo "== debian13_check: $phase_name took $(( $(date +%s) - phase_start )) s"; }

mounted=()
unmount_all() {
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do
    umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
  done
  mounted=()
}
trap unmount_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mount_into_root() {  # mount_into_root TARGET MOUNT-ARGS...
  mkdir -p "$root/$1"
  mount "${@:2}" "$root/$1"
  mounted+=("$root/$1")
}
# A clean environment inside the root; mpirun refuses root without the two OMPI variables.
in_root=(chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
  DEBIAN_FRONTEND=noninteractive OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
for var in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do  # the host's BLAS kernel choice, if any
  if [ -n "${!var:-}" ]; then in_root+=("$var=${!var}"); fi
done

# Mounts left by a run that was killed (SIGKILL skips the trap) are undone first, so that nothing
# below ever deletes through them; rm also stays on one file system.
while read -r _ mount_point _; do
  case "$mount_point" in "$root"/*) umount -l "$mount_point" && echo "debian13_check: unmounted leftover $mount_point";; esac
done < <(tac /proc/self/mounts)

if [ "$(cat "$stamp" 2>/dev/null)" != "$stamp_content" ]; then
  if ! command -v debootstrap >/dev/null; then
    begin_phase "install debootstrap"
    bounded 300 apt-get update -q
    bounded 600 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
    end_phase
  fi
  if [ ! -x "$root/usr/bin/apt-get" ] || [ ! -e "$root/.dpo-debootstrap-complete" ]; then
    begin_phase "debootstrap trixie (minbase) into $root"
    rm -rf --one-file-system "$root"
    if ! bounded 600 debootstrap --variant=minbase trixie "$root" "$mirror" >"$root.debootstrap-log.txt" 2>&1; then
      tail -n 40 "$root.debootstrap-log.txt"
      echo "debian13_check: debootstrap failed; full log: $root.debootstrap-log.txt" >&2
      exit 1
    fi
    touch "$root/.dpo-debootstrap-complete"
    end_phase
  fi
  begin_phase "apt-get install ${#packages[@]} packages in the root"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
  mount_into_root proc -t proc proc
  apt_log=$root/dpo-apt-log.txt
  if ! { bounded 300 "${in_root[@]}" apt-get update -q &&
         bounded 900 "${in_root[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"; } >"$apt_log" 2>&1; then
    tail -n 40 "$apt_log"
    echo "debian13_check: installing the packages failed; full log: $apt_log" >&2
    exit 1
  fi
  "${in_root[@]}" apt-get clean
  unmount_all
  echo "$stamp_content" >"$stamp"
  end_phase
fi

echo "== debian13_check: $("${in_root[@]}" dpkg-query -W -f='${Package} ${Version}\n' libtorch-dev g++ libopenmpi-dev \
  libhdf5-openmpi-dev catch2 libfmt-dev libyaml-cpp-dev | tr '\n' ';')"

# The tokenizer goldens test reads the real tokenizer files under build/tokenizers, which the
# source is mounted read-only with: fetch them first (kept when already there, as after test.sh).
bash "$repo/scripts/fetch_tokenizers.sh"

mount_into_root proc -t proc proc
mount_into_root sys -t sysfs -o ro sysfs
# A private /dev with the few nodes a build and its tests open, not a bind of the host's: a
# checkout deleted while a killed run's mounts were left (`rm -rf` descends into mounts) would
# otherwise delete the host's /dev with it.
mount_into_root dev -t tmpfs -o mode=755 tmpfs
for node in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  read -r name major minor <<<"$node"
  mknod -m 666 "$root/dev/$name" c "$major" "$minor"
done
for fd in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${fd%%:*}" "$root/dev/${fd#*:}"; done
ln -s /proc/self/fd "$root/dev/fd"
mkdir "$root/dev/shm"
mount_into_root dev/shm -t tmpfs tmpfs
mount_into_root src --bind "$repo"
mount -o remount,bind,ro "$root/src"

if [ $fresh_build -eq 1 ]; then rm -rf --one-file-system "$root/build"; fi
begin_phase "configure and build (Release, -j$jobs)"
log=$root/build-log.txt
set +e
bounded 2100 "${in_root[@]}" bash -c "cmake -S /src -B /build -DCMAKE_BUILD_TYPE=Release && cmake --build /build -j$jobs" \
  >"$log" 2>&1
build_rc=$?
set -e
end_phase
if [ $build_rc -ne 0 ]; then
  tail -n 80 "$log"
  echo "debian13_check: build failed (exit $build_rc); full log: $log" >&2
  exit 1
fi
if grep -q 'warning:' "$log"; then
  grep -B4 -A4 'warning:' "$log" | head -n 120
  echo "debian13_check: the build printed $(grep -c 'warning:' "$log") warning(s); full log: $log" >&2
  exit 1
fi

begin_phase "unit tests (ctest -L unit)"
test_log=$root/test-log.txt
set +e
bounded 900 "${in_root[@]}" bash -c "cd /build && ctest -L unit --output-on-failure -j$jobs" >"$test_log" 2>&1
test_rc=$?
set -e
end_phase
if [ $test_rc -ne 0 ]; then
  grep -B2 -A40 -E '\*\*\*(Failed|Timeout|Exception)' "$test_log" | head -n 200
  tail -n 30 "$test_log"
  echo "debian13_check: unit tests failed (exit $test_rc); full log: $test_log" >&2
  exit 1
fi
grep -E 'tests passed|Total Test time' "$test_log"
echo "debian13_check: Debian 13 build has no warnings and its unit tests pass"
