#!/usr/bin/env bash
# Downloads the Debian 12 packages that scripts/build_gpu.sh needs on a GPU machine that has CUDA
# PyTorch but no package registry: yaml-cpp, fmt, nlohmann-json, Catch2, parallel HDF5, Open MPI,
# protobuf (with protoc) and cairo (headers, CMake configs and the shared libraries they pull in;
# not libtorch, which comes from PyTorch). Into .gpu-bundle/ (ignored by git; $1 overrides), about 21 MiB, so that the bundle
# travels with the working tree. Run on a Debian 12 machine with apt (no root needed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/.gpu-bundle}
packages=(
  libyaml-cpp-dev libyaml-cpp0.7 libfmt-dev libfmt9 nlohmann-json3-dev catch2
  libhdf5-openmpi-dev libhdf5-openmpi-103-1 libhdf5-openmpi-hl-100 libsz2 libaec0 libcurl4
  libopenmpi-dev libopenmpi3 openmpi-common libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7
  libfabric1 libucx0 libibverbs1 librdmacm1 libpsm2-2 libpsm-infinipath1 libnl-3-200 libnl-route-3-200
  libnuma1 libmunge2
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2 zlib1g-dev
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32
  libcairo2-dev libcairo2 libpixman-1-0 libfontconfig1 fontconfig-config fonts-dejavu-core libfreetype6 libpng16-16
  libbrotli1 libexpat1 libx11-6 libx11-data libxcb1 libxcb-render0 libxcb-shm0 libxext6 libxrender1 libxau6 libxdmcp6
  libbsd0 libmd0
)
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || echo "gpu_bundle: warning: this is $PRETTY_NAME, the bundle is meant to be Debian 12's" >&2
mkdir -p "$out"
rm -f "$out"/*.deb
(cd "$out" && apt-get download -q "${packages[@]}")
size_mib=$(du -sm "$out" | cut -f1)
echo "gpu_bundle: ${#packages[@]} packages, $size_mib MiB in $out"
if [ "$size_mib" -gt 60 ]; then
  echo "gpu_bundle: $size_mib MiB is over the 60 MiB that travel with the tree to a GPU machine" >&2
  exit 1
fi
