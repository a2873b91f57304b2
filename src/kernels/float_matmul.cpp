#include "dpo/kernels/float_matmul.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <ATen/ATen.h>
#include <ATen/CPUFunctions.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/library.h>
#include <torch/version.h>

#include "dpo/kernels/bfloat16_matmul_primitive.h"

namespace dpo {
namespace {

// oneDNN's C API (dnnl.h), looked up in the libraries already loaded (libtorch links oneDNN), so
// that the build needs no oneDNN headers and a libtorch without it simply keeps its own kernels.
// Row-major: C = alpha op(A) op(B) + beta C with op(A) M x K, op(B) K x N.
using SgemmFn = int (*)(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                        int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
struct DnnlVersion {
  int major, minor, patch;
  const char* hash;
  unsigned cpu_runtime, gpu_runtime;
};
using VersionFn = const DnnlVersion* (*)();
SgemmFn sgemm = nullptr;  // null: float32 products stay on libtorch's kernels too
// The same with bfloat16 operands and float32 results (oneDNN's dnnl_gemm_bf16bf16f32).
using BFloat16GemmFn = int (*)(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
                               const at::BFloat16* A, int64_t lda, const at::BFloat16* B, int64_t ldb, float beta,
                               float* C, int64_t ldc);
BFloat16GemmFn bfloat16_gemm = nullptr;
bool installed = false;

// The matmul clock: nanoseconds in outermost products while it runs.
std::atomic<bool> clock_running{false};
std::atomic<int64_t> clock_nanoseconds{0};
thread_local int product_depth = 0;
struct ProductTimer {
  std::chrono::steady_clock::time_point start;
  bool timed;
  ProductTimer() : timed(clock_running.load(std::memory_order_relaxed) && product_depth == 0) {
    ++product_depth;
    if (timed) start = std::chrono::steady_clock::now();
  }
  ~ProductTimer() {
    --product_depth;
    if (timed)
      clock_nanoseconds += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  }
  ProductTimer(const ProductTimer&) = delete;
  ProductTimer& operator=(const ProductTimer&) = delete;
};

// C [M, N] (row stride ldc) *= factor.
void scale_rows(float* c, int64_t M, int64_t N, int64_t ldc, float factor) {
  for (int64_t i = 0; i < M; ++i) {
    float* row = c + i * ldc;
    for (int64_t j = 0; j < N; ++j) row[j] *= factor;
  }
}

// oneDNN 2.6's bfloat16 GEMM applies an alpha other than 1, or a beta other than 0 and 1, in a
// slow path of its own: on one core of an Intel CPU with AMX, a 64 x 256 x 64 product (the tiled
// attention's, scaled by 1/sqrt(head dim)) ran at 24 GFLOP/s with alpha 0.125 against 215 with
// alpha 1, and 1536 x 768 x 768 at 226 against 823; its float32 GEMM shows no such difference.
// So the scaling is done here, around a product with alpha 1 and beta 0 or 1, in passes over C
// that stay in cache: C = alpha (A B + (beta / alpha) C). Where beta / alpha is not a finite
// number, oneDNN scales.
int bfloat16_gemm_unscaled(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
                           const at::BFloat16* A, int64_t lda, const at::BFloat16* B, int64_t ldb, float beta, float* C,
                           int64_t ldc) {
  const float ratio = beta / alpha;
  if ((alpha == 1.0F && (beta == 0.0F || beta == 1.0F)) || !std::isnormal(alpha) || !std::isfinite(ratio))
    return bfloat16_gemm(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (beta != 0.0F && ratio != 1.0F) scale_rows(C, M, N, ldc, ratio);
  const int status = bfloat16_gemm(transa, transb, M, N, K, 1.0F, A, lda, B, ldb, beta == 0.0F ? 0.0F : 1.0F, C, ldc);
  if (status == 0 && alpha != 1.0F) scale_rows(C, M, N, ldc, alpha);
  return status;
}

// A whole product (not a tile's, see gemm_rows) with bfloat16 operands, plus `bias` [N] on every
// row where it is not null (then beta must be 0): the rows oneDNN's AMX matmul primitive takes
// (bfloat16_matmul_primitive.cpp: alpha 1, beta 0 or 1; it adds the bias as it writes the results),
// the rest through the GEMM function, starting from a copy of the bias. DPO_BF16_MATMUL=gemm keeps
// all of it on the GEMM function, for comparisons.
bool primitive_allowed = false;
int bfloat16_product_plus_bias(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
                               const at::BFloat16* A, int64_t lda, const at::BFloat16* B, int64_t ldb, float beta,
                               const float* bias, float* C, int64_t ldc) {
  int64_t done = 0;
  if (primitive_allowed && alpha == 1.0F && (beta == 0.0F || beta == 1.0F))
    done = bfloat16_matmul_primitive_rows(transa, transb, M, N, K, A, lda, B, ldb, beta == 1.0F, bias, C, ldc);
  if (done == M) return 0;
  if (bias != nullptr) {
    at::parallel_for(done, M, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) std::copy(bias, bias + N, C + i * ldc);
    });
    beta = 1.0F;
  }
  // The rows after the first `done` (some only where A is read untransposed: its stored rows).
  return bfloat16_gemm_unscaled(transa, transb, M - done, N, K, alpha, A + done * lda, lda, B, ldb, beta,
                                C + done * ldc, ldc);
}
int bfloat16_product(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const at::BFloat16* A,
                     int64_t lda, const at::BFloat16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  return bfloat16_product_plus_bias(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, nullptr, C, ldc);
}

// A 2-D float32 operand as GEMM reads it: row-major ('N', leading dimension = row stride) or its
// transpose ('T'); anything else is copied to row-major first.
struct Operand {
  at::Tensor tensor;
  char trans;
  int64_t ld;
};
Operand operand(const at::Tensor& t) {
  const int64_t rows = t.size(0), cols = t.size(1);
  if (t.stride(1) == 1 && (rows == 1 || t.stride(0) >= std::max<int64_t>(cols, 1)))
    return {t, 'N', rows == 1 ? std::max<int64_t>(cols, 1) : t.stride(0)};
  if (t.stride(0) == 1 && (cols == 1 || t.stride(1) >= std::max<int64_t>(rows, 1)))
    return {t, 'T', cols == 1 ? std::max<int64_t>(rows, 1) : t.stride(1)};
  const at::Tensor copy = t.contiguous();
  return {copy, 'N', std::max<int64_t>(cols, 1)};
}

// out [M, N] (row-major, row stride ldc) = alpha a b + beta out, a [M, K], b [K, N], through one
// of oneDNN's row-major GEMMs: T is the operands' element type (float: dnnl_sgemm, BFloat16:
// dnnl_gemm_bf16bf16f32); the result is float32 either way.
template <typename T, typename Gemm>
void gemm_into(Gemm gemm, const at::Tensor& a, const at::Tensor& b, float beta, float alpha, float* out, int64_t ldc) {
  const Operand A = operand(a), B = operand(b);
  const int status = gemm(A.trans, B.trans, a.size(0), b.size(1), a.size(1), alpha, A.tensor.data_ptr<T>(), A.ld,
                          B.tensor.data_ptr<T>(), B.ld, beta, out, ldc);
  TORCH_CHECK(status == 0, "oneDNN GEMM (", a.scalar_type(), ") failed with status ", status, " on [", a.size(0), ", ",
              a.size(1), "] x [", b.size(0), ", ", b.size(1), "]");
}
void gemm_into(const at::Tensor& a, const at::Tensor& b, float beta, float alpha, float* out, int64_t ldc) {
  gemm_into<float>(sgemm, a, b, beta, alpha, out, ldc);
}

bool is_strided(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype && t.layout() == at::kStrided && !t.is_neg();
}
bool is_float(const at::Tensor& t) { return is_strided(t, at::kFloat); }
// Matrices oneDNN takes: of `dtype`, 2-D and of equal inner size, no empty dimension (libtorch's
// own kernel defines those edge cases).
bool multipliable(const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype) {
  return is_strided(a, dtype) && is_strided(b, dtype) && a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0) &&
         a.numel() > 0 && b.numel() > 0;
}
bool takes(const at::Tensor& a, const at::Tensor& b) { return sgemm && multipliable(a, b, at::kFloat); }
bool row_major(const at::Tensor& c) { return c.dim() == 2 && c.stride(1) == 1 && (c.size(0) == 1 || c.stride(0) >= c.size(1)); }
int64_t row_stride(const at::Tensor& c) { return c.size(0) == 1 ? c.size(1) : c.stride(0); }

at::Tensor mm(const at::Tensor& a, const at::Tensor& b) {
  const ProductTimer timer;
  if (!takes(a, b)) return at::cpu::mm(a, b);
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  gemm_into(a, b, 0.0F, 1.0F, out.data_ptr<float>(), b.size(1));
  return out;
}

at::Tensor& mm_out(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  const ProductTimer timer;
  if (!takes(a, b) || !is_float(out)) return at::cpu::mm_out(out, a, b);
  if (out.sizes() != at::IntArrayRef{a.size(0), b.size(1)}) out.resize_({a.size(0), b.size(1)});
  if (!row_major(out) || out.is_same(a) || out.is_same(b)) return at::cpu::mm_out(out, a, b);
  gemm_into(a, b, 0.0F, 1.0F, out.data_ptr<float>(), row_stride(out));
  return out;
}

at::Tensor addmm(const at::Tensor& self, const at::Tensor& a, const at::Tensor& b, const at::Scalar& beta,
                 const at::Scalar& alpha) {
  const ProductTimer timer;
  if (!takes(a, b) || !is_float(self)) return at::cpu::addmm(self, a, b, beta, alpha);
  const float beta_f = beta.to<float>();
  // beta 0 ignores self (NaN included), as libtorch does.
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  if (beta_f != 0.0F) out.copy_(self.expand({a.size(0), b.size(1)}));
  gemm_into(a, b, beta_f, alpha.to<float>(), out.data_ptr<float>(), b.size(1));
  return out;
}

at::Tensor& addmm_(at::Tensor& self, const at::Tensor& a, const at::Tensor& b, const at::Scalar& beta,
                   const at::Scalar& alpha) {
  const ProductTimer timer;
  if (!takes(a, b) || !is_float(self) || self.sizes() != at::IntArrayRef{a.size(0), b.size(1)} || !row_major(self) ||
      self.is_same(a) || self.is_same(b))
    return at::cpu::addmm_(self, a, b, beta, alpha);
  gemm_into(a, b, beta.to<float>(), alpha.to<float>(), self.data_ptr<float>(), row_stride(self));
  return self;
}

// Batched: one GEMM per batch entry, in turn (each uses every thread), as libtorch's own kernel.
bool takes_batched(const at::Tensor& a, const at::Tensor& b) {
  return sgemm && is_float(a) && is_float(b) && a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1) &&
         a.numel() > 0 && b.numel() > 0;
}

