#include "dpo/kernels/sum_of_squares.h"

#include <cstring>
#include <vector>

#include <ATen/Parallel.h>

#include "dpo/kernels/float_lanes.h"

namespace dpo {
namespace {

// Elements per block: its float64 sum is one entry of the in-order total (256 KiB of floats).
constexpr int64_t kBlock = int64_t{1} << 16;

typedef float Floats8 __attribute__((vector_size(32)));
typedef double Doubles8 __attribute__((vector_size(64)));

// Four independent accumulators of eight float64 lanes keep the adds off one dependency chain;
// the loop stays memory-bound in every clone.
__attribute__((target_clones("avx512f", "avx2", "default"))) double block_sum_of_squares(const float* p, int64_t n) {
  Doubles8 acc[4] = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      Floats8 f;
      std::memcpy(&f, p + i + 8 * k, sizeof f);
      const Doubles8 d = __builtin_convertvector(f, Doubles8);
      acc[k] += d * d;
    }
  }
  const Doubles8 all = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  double sum = 0;
  for (int k = 0; k < 8; ++k) sum += all[k];
  for (; i < n; ++i) sum += static_cast<double>(p[i]) * static_cast<double>(p[i]);
  return sum;
}

}  // namespace

bool takes_sum_of_squares(const at::Tensor& t) { return lanes::flat_float32_cpu(t); }

double sum_of_squares(const at::Tensor& t) {
  TORCH_CHECK(takes_sum_of_squares(t), "sum_of_squares: the tensor must be a contiguous float32 CPU tensor");
  const float* p = t.data_ptr<float>();
  const int64_t n = t.numel(), blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> block_sums(static_cast<size_t>(blocks));
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      block_sums[static_cast<size_t>(b)] = block_sum_of_squares(p + b * kBlock, std::min(kBlock, n - b * kBlock));
  });
  double total = 0;
  for (const double s : block_sums) total += s;
  return total;
}

}  // namespace dpo
