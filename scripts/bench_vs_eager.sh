#!/usr/bin/env bash
# Eager PyTorch DPO step (scripts/eager_dpo_step.py) on the shapes of scripts/bench_shapes.sh, in
# fp32 and bf16-mixed: the comparison partner of `dpo bench` for the issue "Speed: twice an eager
# PyTorch DPO step". Prints one JSON line per shape and precision (tokens_per_s, step_s, ...).
#
# Usage: scripts/bench_vs_eager.sh [SHAPE...] (default: b c d); EAGER_FLAGS adds flags to the
# script (e.g. "--steps 3 --sdpa"). Installs Debian 12's python3-torch (as root) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
py=/usr/bin/python3  # the system Python: the python3 on PATH may be a pyenv without torch
if ! "$py" -c 'import torch' 2>/dev/null; then
  apt-get install -y --no-install-recommends python3-torch
fi
export OMP_WAIT_POLICY=PASSIVE
# Keep freed memory in the heap instead of returning it to the OS after every step; dpo sets the
# equivalent itself via mallopt, so the Python side gets the same treatment for a fair comparison.
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=67108864
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(b c d)
for shape in "${shapes[@]}"; do
  for precision in fp32 bf16-mixed; do
    # shellcheck disable=SC2086
    "$py" scripts/eager_dpo_step.py --shape "$shape" --precision "$precision" ${EAGER_FLAGS:-}
  done
done
