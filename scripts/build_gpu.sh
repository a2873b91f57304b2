#!/usr/bin/env bash
# Builds dpo against a CUDA libtorch into build-gpu/ (DPO_GPU_BUILD_DIR overrides), with NCCL, for
# Ampere, Ada and Hopper (TORCH_CUDA_ARCH_LIST overrides 8.0;8.6;8.9;9.0; dpo compiles no CUDA
# kernels of its own, the list is PyTorch's CMake's). Usage: scripts/build_gpu.sh [cmake args]
# DPO_GPU_TARGETS: the targets to build (space-separated; default all, the CPU unit tests too).
#
# libtorch: Torch_DIR when set, else python3's PyTorch (torch.utils.cmake_prefix_path). NCCL:
# NCCL_ROOT, CUDA_HOME, or the nvidia-nccl wheel that CUDA PyTorch installs. The other
# dependencies (yaml-cpp, fmt, nlohmann-json, Catch2, parallel HDF5, Open MPI) come from the system
# when it has them; else from the Debian 12 .debs of scripts/gpu_bundle.sh in .gpu-bundle/, which
# this extracts into .gpu-prefix/ and puts on CMake's paths (DPO_GPU_USE_BUNDLE=1: always). Writes build-gpu/env.sh, to source
# before running what it built (library path for the bundle's libraries that the system lacks).
#
# C++ ABI: PyTorch wheels before 2.7 (and pytorch.org's "pre-cxx11 ABI" libtorch) are built with
# _GLIBCXX_USE_CXX11_ABI=0; Debian's yaml-cpp, fmt and HDF5/MPI C++ parts use the new ABI and
# std::string crosses their interfaces, so such a libtorch cannot link with them: refused here,
# with the way out (a newer wheel, or the cxx11-ABI libtorch via Torch_DIR).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${DPO_GPU_BUILD_DIR:-build-gpu}
bundle=${DPO_GPU_BUNDLE:-$root/.gpu-bundle}
prefix=${DPO_GPU_PREFIX:-$root/.gpu-prefix}
python=${PYTHON:-python3}
say() { echo "build_gpu: $*"; }
die() { echo "build_gpu: error: $*" >&2; exit 1; }

# libtorch and its C++ ABI.
if [ -n "${Torch_DIR:-}" ]; then
  torch_prefix=$Torch_DIR
  config=$(find "$Torch_DIR" -name TorchConfig.cmake 2>/dev/null | head -n1)
  [ -n "$config" ] || die "Torch_DIR=$Torch_DIR holds no TorchConfig.cmake"
  abi=1
  grep -q '_GLIBCXX_USE_CXX11_ABI=0' "$config" && abi=0
else
  torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
    die "no libtorch: set Torch_DIR, or install a CUDA PyTorch for $python"
  abi=$("$python" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  cuda_built=$("$python" -c 'import torch; print(torch.version.cuda or "")')
  [ -n "$cuda_built" ] || die "$python's PyTorch $("$python" -c 'import torch; print(torch.__version__)') is CPU-only"
  say "PyTorch $("$python" -c 'import torch; print(torch.__version__)') (CUDA $cuda_built) at $torch_prefix"
fi
[ "$abi" = 1 ] || die "this libtorch uses the pre-C++11 ABI (_GLIBCXX_USE_CXX11_ABI=0): it cannot link with Debian's \
yaml-cpp, fmt and MPI/HDF5 C++ libraries. Use PyTorch >= 2.7 (new ABI) or the cxx11-ABI libtorch from pytorch.org \
(Torch_DIR=.../libtorch/share/cmake/Torch)"

# NCCL: the first directory holding include/nccl.h.
nccl_root=${NCCL_ROOT:-}
if [ -z "$nccl_root" ]; then
  for dir in "${CUDA_HOME:-/usr/local/cuda}" $("$python" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null | \
      xargs -r -n1 sh -c 'find "$0/nvidia" -path "*include/nccl.h" 2>/dev/null' | sed 's|/include/nccl.h$||'); do
    [ -f "$dir/include/nccl.h" ] && { nccl_root=$dir; break; }
  done
fi
[ -n "$nccl_root" ] || die "no NCCL (include/nccl.h): set NCCL_ROOT"
say "NCCL at $nccl_root"

args=(-DCMAKE_BUILD_TYPE=Release -DDPO_WITH_NCCL=ON -DNCCL_ROOT="$nccl_root"
  -DTORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;8.6;8.9;9.0}")
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;8.6;8.9;9.0}
# CMake 4 (pip's, as on PyTorch machines) refuses package files that ask for policies older than
# 3.5; this lets an older dependency's CMake config through (CMake 3 ignores the variable).
export CMAKE_POLICY_VERSION_MINIMUM=${CMAKE_POLICY_VERSION_MINIMUM:-3.5}

