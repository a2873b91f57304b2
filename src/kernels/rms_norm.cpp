#include "dpo/kernels/rms_norm.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "dpo/kernels/float_lanes.h"

namespace dpo {
namespace {
using namespace lanes;

// Rows whose weight gradients one partial sum holds: the partials are [blocks, n], summed after.
constexpr int64_t kBlockRows = 64;

// For rows [begin, end) of x [rows, n]: rstd[r] = 1 / sqrt(mean(x[r]^2) + eps) and
// y[r] = w (x[r] rstd[r]).
__attribute__((target_clones("avx512f", "avx2", "default"))) void rms_norm_rows(const float* x, const float* w,
                                                                                  float* y, float* rstd, int64_t n,
                                                                                  float eps, int64_t begin,
                                                                                  int64_t end) {
  Floats a{}, scale{}, acc{};
  for (int64_t r = begin; r < end; ++r) {
    const float* in = x + r * n;
    float* out = y + r * n;
    acc = Floats{};
    for (int64_t j = 0; j < n; j += kLanes) {
      load(a, in + j, n - j, 0.0F);
      acc += a * a;
    }
    const float inverse = 1.0F / std::sqrt(sum(acc) / static_cast<float>(n) + eps);
    rstd[r] = inverse;
    for (int64_t j = 0; j < n; j += kLanes) {
      load(a, in + j, n - j, 0.0F);
      load(scale, w + j, n - j, 0.0F);
      store(out + j, scale * (a * inverse), n - j);
    }
  }
}

// From the upstream g, for rows [begin, end): with s = rstd[r] and d = sum_j g w x / n,
// dx = s g w - x s^3 d; and, where dw_partial is given, dw_partial[j] += sum over the rows of
// g x s (the weight's gradient, before the sum over blocks).
__attribute__((target_clones("avx512f", "avx2", "default"))) void rms_norm_gradient_rows(
    const float* x, const float* w, const float* g, const float* rstd, float* dx, float* dw_partial, int64_t n,
    int64_t begin, int64_t end) {
  Floats a{}, scale{}, grad{}, acc{}, partial{};
  for (int64_t r = begin; r < end; ++r) {
    const float *in = x + r * n, *upstream = g + r * n;
    float* out = dx + r * n;
    const float s = rstd[r];
    acc = Floats{};
    for (int64_t j = 0; j < n; j += kLanes) {
      load(a, in + j, n - j, 0.0F);
      load(scale, w + j, n - j, 0.0F);
      load(grad, upstream + j, n - j, 0.0F);
      acc += grad * scale * a;
    }
    // s (s (s d)): s^3 alone underflows float32 for rows of large values (|x| ~ 1e15).
    const float c = s * (s * (s * sum(acc) / static_cast<float>(n)));
    for (int64_t j = 0; j < n; j += kLanes) {
      load(a, in + j, n - j, 0.0F);
      load(scale, w + j, n - j, 0.0F);
      load(grad, upstream + j, n - j, 0.0F);
      store(out + j, s * (grad * scale) - a * c, n - j);
      if (dw_partial != nullptr) {
        load(partial, dw_partial + j, n - j, 0.0F);
        store(dw_partial + j, partial + grad * a * s, n - j);
      }
    }
  }
}

// Calls body(block, begin, end) over the blocks of kBlockRows rows of x [..., n] in parallel tasks:
// rows [begin, end) of block `block`, one block at a time.
template <typename Body>
void over_blocks(const at::Tensor& x, const Body& body) {
  const int64_t n = x.size(-1), rows = n == 0 ? 0 : x.numel() / n;
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  at::parallel_for(0, blocks, rows_per_task(n * kBlockRows),
                   [&](int64_t first, int64_t last) {
                     for (int64_t b = first; b < last; ++b)
                       body(b, b * kBlockRows, std::min(rows, (b + 1) * kBlockRows));
                   });
}

// The sum of partials [blocks, n] over blocks, in block order whatever the threads.
at::Tensor sum_of_blocks(const at::Tensor& partials) {
  const int64_t blocks = partials.size(0), n = partials.size(1);
  at::Tensor total = at::zeros({n}, partials.options());
  const float* in = partials.data_ptr<float>();
  float* out = total.data_ptr<float>();
  at::parallel_for(0, n, rows_per_task(blocks), [&](int64_t begin, int64_t end) {
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t j = begin; j < end; ++j) out[j] += in[b * n + j];
  });
  return total;
}

struct RMSNorm : torch::autograd::Function<RMSNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    const int64_t n = x.size(-1);
    at::Tensor y = at::empty_like(x);
    at::Tensor rstd = at::empty({n == 0 ? 0 : x.numel() / n}, x.options());
    const float *in = x.data_ptr<float>(), *w = weight.data_ptr<float>();
    float *out = y.data_ptr<float>(), *inverse = rstd.data_ptr<float>();
    const auto eps_f = static_cast<float>(eps);
    over_blocks(x, [&](int64_t, int64_t begin, int64_t end) { rms_norm_rows(in, w, out, inverse, n, eps_f, begin, end); });
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &rstd = saved[2];
    const at::Tensor g = grad_outputs.at(0).to(at::kFloat).contiguous();
    const int64_t n = x.size(-1), rows = n == 0 ? 0 : x.numel() / n;
    at::Tensor dx = at::empty_like(x);
    const bool weight_grad = ctx->needs_input_grad(1);
    at::Tensor partials = weight_grad ? at::zeros({(rows + kBlockRows - 1) / kBlockRows, n}, x.options()) : at::Tensor();
    const float *in = x.data_ptr<float>(), *w = weight.data_ptr<float>(), *upstream = g.data_ptr<float>(),
                *inverse = rstd.data_ptr<float>();
    float* out = dx.data_ptr<float>();
    float* partial = weight_grad ? partials.data_ptr<float>() : nullptr;
    over_blocks(x, [&](int64_t block, int64_t begin, int64_t end) {
      rms_norm_gradient_rows(in, w, upstream, inverse, out, partial ? partial + block * n : nullptr, n, begin, end);
    });
    return {dx, weight_grad ? sum_of_blocks(partials) : at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(weight.dim() == 1 && x.dim() >= 1 && x.size(-1) == weight.size(0), "rms_norm: weight [",
              weight.sizes(), "] does not match the last dimension of x [", x.sizes(), "]");
  if (flat_float32_cpu(x) && flat_float32_cpu(weight)) return RMSNorm::apply(x, weight, eps);
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x32 * at::rsqrt(variance + eps)).to(x.scalar_type());
}

}  // namespace dpo
