#!/usr/bin/env bash
# Eager PyTorch DPO step (scripts/eager_dpo_step.py) on the shapes of scripts/bench_shapes.sh, in
# fp32 and bf16-mixed: the comparison partner of `dpo bench` for the issue "Speed: twice an eager
# PyTorch DPO step". Prints one JSON line per shape and precision (tokens_per_s, step_s, ...).
#
# Usage: scripts/bench_vs_eager.sh [SHAPE...] (default: b c d); EAGER_FLAGS adds flags to the
# script (e.g. "--steps 3 --sdpa"), EAGER_PRECISIONS sets the precisions (default "fp32
# bf16-mixed"). Installs Debian 12's python3-torch (as root) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
py=/usr/bin/python3  # the system Python: the python3 on PATH may be a pyenv without torch
if ! "$py" -c 'import torch' 2>/dev/null; then
  apt-get install -y --no-install-recommends python3-torch
fi
# The thread settings dpo makes for itself (README "Threads"); the eager step gained from the spin
# too (bf16-mixed 17-28% on shapes b and d, one run each).
export OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-30000}
# Keep freed memory in the heap instead of returning it to the OS after every step; dpo sets the
# equivalent itself via mallopt, so the Python side gets the same treatment for a fair comparison.
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=67108864
# And the heap on transparent huge pages where the kernel offers them, as dpo asks for itself.
if grep -qE '\[(madvise|always)\]' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null; then
  export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
fi
# OpenBLAS runs the eager side's float32 products with the kernel OPENBLAS_CORETYPE names when it
# is set (machine images may set a narrower one than the CPU has), else its own choice for the CPU;
# `env -u OPENBLAS_CORETYPE bash scripts/bench_vs_eager.sh` gives the latter. Said once here:
echo "eager side: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (the kernel OpenBLAS picks for this CPU)}, GLIBC_TUNABLES=${GLIBC_TUNABLES:-}"
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(b c d)
for shape in "${shapes[@]}"; do
  for precision in ${EAGER_PRECISIONS:-fp32 bf16-mixed}; do
    # shellcheck disable=SC2086
    "$py" scripts/eager_dpo_step.py --shape "$shape" --precision "$precision" ${EAGER_FLAGS:-}
  done
done
