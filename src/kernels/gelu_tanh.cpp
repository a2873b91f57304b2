#include "dpo/kernels/gelu_tanh.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "dpo/kernels/float_lanes.h"

namespace dpo {
namespace {
using namespace lanes;

constexpr float kSqrt2OverPi = 0.7978845608028654F;
constexpr float kCubic = 0.044715F;
// Past |x| = 10, GELU is x or 0 in float32; the clamp keeps x^3 (in u and its derivative) finite
// for huge x, where inf times a vanishing e^-|2u| would give NaN.
constexpr float kClamp = 10.0F;

// For 16 lanes of x: s = sigmoid(2u) and, where `gradient` is given, s + 2 x s (1 - s) u' (the
// derivative of x s), with s (1 - s) = e q^2 from lanes::sigmoid.
__attribute__((always_inline)) inline void gelu_lanes(const Floats& x, Floats& y, Floats* gradient) {
  const Floats low = Floats{} - kClamp, high = Floats{} + kClamp;
  Floats c = x < low ? low : x;  // a NaN passes both comparisons and stays
  c = c > high ? high : c;
  const Floats z = 2.0F * kSqrt2OverPi * (c + kCubic * c * c * c);
  Floats s, e, q;
  sigmoid(z, s, e, q);
  y = x * s;
  if (gradient != nullptr) *gradient = s + 2.0F * c * e * q * q * (kSqrt2OverPi * (1.0F + 3.0F * kCubic * c * c));
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void gelu_values(const float* x, float* y, int64_t begin,
                                                                                int64_t end) {
  Floats v{}, out{};
  for (int64_t i = begin; i < end; i += kLanes) {
    load(v, x + i, end - i, 0.0F);
    gelu_lanes(v, out, nullptr);
    store(y + i, out, end - i);
  }
}

// dx = g * gelu'(x).
__attribute__((target_clones("avx512f", "avx2", "default"))) void gelu_gradient(const float* x, const float* g,
                                                                                  float* dx, int64_t begin,
                                                                                  int64_t end) {
  Floats v{}, grad{}, out{}, slope{};
  for (int64_t i = begin; i < end; i += kLanes) {
    load(v, x + i, end - i, 0.0F);
    load(grad, g + i, end - i, 0.0F);
    gelu_lanes(v, out, &slope);
    out = grad * slope;
    store(dx + i, out, end - i);
  }
}

// Tasks start on a multiple of the lane count, so that only the last one has a partial vector.
template <typename Body>
void over_elements(int64_t n, const Body& body) {
  at::parallel_for(0, (n + kLanes - 1) / kLanes, kTaskElements / kLanes, [&](int64_t begin, int64_t end) {
    body(begin * kLanes, std::min(n, end * kLanes));
  });
}

struct GeluTanh : torch::autograd::Function<GeluTanh> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    at::Tensor y = at::empty_like(x);
    const float* in = x.data_ptr<float>();
    float* out = y.data_ptr<float>();
    over_elements(x.numel(), [&](int64_t begin, int64_t end) { gelu_values(in, out, begin, end); });
    ctx->save_for_backward({x});
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const at::Tensor g = grad_outputs.at(0).to(at::kFloat).contiguous();
    at::Tensor dx = at::empty_like(x);
    const float *in = x.data_ptr<float>(), *grad = g.data_ptr<float>();
    float* out = dx.data_ptr<float>();
    over_elements(x.numel(), [&](int64_t begin, int64_t end) { gelu_gradient(in, grad, out, begin, end); });
    return {dx};
  }
};

}  // namespace

at::Tensor gelu_tanh(const at::Tensor& x) {
  if (flat_float32_cpu(x)) return GeluTanh::apply(x);
  return at::gelu(x, "tanh");
}

}  // namespace dpo
