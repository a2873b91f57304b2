#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (labels unit, cli, mpi, slurm) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
# The real tokenizer.json files the tokenizer tests compare with Hugging Face's goldens (pinned).
bash scripts/fetch_tokenizers.sh
# mpirun refuses root without these; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd build && ctest --output-on-failure "$@"
