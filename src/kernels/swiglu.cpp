#include "dpo/kernels/swiglu.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "dpo/kernels/float_lanes.h"

namespace dpo {
namespace {
using namespace lanes;

// y[r, j] = silu(x[r, j]) x[r, I + j] for rows [begin, end) of x [rows, 2I].
__attribute__((target_clones("avx512f", "avx2", "default"))) void swiglu_rows(const float* x, float* y, int64_t width,
                                                                                int64_t begin, int64_t end) {
  Floats a{}, b{}, s{}, e{}, q{};
  for (int64_t r = begin; r < end; ++r) {
    const float *gate = x + 2 * r * width, *up = gate + width;
    float* out = y + r * width;
    for (int64_t j = 0; j < width; j += kLanes) {
      load(a, gate + j, width - j, 0.0F);
      load(b, up + j, width - j, 0.0F);
      sigmoid(a, s, e, q);
      store(out + j, a * s * b, width - j);
    }
  }
}

// From the upstream g [rows, I]: d gate = g up (s + a s (1 - s)) with s (1 - s) = e q^2
// (lanes::sigmoid), and d up = g a s, into dx [rows, 2I].
__attribute__((target_clones("avx512f", "avx2", "default"))) void swiglu_gradient_rows(const float* x, const float* g,
                                                                                         float* dx, int64_t width,
                                                                                         int64_t begin, int64_t end) {
  Floats a{}, b{}, grad{}, s{}, e{}, q{};
  for (int64_t r = begin; r < end; ++r) {
    const float *gate = x + 2 * r * width, *up = gate + width, *upstream = g + r * width;
    float *d_gate = dx + 2 * r * width, *d_up = d_gate + width;
    for (int64_t j = 0; j < width; j += kLanes) {
      load(a, gate + j, width - j, 0.0F);
      load(b, up + j, width - j, 0.0F);
      load(grad, upstream + j, width - j, 0.0F);
      sigmoid(a, s, e, q);
      store(d_gate + j, grad * b * (s + a * e * q * q), width - j);
      store(d_up + j, grad * a * s, width - j);
    }
  }
}

// Calls body(begin, end) over the rows of x [..., 2I] in parallel tasks, with I.
template <typename Body>
void over_rows(const at::Tensor& x, const Body& body) {
  const int64_t width = x.size(-1) / 2, rows = width == 0 ? 0 : x.numel() / (2 * width);
  at::parallel_for(0, rows, rows_per_task(width),
                   [&](int64_t begin, int64_t end) { body(width, begin, end); });
}

struct SwiGLU : torch::autograd::Function<SwiGLU> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    auto shape = x.sizes().vec();
    shape.back() /= 2;
    at::Tensor y = at::empty(shape, x.options());
    const float* in = x.data_ptr<float>();
    float* out = y.data_ptr<float>();
    over_rows(x, [&](int64_t width, int64_t begin, int64_t end) { swiglu_rows(in, out, width, begin, end); });
    ctx->save_for_backward({x});
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const at::Tensor g = grad_outputs.at(0).to(at::kFloat).contiguous();
    at::Tensor dx = at::empty_like(x);
    const float *in = x.data_ptr<float>(), *upstream = g.data_ptr<float>();
    float* out = dx.data_ptr<float>();
    over_rows(x, [&](int64_t width, int64_t begin, int64_t end) {
      swiglu_gradient_rows(in, upstream, out, width, begin, end);
    });
    return {dx};
  }
};

}  // namespace

at::Tensor swiglu(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0, "swiglu: the last dimension (", gate_up.size(-1),
              ") must hold gate and up, even");
  if (flat_float32_cpu(gate_up)) return SwiGLU::apply(gate_up);
  const auto halves = gate_up.chunk(2, -1);
  return at::silu(halves[0]) * halves[1];
}

}  // namespace dpo
