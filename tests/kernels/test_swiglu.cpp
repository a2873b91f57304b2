// kernels/swiglu against libtorch's silu(gate) * up in float64: values and the autograd gradient
// of the stacked input, over the range that matters and at the edges (row tails, huge gates, NaN),
// and libtorch's own operations where the lanes do not apply.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <limits>

#include "catch2_api.h"

#include "dpo/kernels/swiglu.h"

namespace {

at::Tensor reference(const at::Tensor& x) {
  const auto halves = x.chunk(2, -1);
  return at::silu(halves[0]) * halves[1];
}

// Ours on float32 x and libtorch's on float64 x: values and gradients for upstream g, within float32
// rounding as the conditioning allows. y = a s(a) b: a relative error of ~1e-6 in s moves y by
// 1e-6 |a b|; d up = g a s by 1e-6 |g a|; d gate = g b (s + a s (1 - s)), whose two terms cancel
// near a ~ -1.28, by 1e-6 |g b| (1 + |a|).
void check_against_float64(const at::Tensor& x, const at::Tensor& g) {
  const at::Tensor x32 = x.to(at::kFloat).requires_grad_(true);
  const at::Tensor y = dpo::swiglu(x32);
  y.backward(g.to(at::kFloat));
  const at::Tensor x64 = x.to(at::kDouble).clone().requires_grad_(true);
  const at::Tensor want = reference(x64);
  want.backward(g.to(at::kDouble));
  const auto width = x.size(-1) / 2;
  const at::Tensor a = x64.detach().narrow(-1, 0, width), b = x64.detach().narrow(-1, width, width);
  const at::Tensor g64 = g.to(at::kDouble);
  CHECK(y.sizes() == want.sizes());
  CHECK(((y.detach().to(at::kDouble) - want.detach()).abs() <= (a * b).abs() * 1e-6 + 1e-30).all().item<bool>());
  const at::Tensor dx = x32.grad().to(at::kDouble), want_dx = x64.grad();
  const at::Tensor d_gate = dx.narrow(-1, 0, width), d_up = dx.narrow(-1, width, width);
  CHECK(((d_gate - want_dx.narrow(-1, 0, width)).abs() <= (g64 * b).abs() * (a.abs() + 1) * 1e-6 + 1e-30)
            .all()
            .item<bool>());
  CHECK(((d_up - want_dx.narrow(-1, width, width)).abs() <= (g64 * a).abs() * 1e-6 + 1e-30).all().item<bool>());
}

}  // namespace

TEST_CASE("swiglu equals libtorch's float64 silu(gate) * up and its gradient", "[kernels]") {
  at::manual_seed(7);
  SECTION("gates over [-20, 20] in rows of 768, several threads' tasks") {
    const at::Tensor gate = at::linspace(-20.0, 20.0, 96 * 768, at::kDouble).reshape({96, 768});
    const at::Tensor x = at::cat({gate, at::randn({96, 768}, at::kDouble)}, -1);
    check_against_float64(x, at::randn({96, 768}, at::kDouble));
  }
  SECTION("activations' scale, batched [B, T, 2I], rows shorter than a vector and with a tail") {
    for (const int64_t width : {1, 15, 16, 17, 33}) {
      INFO("I " << width);
      const at::Tensor x = at::randn({2, 3, 2 * width}, at::kDouble) * 3.0;
      check_against_float64(x, at::randn({2, 3, width}, at::kDouble));
    }
  }
}

TEST_CASE("swiglu keeps huge gates finite and NaN in place", "[kernels]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor x = at::tensor({1e30F, -1e30F, 100.0F, -100.0F, nan, 2.0F, 2.0F, 2.0F, 2.0F, 2.0F});
  const at::Tensor y = dpo::swiglu(x.reshape({1, 10}));
  CHECK(y[0][0].item<float>() == 2e30F);
  CHECK(std::abs(y[0][1].item<float>()) < 1e-6F);
  CHECK(y[0][2].item<float>() == 200.0F);
  CHECK(std::abs(y[0][3].item<float>()) < 1e-30F);
  CHECK(std::isnan(y[0][4].item<float>()));
}

TEST_CASE("swiglu takes libtorch's operations for strided and float64 inputs, and refuses an odd width",
          "[kernels]") {
  at::manual_seed(8);
  const at::Tensor x = at::randn({4, 12});
  const at::Tensor strided = x.t().contiguous().t();
  CHECK(!strided.is_contiguous());
  CHECK(at::allclose(dpo::swiglu(strided), reference(x), 1e-6, 1e-6));
  CHECK(at::equal(dpo::swiglu(x.to(at::kDouble)), reference(x.to(at::kDouble))));
  CHECK_THROWS_WITH(dpo::swiglu(at::randn({2, 5})), Catch::Contains("even"));
}