at::Tensor bmm(const at::Tensor& a, const at::Tensor& b) {
  const ProductTimer timer;
  if (!takes_batched(a, b)) return at::cpu::bmm(a, b);
  const int64_t M = a.size(1), N = b.size(2);
  at::Tensor out = at::empty({a.size(0), M, N}, a.options());
  for (int64_t i = 0; i < a.size(0); ++i) gemm_into(a[i], b[i], 0.0F, 1.0F, out[i].data_ptr<float>(), N);
  return out;
}

at::Tensor baddbmm(const at::Tensor& self, const at::Tensor& a, const at::Tensor& b, const at::Scalar& beta,
                   const at::Scalar& alpha) {
  const ProductTimer timer;
  if (!takes_batched(a, b) || !is_float(self)) return at::cpu::baddbmm(self, a, b, beta, alpha);
  const int64_t M = a.size(1), N = b.size(2);
  const float beta_f = beta.to<float>(), alpha_f = alpha.to<float>();
  at::Tensor out = at::empty({a.size(0), M, N}, a.options());
  if (beta_f != 0.0F) out.copy_(self.expand({a.size(0), M, N}));
  for (int64_t i = 0; i < a.size(0); ++i) gemm_into(a[i], b[i], beta_f, alpha_f, out[i].data_ptr<float>(), N);
  return out;
}

