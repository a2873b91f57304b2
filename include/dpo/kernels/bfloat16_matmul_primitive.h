// bfloat16 products with float32 results through oneDNN's matmul primitive, where it runs on AMX
// tiles and beats oneDNN's GEMM interface (src/kernels/bfloat16_matmul_primitive.cpp says where and
// by how much). Private to the kernels module: float_matmul.cpp's bfloat16 products try it first.
#pragma once

#include <cstdint>
#include <string>

#include <c10/util/BFloat16.h>

namespace dpo {

// Looks up oneDNN 2.x's primitive interface in the loaded libraries (once); false where any of it
// is missing (no oneDNN, or oneDNN 3's changed interface), and then nothing is ever taken.
bool load_bfloat16_matmul_primitive();

// Row-major C [M, N] (row stride ldc) = op(A) op(B) (+ C where `accumulate`, + bias [N] on every
// row where `bias` is not null; not both), op 'N' or 'T' as in
// BLAS (A is M x K after op, B K x N), float32 results. Takes the largest multiple of 64 of the
// rows (all of them or none where A is transposed), and only where the inner size K is at most
// 1024, N at least 16, C's rows dense (ldc = N) and oneDNN's implementation for the shape uses
// AMX; returns how many rows it wrote (from the first), 0 where it declined. The caller computes
// the other rows.
int64_t bfloat16_matmul_primitive_rows(char transa, char transb, int64_t M, int64_t N, int64_t K,
                                       const c10::BFloat16* A, int64_t lda, const c10::BFloat16* B, int64_t ldb,
                                       bool accumulate, const float* bias, float* C, int64_t ldc);

// oneDNN's name for the implementation of the last primitive made (e.g. "brg:avx512_core_amx_bf16"),
// empty while none was; and how many products it has taken, for tests and `dpo bench`.
std::string bfloat16_matmul_primitive_implementation();
int64_t bfloat16_matmul_primitive_products();

}  // namespace dpo
