#!/usr/bin/env bash
# Downloads the Debian 12 packages that scripts/build_gpu.sh needs on a GPU machine that has CUDA
# PyTorch but no package registry: yaml-cpp, fmt, nlohmann-json, Catch2, parallel HDF5, Open MPI,
# protobuf (with protoc) and cairo (headers, CMake configs and every shared library they pull in;
# not libtorch, which comes from PyTorch). Into .gpu-bundle/ (ignored by git; $1 overrides), about 31 MiB, so that the bundle
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
  # What those libraries need in turn and a bare image may lack (hwloc's libudev, libcurl's TLS and
  # Kerberos for HDF5, the InfiniBand providers of Open MPI's plugins): the closure is complete
  # down to glibc, libstdc++ and libgcc, checked by listing every NEEDED soname of the extracted set.
  libudev1 ibverbs-providers libatomic1 libssl3 libgssapi-krb5-2 libidn2-0 libldap-2.5-0 libnghttp2-14
  libpsl5 librtmp1 libssh2-1 libuuid1 libzstd1 zlib1g libcom-err2 libgmp10 libgnutls30 libhogweed6
  libk5crypto3 libkrb5-3 libkrb5support0 libnettle8 libsasl2-2 libunistring2 libkeyutils1 libp11-kit0
  libtasn1-6 libffi8
)
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || echo "gpu_bundle: warning: this is $PRETTY_NAME, the bundle is meant to be Debian 12's" >&2
mkdir -p "$out"
rm -f "$out"/*.deb
(cd "$out" && apt-get download -q "${packages[@]}")
# Every NEEDED soname of the extracted set is in the set, or in the base that any Linux with a C++
# compiler has (glibc, libstdc++, libgcc; libpsm_infinipath comes through an alternatives link).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for deb in "$out"/*.deb; do dpkg-deb -x "$deb" "$tmp"; done
provided=$(find "$tmp" -name '*.so*' -printf '%f\n' | sort -u)
missing=$(find "$tmp" -name '*.so*' -type f -exec objdump -p {} + 2>/dev/null | awk '/NEEDED/{print $2}' | sort -u |
  grep -vxF -f <(echo "$provided") |
  grep -vE '^(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libresolv)\.so|^ld-linux|^libpsm_infinipath\.so' || true)
if [ -n "$missing" ]; then
  echo "gpu_bundle: libraries of the bundle need sonames it lacks: $(echo $missing); add their packages" >&2
  exit 1
fi
size_mib=$(du -sm "$out" | cut -f1)
echo "gpu_bundle: ${#packages[@]} packages, $size_mib MiB in $out"
if [ "$size_mib" -gt 60 ]; then
  echo "gpu_bundle: $size_mib MiB is over the 60 MiB that travel with the tree to a GPU machine" >&2
  exit 1
fi