// The replacement is registered once; libtorch warns that each replaces a kernel, which is the
// point here, so its warnings are swallowed while registering. (The handler's interface changed
// in libtorch 2.)
#if TORCH_VERSION_MAJOR >= 2
struct QuietWarnings : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};
using WarningHandlerGuard = c10::WarningUtils::WarningHandlerGuard;
#else
struct QuietWarnings : c10::WarningHandler {
  void process(const c10::SourceLocation&, const std::string&, const bool) override {}
};
using WarningHandlerGuard = c10::Warning::WarningHandlerGuard;
#endif

std::string install() {
  const char* choice = std::getenv("DPO_FLOAT_MATMUL");
  const bool blas = choice && std::strcmp(choice, "blas") == 0;
  const auto version = reinterpret_cast<VersionFn>(dlsym(RTLD_DEFAULT, "dnnl_version"));
  if (!blas && version) sgemm = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "dnnl_sgemm"));
  const char* bf16_choice = std::getenv("DPO_BF16_MATMUL");
  const bool bf16_libtorch = bf16_choice && std::strcmp(bf16_choice, "libtorch") == 0;
  if (version && !bf16_libtorch) {
    bfloat16_gemm = reinterpret_cast<BFloat16GemmFn>(dlsym(RTLD_DEFAULT, "dnnl_gemm_bf16bf16f32"));
    // oneDNN answers "unimplemented" on CPUs its bfloat16 GEMM does not cover (it needs AVX-512):
    // one 1 x 1 product tells, and those keep libtorch's bfloat16 products.
    const at::BFloat16 one(1.0F);
    float product = 0;
    if (bfloat16_gemm && bfloat16_gemm('N', 'N', 1, 1, 1, 1.0F, &one, 1, &one, 1, 0.0F, &product, 1) != 0)
      bfloat16_gemm = nullptr;
    primitive_allowed = bfloat16_gemm && !(bf16_choice && std::strcmp(bf16_choice, "gemm") == 0) &&
                        load_bfloat16_matmul_primitive();
  }
  QuietWarnings quiet;
  const WarningHandlerGuard guard(&quiet);
  static torch::Library library(torch::Library::IMPL, "aten", c10::DispatchKey::CPU, __FILE__, __LINE__);
  library.impl("mm", TORCH_FN(mm));
  library.impl("mm.out", TORCH_FN(mm_out));
  library.impl("addmm", TORCH_FN(addmm));
  library.impl("addmm_", TORCH_FN(addmm_));
  library.impl("bmm", TORCH_FN(bmm));
  library.impl("baddbmm", TORCH_FN(baddbmm));
  installed = true;
  if (blas) return "libtorch's BLAS (DPO_FLOAT_MATMUL=blas)";
  if (!sgemm) return "libtorch's BLAS (no oneDNN GEMM in the loaded libraries)";
  const DnnlVersion* v = version();
  return fmt::format("oneDNN {}.{}.{}", v->major, v->minor, v->patch);
}

