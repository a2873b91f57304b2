// Float32 matrix products on CPUs through oneDNN's GEMM instead of the BLAS libtorch was built on.
//
// Debian's libtorch runs float32 products through OpenBLAS, whose kernel is chosen once per
// process from the CPU (or from OPENBLAS_CORETYPE, which machine images set): on an AVX-512 CPU
// told "Haswell", or with an OpenBLAS older than the CPU, every product runs at half width. The
// same libtorch also links oneDNN, whose GEMM picks its kernel from the CPU's own flags at run
// time (measured here, 2 cores of an AMD Zen 5 with OPENBLAS_CORETYPE=Haswell: ~180 GFLOP/s
// against ~80-100 GFLOP/s). Libtorch's bfloat16 products already go through oneDNN.
//
// The products are re-routed where every caller (layers, autograd's backward formulas, the head's
// chunks, the MFU gauge) reaches them: libtorch's CPU kernels of aten::mm, mm.out, addmm, addmm_,
// bmm and baddbmm are replaced, and pass float32 operands to oneDNN; every other dtype, layout or
// empty shape goes on to libtorch's own kernel. Owning these kernels also lets `dpo bench` time
// the products of a step without a profiler (which slowed a step by 40-80% here).
#pragma once

#include <string>

#include <ATen/ATen.h>

namespace dpo {

// Installs the kernels once per process (later calls only report). Returns what float32 products
// run on: "oneDNN x.y.z" or, where the loaded libraries export no oneDNN GEMM or
// DPO_FLOAT_MATMUL=blas asks for it (for comparisons), "libtorch's BLAS".
std::string route_float_matmuls();

// Products of bfloat16 matrices with float32 results, on CPUs through oneDNN's
// dnnl_gemm_bf16bf16f32 where the loaded libraries export it (bfloat16_products_in_float32()), and
// on AMX CPUs through oneDNN's matmul primitive where that is faster (see the functions below).
// Mixed precision takes its products' results in float32 from there: on 2 Zen 5 cores they ran at
// 600-780 GFLOP/s where libtorch's bfloat16 mm (bfloat16 results) ran at 290-690, slowest on the
// narrow models' inner size of 256, and the float32 result needs no cast back for the float32
// work that follows. Elsewhere (CUDA, no oneDNN, other dtypes, or DPO_BF16_MATMUL=libtorch, for
// comparisons and for the second-kernel test pass) both take libtorch's mm and a cast.
bool bfloat16_products_in_float32();
// a [M, K] @ b [K, N] (any strides) as a new float32 [M, N] tensor.
at::Tensor product_in_float32(const at::Tensor& a, const at::Tensor& b);
// a @ b + bias, bias [N] broadcast over the rows.
at::Tensor product_in_float32(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias);
// out = a @ b + beta out, out float32 [M, N] (row-major rows are written in place).
void add_product_in_float32(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, float beta);
// These (not gemm_rows) take oneDNN's AMX matmul primitive for the rows and shapes where it is
// faster (kernels/bfloat16_matmul_primitive.cpp), unless DPO_BF16_MATMUL=gemm keeps them on the
// GEMM function. The primitive's implementation ("" while it has taken no product) and how many
// products it has taken, for `dpo bench` and tests:
std::string bfloat16_primitive_implementation();
int64_t bfloat16_primitive_products();

// For kernels that run many small products per tile inside their own parallel region (the tiled
// attention): row-major C [M, N] (row stride ldc) = alpha op(A) op(B) + beta C on raw pointers,
// op 'N' or 'T' (A is M x K after op, B K x N), through the oneDNN GEMM of the operands' type,
// with float32 results, one thread each inside a parallel region, untimed: the caller adds its
// products' time with add_to_matmul_clock. Loaded where float32_gemm_loaded() (float operands)
// or bfloat16_products_in_float32() (bfloat16 operands) says so; a failed GEMM throws.
bool float32_gemm_loaded();
void gemm_rows(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_rows(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const at::BFloat16* A,
               int64_t lda, const at::BFloat16* B, int64_t ldb, float beta, float* C, int64_t ldc);
void add_to_matmul_clock(double seconds);

// Time spent in the CPU matrix products above (any dtype; on the calling thread, outermost
// products only) is summed from start_matmul_clock() until matmul_clock_seconds(), which stops
// the clock and returns the sum; -1 when the kernels could not be installed.
void start_matmul_clock();
double matmul_clock_seconds();

}  // namespace dpo