# CMake arguments that take every dependency from the extracted bundle. Debian 12's Open MPI and
# HDF5 wrappers (mpicxx, h5pcc) are not relocatable, so MPI and HDF5 are named by path. For MPI,
# library names with include paths are what makes FindMPI skip its search (no wrapper, no
# pkg-config file of another MPI on the system), and no MPI_<lang>_COMPILER may be named: one
# equal to CMake's own compiler makes FindMPI drop the include paths.
bundle_args() {
  local usr=$prefix/usr ompi=$prefix/usr/lib/x86_64-linux-gnu/openmpi
  printf '%s\n' "-DCMAKE_PREFIX_PATH=$torch_prefix;$usr" \
    -DMPI_ASSUME_NO_BUILTIN_MPI=ON -DMPI_SKIP_COMPILER_WRAPPER=ON -DMPI_CXX_SKIP_MPICXX=ON \
    "-DMPI_C_INCLUDE_PATH=$ompi/include" "-DMPI_CXX_INCLUDE_PATH=$ompi/include" \
    "-DMPI_C_HEADER_DIR=$ompi/include" "-DMPI_CXX_HEADER_DIR=$ompi/include" \
    -DMPI_C_LIB_NAMES=mpi -DMPI_CXX_LIB_NAMES=mpi "-DMPI_mpi_LIBRARY=$ompi/lib/libmpi.so" \
    -DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND "-DHDF5_ROOT=$usr" \
    "-DHDF5_C_INCLUDE_DIR=$usr/include/hdf5/openmpi" \
    "-DHDF5_hdf5_LIBRARY_RELEASE=$usr/lib/x86_64-linux-gnu/hdf5/openmpi/libhdf5.so"
}

# The bundle's shared libraries whose soname the system lacks, linked into one directory for
# LD_LIBRARY_PATH (those the system has stay the system's).
extract_bundle() {
  compgen -G "$bundle/*.deb" >/dev/null || die "the system lacks build dependencies and $bundle holds no .debs \
(run scripts/gpu_bundle.sh on a Debian 12 machine and carry .gpu-bundle along)"
  rm -rf "$prefix"
  mkdir -p "$prefix/missing-libs"
  for deb in "$bundle"/*.deb; do dpkg-deb -x "$deb" "$prefix" 2>/dev/null || dpkg -x "$deb" "$prefix"; done
  local known
  known=$(ldconfig -p | awk '{print $1}')
  find "$prefix/usr/lib" -name '*.so.*' | while read -r lib; do
    local name
    name=$(basename "$lib")
    grep -qxF "$name" <<<"$known" || ln -sf "$lib" "$prefix/missing-libs/$name"
  done
  say "bundle extracted into $prefix ($(ls "$prefix/missing-libs" | wc -l) libraries the system lacks)"
  local unresolved
  unresolved=$(LD_LIBRARY_PATH=$prefix/missing-libs ldd "$prefix"/missing-libs/* 2>/dev/null | awk '/not found/{print $1}' | sort -u)
  [ -z "$unresolved" ] || say "warning: needed by the bundle, found neither here nor in it: $(echo $unresolved)"
}

mkdir -p "$build"
: >"$build/env.sh"
: >"$build/configure.log"  # no verdict below may come from an earlier run
if [ "${DPO_GPU_USE_BUNDLE:-0}" != 1 ] &&
   cmake -S . -B "$build" "${args[@]}" -DCMAKE_PREFIX_PATH="$torch_prefix" "$@" >"$build/configure.log" 2>&1; then
  say "configured with the system's dependencies"
else
  if grep -q 'needs a libtorch built with CUDA' "$build/configure.log"; then
    die "the libtorch at $torch_prefix is CPU-only: the GPU build needs one built with CUDA"
  fi
  [ "${DPO_GPU_USE_BUNDLE:-0}" = 1 ] || say "the system lacks some dependencies ($(grep -m1 -o 'Could NOT find [A-Za-z0-9_-]*\|Could not find a package configuration file provided by "[^"]*"' "$build/configure.log" || echo 'see configure.log')): using the bundle"
  extract_bundle
  # The bundle's libraries find their own dependencies (libmpi's libopen-pal, ...) only through
  # LD_LIBRARY_PATH: sourced here already, because CMake's checks link against them (FindMPI's
  # test) and catch_discover_tests runs the test binaries after linking them. Open MPI finds its
  # plugins and help files under OPAL_PREFIX (only used when run under mpirun).
  printf '%s\n' "export OPAL_PREFIX='$prefix/usr'" \
    "export LD_LIBRARY_PATH='$prefix/missing-libs'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" >"$build/env.sh"
  # shellcheck disable=SC1091
  . "$build/env.sh"
  mapfile -t extra < <(bundle_args)
  rm -f "$build/CMakeCache.txt"
  cmake -S . -B "$build" "${args[@]}" "${extra[@]}" "$@" >"$build/configure.log" 2>&1 ||
    { tail -n 30 "$build/configure.log" >&2; die "configure failed with the bundle too (log: $build/configure.log)"; }
fi
grep -q 'dpo: NCCL .* enabled' "$build/configure.log" || die "configured without NCCL (see $build/configure.log)"
grep -q 'dpo: libtorch with CUDA: ON' "$build/configure.log" || die "this libtorch has no CUDA (see $build/configure.log)"
targets=()
for target in ${DPO_GPU_TARGETS:-}; do targets+=(--target "$target"); done
cmake --build "$build" -j"$(nproc)" "${targets[@]}"
if ldd "$build/dpo" | grep -q 'not found'; then
  ldd "$build/dpo" | grep 'not found' >&2
  die "$build/dpo has unresolved libraries (add their packages to scripts/gpu_bundle.sh)"
fi
say "built $build/dpo; before running it: . $build/env.sh"