// What install() returned, installing once; a reference, as layers ask on every forward.
const std::string& route() {
  static std::once_flag once;
  static std::string installed_route;
  std::call_once(once, [] { installed_route = install(); });
  return installed_route;
}

bool takes_bfloat16(const at::Tensor& a, const at::Tensor& b) {
  return bfloat16_gemm && multipliable(a, b, at::kBFloat16) && a.device().is_cpu() && b.device().is_cpu();
}

// The fallbacks' out = alpha product + beta out; beta 0 ignores what out held (NaN included).
void add_scaled(at::Tensor& out, const at::Tensor& product, float beta, float alpha) {
  if (beta == 0.0F)
    out.copy_(product).mul_(alpha);
  else
    out.mul_(beta).add_(product, alpha);
}

}  // namespace

std::string route_float_matmuls() { return route(); }

bool bfloat16_products_in_float32() {
  route();
  return bfloat16_gemm != nullptr;
}

std::string bfloat16_primitive_implementation() {
  return primitive_allowed ? bfloat16_matmul_primitive_implementation() : "";
}
int64_t bfloat16_primitive_products() { return primitive_allowed ? bfloat16_matmul_primitive_products() : 0; }

at::Tensor product_in_float32(const at::Tensor& a, const at::Tensor& b) {
  if (!takes_bfloat16(a, b)) return at::mm(a, b).to(at::kFloat);
  const ProductTimer timer;
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options().dtype(at::kFloat));
  gemm_into<at::BFloat16>(bfloat16_product, a, b, 0.0F, 1.0F, out.data_ptr<float>(), b.size(1));
  return out;
}

