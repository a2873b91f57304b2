#!/usr/bin/env bash
# Runs the numerics-sensitive tests (ctest labels unit and numerics) once more under a second
# OpenBLAS kernel, so that a test which holds only by luck of one kernel's rounding fails here and
# not on the next machine (docs/numerics.md). Run after scripts/test.sh, which builds build/.
#
# The first kernel is OPENBLAS_CORETYPE when set, else what OpenBLAS picks for this CPU. The
# second is the first of SkylakeX, Haswell, Sandybridge, Nehalem that this CPU supports (flags in
# /proc/cpuinfo: forcing an unsupported kernel dies with SIGILL) and whose SIMD width differs from
# the first's; dpo's float32 products, on oneDNN in the first pass, run on OpenBLAS in this one. A
# tiny probe asks OpenBLAS itself (openblas_get_corename, through libblas.so.3 as
# libtorch loads it) which kernel runs, alone and under mpirun, so a misspelt or ignored choice
# cannot pass silently. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/tests/dpo_unit_tests ] || { echo "test_blas_kernels: build/ is not built; run scripts/test.sh first" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
cat >"$probe_dir/corename.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
int main(void) {
  void* blas = dlopen("libblas.so.3", RTLD_NOW);
  char* (*corename)(void) = blas ? (char* (*)(void))dlsym(blas, "openblas_get_corename") : NULL;
  if (!corename) return 3;  /* libblas.so.3 is not OpenBLAS: no kernel choice to make */
  printf("%s\n", corename());
  return 0;
}
C
cc -O "$probe_dir/corename.c" -o "$probe_dir/corename" -ldl
corename() { "$probe_dir/corename"; }

if ! first=$(corename); then
  echo "test_blas_kernels: libblas.so.3 is not OpenBLAS; nothing to vary, skipped"
  exit 0
fi

flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { for f in "$@"; do [[ $flags == *" $f "* ]] || return 1; done; }
# SIMD width of a kernel's float32 GEMM: kernels of one width share their code paths
# (Cooperlake = SkylakeX + bfloat16, Zen ~ Haswell).
width() {
  case ${1,,} in
    skylakex | cooperlake | sapphirerapids) echo 512 ;;
    haswell | zen) echo 256fma ;;
    sandybridge | bulldozer | piledriver | steamroller | excavator) echo 256 ;;
    *) echo 128 ;;
  esac
}
second=""
for candidate in SkylakeX Haswell Sandybridge Nehalem; do
  case $candidate in
    SkylakeX) has avx512f avx512bw avx512vl avx512dq || continue ;;
    Haswell) has avx2 fma || continue ;;
    Sandybridge) has avx || continue ;;
    Nehalem) has sse4_2 || continue ;;
  esac
  if [ "$(width "$candidate")" != "$(width "$first")" ]; then second=$candidate; break; fi
done
if [ -z "$second" ]; then
  echo "test_blas_kernels: OpenBLAS runs $first and this CPU supports no kernel of another width; skipped"
  exit 0
fi

export OPENBLAS_CORETYPE=$second
# dpo runs its float32 products on oneDNN (src/kernels/float_matmul.cpp), whose kernel follows the
# CPU, not OPENBLAS_CORETYPE: this pass puts them back on OpenBLAS (DPO_FLOAT_MATMUL=blas), another
# implementation. (Capping oneDNN's instruction set instead would also take the AVX-512 bfloat16
# products away from libtorch, which still picks them by the CPU's flags, and fail them.)
# bf16-mixed's products go back to libtorch's bfloat16 kernels too (DPO_BF16_MATMUL=libtorch): the
# path of every machine without oneDNN's bfloat16 GEMM, CUDA's included, tested on this one.
export DPO_FLOAT_MATMUL=blas DPO_BF16_MATMUL=libtorch
alone=$(corename)
under_mpi=$(mpirun -np 2 --oversubscribe "$probe_dir/corename" | sort -u | tr '\n' ' ')
if [ "$alone" != "$second" ] || [ "$under_mpi" != "$second " ]; then
  echo "test_blas_kernels: asked OpenBLAS for $second but it runs '$alone' (under mpirun: '$under_mpi')" >&2
  exit 1
fi
echo "test_blas_kernels: first kernel $first; now the unit and numerics tests under OpenBLAS $second (checked alone and under mpirun), float32 products on OpenBLAS too (DPO_FLOAT_MATMUL=blas), bfloat16 products on libtorch's kernels (DPO_BF16_MATMUL=libtorch)"
start=$SECONDS
cd build
status=0
ctest --output-on-failure -L 'unit|numerics' "$@" || status=$?
echo "test_blas_kernels: unit and numerics tests under $second took $((SECONDS - start)) s"
exit $status
