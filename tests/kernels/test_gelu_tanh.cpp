// kernels/gelu_tanh against libtorch's own GELU (tanh approximation) in float64: values and the
// autograd gradient, over the range that matters and at the edges (tails, huge values, NaN).
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <limits>

#include "catch2_api.h"

#include "dpo/kernels/gelu_tanh.h"

namespace {

// Ours in float32 and libtorch's in float64: values, gradients for upstream g, and the float64
// derivative itself (for the tolerances).
struct Pair {
  at::Tensor y, dx, want_y, want_dx, slope;
};

Pair run(const at::Tensor& x, const at::Tensor& g) {
  Pair p;
  const at::Tensor x32 = x.detach().clone().requires_grad_(true);
  p.y = dpo::gelu_tanh(x32);
  p.y.backward(g);
  p.dx = x32.grad().to(at::kDouble);
  p.y = p.y.detach().to(at::kDouble);
  const at::Tensor x64 = x.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor y64 = at::gelu(x64, "tanh");
  p.slope = torch::autograd::grad({y64}, {x64}, {at::ones_like(y64)}, /*retain_graph=*/true)[0];
  p.want_dx = p.slope * g.to(at::kDouble);
  p.want_y = y64.detach();
  return p;
}

// Float32 rounding as the conditioning allows: a value may be off by 1e-6 of |y| plus 1e-6 of
// |x y'| (rounding x's polynomial moves e^-|2u| by that relative amount in the negative tail, for
// libtorch's float32 GELU as for this one); a gradient by 1e-6 of |g| (1 + |y'|), because around
// GELU's minimum (x ~ -0.75) its two terms, each ~0.2, cancel. The absolute 1e-12 on values:
// libtorch's float64 0.5 x (1 + tanh(u)) is exactly 0 once tanh(u) rounds to -1 (x below ~-7),
// where the true value is still ~1e-16.
bool values_close(const Pair& p, const at::Tensor& x) {
  const at::Tensor x64 = x.to(at::kDouble);
  return ((p.y - p.want_y).abs() <= (p.want_y.abs() + (x64 * p.slope).abs()) * 1e-6 + 1e-12).all().item<bool>();
}
bool gradients_close(const Pair& p, const at::Tensor& g) {
  return ((p.dx - p.want_dx).abs() <= g.to(at::kDouble).abs() * (p.slope.abs() + 1) * 1e-6).all().item<bool>();
}

}  // namespace

TEST_CASE("gelu_tanh equals libtorch's float64 GELU and its gradient over [-12, 12]", "[kernels]") {
  // 200003 elements: several threads' tasks and a partial last vector.
  const at::Tensor x = at::linspace(-12.0, 12.0, 200003);
  at::manual_seed(3);
  const at::Tensor g = at::randn({x.numel()});
  const Pair p = run(x, g);
  CHECK(values_close(p, x));
  CHECK(gradients_close(p, g));
}

TEST_CASE("gelu_tanh at the scale of activations, in tails shorter than a vector", "[kernels]") {
  at::manual_seed(5);
  for (const int64_t n : {1, 15, 17, 33}) {
    INFO("n " << n);
    const at::Tensor x = at::randn({n}) * 3.0;
    const at::Tensor g = at::randn({n});
    const Pair p = run(x, g);
    CHECK(values_close(p, x));
    CHECK(gradients_close(p, g));
  }
}

TEST_CASE("gelu_tanh keeps huge inputs finite and NaN in place", "[kernels]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor x = at::tensor({1e30F, -1e30F, 50.0F, -50.0F, nan, 0.0F, -0.0F});
  const at::Tensor y = dpo::gelu_tanh(x);
  CHECK(y[0].item<float>() == 1e30F);
  CHECK(std::abs(y[1].item<float>()) < 1e-6F);  // libtorch's: 0 (or NaN, from -inf * 0)
  CHECK(y[2].item<float>() == 50.0F);
  CHECK(std::abs(y[3].item<float>()) < 1e-30F);
  CHECK(std::isnan(y[4].item<float>()));
  CHECK(y[5].item<float>() == 0.0F);
  const at::Tensor xg = x.clone().requires_grad_(true);
  dpo::gelu_tanh(xg).sum().backward();
  const at::Tensor dx = xg.grad();
  CHECK(dx[0].item<float>() == 1.0F);
  CHECK(std::abs(dx[1].item<float>()) < 1e-6F);
  CHECK(dx[2].item<float>() == 1.0F);
  CHECK(std::abs(dx[3].item<float>()) < 1e-30F);
  CHECK(std::isnan(dx[4].item<float>()));
  CHECK(dx[5].item<float>() == 0.5F);
}

TEST_CASE("gelu_tanh on layouts the lanes do not take goes through libtorch", "[kernels]") {
  at::manual_seed(7);
  const at::Tensor x = at::randn({64, 48});
  const at::Tensor strided = x.t();  // not contiguous
  CHECK(at::allclose(dpo::gelu_tanh(strided), at::gelu(strided, "tanh")));
  const at::Tensor x64 = x.to(at::kDouble);
  CHECK(at::equal(dpo::gelu_tanh(x64), at::gelu(x64, "tanh")));
}