at::Tensor product_in_float32(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias) {
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == b.size(1), "product_in_float32: a bias of ", b.size(1),
              " was expected");
  if (!takes_bfloat16(a, b)) return at::mm(a, b).to(at::kFloat).add_(bias);
  const ProductTimer timer;
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options().dtype(at::kFloat));
  const at::Tensor bias32 = bias.to(at::kFloat).contiguous();
  const float* bias_data = bias32.data_ptr<float>();
  const auto with_bias = [bias_data](char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
                                     const at::BFloat16* A, int64_t lda, const at::BFloat16* B, int64_t ldb,
                                     float beta, float* C, int64_t ldc) {
    return bfloat16_product_plus_bias(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, bias_data, C, ldc);
  };
  gemm_into<at::BFloat16>(with_bias, a, b, 0.0F, 1.0F, out.data_ptr<float>(), b.size(1));
  return out;
}

void add_product_in_float32(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, float beta) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.dim() == 2 && out.size(0) == a.size(0) && out.size(1) == b.size(1),
              "add_product_in_float32: out must be float32 [", a.size(0), ", ", b.size(1), "]");
  if (!takes_bfloat16(a, b) || !row_major(out)) return add_scaled(out, at::mm(a, b).to(at::kFloat), beta, 1.0F);
  const ProductTimer timer;
  gemm_into<at::BFloat16>(bfloat16_product, a, b, beta, 1.0F, out.data_ptr<float>(), row_stride(out));
}

bool float32_gemm_loaded() {
  route();
  return sgemm != nullptr;
}

void gemm_rows(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int status = sgemm(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  TORCH_CHECK(status == 0, "oneDNN GEMM (Float) failed with status ", status, " on ", M, " x ", K, " x ", N);
}

void gemm_rows(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const at::BFloat16* A,
               int64_t lda, const at::BFloat16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int status = bfloat16_gemm_unscaled(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  TORCH_CHECK(status == 0, "oneDNN GEMM (BFloat16) failed with status ", status, " on ", M, " x ", K, " x ", N);
}

void add_to_matmul_clock(double seconds) {
  if (clock_running.load(std::memory_order_relaxed)) clock_nanoseconds += static_cast<int64_t>(seconds * 1e9);
}

void start_matmul_clock() {
  clock_nanoseconds = 0;
  clock_running = true;
}

double matmul_clock_seconds() {
  clock_running = false;
  return installed ? static_cast<double>(clock_nanoseconds.load()) * 1e-9 : -1.0;
}

}  // namespace dpo
