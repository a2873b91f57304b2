// Sixteen float32 lanes through GCC's vector extension, for the row loops of CPU kernels (the
// tiled attention's softmax, the head's log-softmax): they compile to one AVX-512 register, two
// AVX2 or four SSE ones in whichever clone of the calling function the CPU picks
// (`target_clones("avx512f", "avx2", "default")` on the caller). Left to the auto-vectoriser,
// such loops ran scalar (vmovss/vfmadd213ss in perf).
// Helpers take and give vectors by reference: GCC warns about passing them by value, whose ABI
// differs with and without AVX-512.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

namespace dpo::lanes {

typedef float Floats __attribute__((vector_size(64)));
typedef int32_t Ints __attribute__((vector_size(64)));
typedef uint32_t Words __attribute__((vector_size(64)));
typedef uint16_t Halves __attribute__((vector_size(32)));
constexpr int64_t kLanes = 16;
// Elements per task of at::parallel_for in the lane kernels.
constexpr int64_t kTaskElements = int64_t{1} << 15;
// The at::parallel_for grain of a kernel that hands out whole rows (or blocks of rows) of
// `row_elements` each: as many as make kTaskElements, at least one.
inline int64_t rows_per_task(int64_t row_elements) {
  return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(row_elements, 1));
}

// Whether t is what the elementwise lane kernels read as one flat array: float32, on the CPU,
// strided and contiguous.
inline bool flat_float32_cpu(const at::Tensor& t) {
  return t.defined() && t.is_cpu() && t.scalar_type() == at::kFloat && t.layout() == at::kStrided && t.is_contiguous();
}

// v = lanes [0, count) from p, the others `fill`.
inline void load(Floats& v, const float* p, int64_t count, float fill) {
  if (count >= kLanes)
    std::memcpy(&v, p, sizeof v);
  else
    for (int64_t i = 0; i < kLanes; ++i) v[i] = i < count ? p[i] : fill;
}
// v = lanes [0, count) from bfloat16 values at p (exactly: a bfloat16 is a float32's upper half),
// the others `fill`.
inline void load(Floats& v, const at::BFloat16* p, int64_t count, float fill) {
  Halves h{};
  if (count >= kLanes)
    std::memcpy(&h, p, sizeof h);  // one vector load; a memcpy of a variable size is a call
  else
    std::memcpy(&h, p, sizeof(uint16_t) * static_cast<size_t>(count));
  v = (Floats)(__builtin_convertvector(h, Words) << 16);
  for (int64_t i = count; i < kLanes; ++i) v[i] = fill;
}
// Lanes [0, count) of v to p.
inline void store(float* p, const Floats& v, int64_t count) {
  if (count >= kLanes)
    std::memcpy(p, &v, sizeof v);
  else
    for (int64_t i = 0; i < count; ++i) p[i] = v[i];
}
// Lanes [0, count) of v to p, rounded to bfloat16 (to nearest even, NaN kept NaN, as c10::BFloat16
// rounds).
inline void store(at::BFloat16* p, const Floats& v, int64_t count) {
  const Words bits = (Words)v;
  const Words rounded = (bits + 0x7FFFU + ((bits >> 16) & 1U)) >> 16;
  const Words nan = Words{} + 0x7FC0U;
  const Halves h = __builtin_convertvector(v != v ? nan : rounded, Halves);
  if (count >= kLanes)
    std::memcpy(p, &h, sizeof h);
  else
    std::memcpy(p, &h, sizeof(uint16_t) * static_cast<size_t>(count));
}
// The sum of the lanes.
inline float sum(const Floats& v) {
  float s = 0;
  for (int64_t i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// x = e^x for x <= 0 (values less their row's maximum): 2^n e^r with r in [-ln 2 / 2, ln 2 / 2]
// and e^r by its Taylor series to r^6 (relative error < 2e-7). Below -87 (e^x < 2^-125) it gives
// e^-87 ~ 1.6e-38; NaN stays NaN.
inline void exp_nonpositive(Floats& x) {
  const Floats lowest = Floats{} - 87.0F;
  x = x < lowest ? lowest : x;
  const Ints n = __builtin_convertvector(x * 1.44269504F - 0.5F, Ints);  // rounds to nearest for x <= 0
  const Floats fn = __builtin_convertvector(n, Floats);
  const Floats r = (x - fn * 0.693145751953125F) - fn * 1.428606765330187e-06F;
  const Floats p =
      1.0F + r * (1.0F + r * (0.5F + r * (1.0F / 6 + r * (1.0F / 24 + r * (1.0F / 120 + r * (1.0F / 720))))));
  x = p * (Floats)((n + 127) << 23);
}

// s = sigmoid(z) for 16 lanes, from e = e^-|z| and q = 1 / (1 + e), which are returned too:
// s = q (z >= 0) or e q (z < 0), and s (1 - s) = e q^2 either way, for derivatives without the
// cancellation of 1 - s near 1. A NaN stays NaN.
inline void sigmoid(const Floats& z, Floats& s, Floats& e, Floats& q) {
  e = z < 0.0F ? z : -z;
  exp_nonpositive(e);
  q = 1.0F / (1.0F + e);
  s = z >= 0.0F ? q : e * q;
}

}  // namespace dpo::lanes
