#!/usr/bin/env bash
# Compiles the code that only a CUDA libtorch builds (every translation unit under src/ and tests/
# that tests DPO_TORCH_CUDA or DPO_WITH_NCCL, and tests/cuda/) with -fsyntax-only against the
# headers of Debian 13's libtorch-cuda-dev (libtorch 2.6 built with CUDA), so that the GPU path
# is compiled on machines without a CUDA libtorch (CI, this project's build machines). Fails on any
# error or warning in our code (libtorch's and CUDA's headers are system headers).
#
# Needs: g++, curl, xz, dpkg-deb, and the CUDA runtime headers (cuda_runtime_api.h) under
# CUDA_HOME (default /usr/local/cuda; CUDA 12 or 13). NCCL's header is taken from CUDA_HOME,
# NCCL_ROOT, or else Debian 13's libnccl-dev. The .debs (a few MiB) are fetched once into
# .cache/cuda-headers/ (ignored by git; DPO_CUDA_HEADERS_CACHE overrides), checked against the
# SHA256 of the archive's index. Without CUDA runtime headers it says so and exits 0
# (DPO_REQUIRE_CUDA_CHECK=1: exit 1): Debian ships them only in nvidia-cuda-dev, ~900 MiB.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${DPO_CUDA_HEADERS_CACHE:-$root/.cache/cuda-headers}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cuda=${CUDA_HOME:-/usr/local/cuda}
cxx=${CXX:-g++}

if [ ! -f "$cuda/include/cuda_runtime_api.h" ]; then
  echo "check_cuda_sources: SKIPPED: no CUDA runtime headers in $cuda/include (set CUDA_HOME)" >&2
  [ "${DPO_REQUIRE_CUDA_CHECK:-0}" = 1 ] && exit 1
  exit 0
fi

# Extracts the headers (usr/include) of Debian 13 package $1, from component $2 of the archive,
# into $cache/$1/include.
fetch_deb() {
  local package=$1 component=$2 index="$cache/Packages-$2"
  [ -f "$cache/$package/.done" ] && return 0
  mkdir -p "$cache"
  if [ ! -s "$index" ]; then
    curl -fsSL --retry 3 "$mirror/dists/trixie/$component/binary-amd64/Packages.xz" | xz -dc >"$index.tmp"
    mv "$index.tmp" "$index"
  fi
  local stanza file sha
  stanza=$(awk -v p="$package" 'BEGIN{RS=""} $0 ~ "(^|\n)Package: " p "\n" {print; exit}' "$index")
  file=$(sed -n 's/^Filename: //p' <<<"$stanza")
  sha=$(sed -n 's/^SHA256: //p' <<<"$stanza")
  [ -n "$file" ] && [ -n "$sha" ] || { echo "check_cuda_sources: $package not in trixie/$component" >&2; exit 1; }
  echo "check_cuda_sources: fetching $file"
  curl -fsSL --retry 3 -o "$cache/$package.deb" "$mirror/$file"
  echo "$sha  $cache/$package.deb" | sha256sum -c --quiet -
  rm -rf "${cache:?}/$package" "$cache/$package.tmp"
  dpkg-deb -x "$cache/$package.deb" "$cache/$package.tmp"
  mkdir -p "$cache/$package"
  mv "$cache/$package.tmp/usr/include" "$cache/$package/include"
  rm -rf "$cache/$package.tmp" "$cache/$package.deb"
  touch "$cache/$package/.done"
}

fetch_deb libtorch-cuda-dev contrib
torch_include="$cache/libtorch-cuda-dev/include"
nccl_include=""
for dir in "$cuda/include" ${NCCL_ROOT:+"$NCCL_ROOT/include"}; do
  [ -f "$dir/nccl.h" ] && { nccl_include=$dir; break; }
done
if [ -z "$nccl_include" ]; then
  fetch_deb libnccl-dev contrib
  nccl_include="$cache/libnccl-dev/include"
fi

flags=(-std=c++17 -fsyntax-only -Wall -Wextra -Werror -DDPO_TORCH_CUDA -DDPO_WITH_NCCL -DDPO_VERSION=\"check\"
  -I"$root/include" -I"$root/tests"
  -isystem "$torch_include" -isystem "$torch_include/torch/csrc/api/include"
  -isystem "$cuda/include" -isystem "$nccl_include")
for dir in /usr/lib/x86_64-linux-gnu/openmpi/include /usr/include/hdf5/openmpi; do
  [ -d "$dir" ] && flags+=(-isystem "$dir")
done

cd "$root"
mapfile -t sources < <({ grep -rlE 'DPO_TORCH_CUDA|DPO_WITH_NCCL' src tests --include='*.cpp'; \
                        ls tests/cuda/*.cpp 2>/dev/null; } | sort -u)
failed=0
for source in "${sources[@]}"; do
  if "$cxx" "${flags[@]}" "$source"; then
    echo "check_cuda_sources: ok   $source"
  else
    echo "check_cuda_sources: FAIL $source" >&2
    failed=1
  fi
done
cuda_version=$(sed -n 's/^#define CUDART_VERSION *//p' "$cuda/include/cuda_runtime_api.h")
echo "check_cuda_sources: ${#sources[@]} files against libtorch-cuda-dev (trixie) and CUDA runtime $cuda_version"
exit $failed
