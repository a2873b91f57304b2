#include "dpo/kernels/rmsprop_update.h"

#include <cmath>

#include <ATen/Parallel.h>

#include "dpo/kernels/float_lanes.h"

namespace dpo {
namespace {

// Elements per task of at::parallel_for: 256 KiB of each stream.
constexpr int64_t kGrain = int64_t{1} << 16;

// The loop vectorises (sqrt included: this file is compiled with -fno-math-errno) in whichever
// clone the CPU picks. Weight decay is a separate loop so that the common case reads no
// parameter twice.
__attribute__((target_clones("avx512f", "avx2", "default"))) void update_range(
    float* __restrict p, const float* __restrict g, float* __restrict s, int64_t begin, int64_t end, float neg_lr,
    float alpha, float one_minus_alpha, float eps) {
  for (int64_t i = begin; i < end; ++i) {
    const float square = s[i] * alpha + one_minus_alpha * g[i] * g[i];
    s[i] = square;
    p[i] = p[i] + neg_lr * g[i] / (std::sqrt(square) + eps);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void update_range_with_decay(
    float* __restrict p, const float* __restrict g, float* __restrict s, int64_t begin, int64_t end, float neg_lr,
    float alpha, float one_minus_alpha, float eps, float decay) {
  for (int64_t i = begin; i < end; ++i) {
    const float grad = g[i] + decay * p[i];
    const float square = s[i] * alpha + one_minus_alpha * grad * grad;
    s[i] = square;
    p[i] = p[i] + neg_lr * grad / (std::sqrt(square) + eps);
  }
}

}  // namespace

bool takes_rmsprop_update(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& square_avg) {
  return lanes::flat_float32_cpu(param) && lanes::flat_float32_cpu(grad) && lanes::flat_float32_cpu(square_avg) &&
         grad.sizes() == param.sizes() && square_avg.sizes() == param.sizes();
}

void rmsprop_update(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& square_avg, double lr,
                    double alpha, double eps, double weight_decay) {
  TORCH_CHECK(takes_rmsprop_update(param, grad, square_avg),
              "rmsprop_update: parameter, gradient and square average must be contiguous float32 CPU tensors of one "
              "shape");
  float* p = param.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  float* s = square_avg.data_ptr<float>();
  // The scalars as libtorch's kernels take them: the double values cast to float (1 - alpha
  // formed in double first, as addcmul_'s value is).
  const auto neg_lr = static_cast<float>(-lr), a = static_cast<float>(alpha),
             one_minus = static_cast<float>(1.0 - alpha), e = static_cast<float>(eps),
             decay = static_cast<float>(weight_decay);
  at::parallel_for(0, param.numel(), kGrain, [&](int64_t begin, int64_t end) {
    if (weight_decay != 0.0)
      update_range_with_decay(p, g, s, begin, end, neg_lr, a, one_minus, e, decay);
    else
      update_range(p, g, s, begin, end, neg_lr, a, one_minus, e);
  });
}

}  // namespace dpo
