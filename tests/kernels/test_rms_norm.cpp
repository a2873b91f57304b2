// kernels/rms_norm against libtorch's float64 RMSNorm (transformers' formula): values and the
// autograd gradients of x and the weight, over row widths with vector tails, many rows (several
// blocks of the weight's gradient, several threads), scales where eps dominates or squares are
// large, and libtorch's own operations where the lanes do not apply.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include "catch2_api.h"

#include "dpo/kernels/rms_norm.h"

namespace {

at::Tensor reference(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * (x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps));
}

// Ours on float32 x and w, libtorch's on the same values in float64, within float32 rounding as
// the conditioning allows. With r = rsqrt(mean(x^2) + eps): y = w x r moves by ~1e-6 |w x r|;
// dx = r g w - x r^3 sum(g w x) / n, whose terms may cancel, by 1e-6 of the sum of their sizes;
// dw = sum over rows of g x r, by 1e-5 of the sum of |g x r| (float32 sums over rows).
void check_against_float64(const at::Tensor& x, const at::Tensor& w, const at::Tensor& g, double eps) {
  const at::Tensor x32 = x.to(at::kFloat).requires_grad_(true), w32 = w.to(at::kFloat).requires_grad_(true);
  const at::Tensor y = dpo::rms_norm(x32, w32, eps);
  y.backward(g.to(at::kFloat));
  const at::Tensor x64 = x32.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor w64 = w32.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor g64 = g.to(at::kFloat).to(at::kDouble);
  const at::Tensor want = reference(x64, w64, eps);
  want.backward(g64);
  const int64_t n = x.size(-1);
  const at::Tensor xd = x64.detach(), wd = w64.detach();
  const at::Tensor r = at::rsqrt(xd.pow(2).mean(-1, true) + eps);
  CHECK(y.sizes() == want.sizes());
  CHECK(y.scalar_type() == at::kFloat);
  CHECK(((y.detach().to(at::kDouble) - want.detach()).abs() <= (wd * xd * r).abs() * 1e-6 + 1e-30).all().item<bool>());
  const at::Tensor dx_size = r * (g64 * wd).abs() + xd.abs() * r.pow(3) * (g64 * wd * xd).abs().sum(-1, true) / n;
  CHECK(((x32.grad().to(at::kDouble) - x64.grad()).abs() <= dx_size * 1e-6 + 1e-30).all().item<bool>());
  const at::Tensor dw_size = (g64 * xd * r).abs().reshape({-1, n}).sum(0);
  CHECK(((w32.grad().to(at::kDouble) - w64.grad()).abs() <= dw_size * 1e-5 + 1e-30).all().item<bool>());
}

}  // namespace

TEST_CASE("rms_norm equals libtorch's float64 RMSNorm and its gradients", "[kernels]") {
  at::manual_seed(11);
  SECTION("rows of 768: many blocks of the weight's gradient and several threads' tasks") {
    const at::Tensor x = at::randn({300, 768}, at::kDouble) * 2.0;
    check_against_float64(x, at::randn({768}, at::kDouble), at::randn({300, 768}, at::kDouble), 1e-6);
  }
  SECTION("batched [B, T, n], rows shorter than a vector and with a tail") {
    for (const int64_t n : {1, 15, 16, 17, 33}) {
      INFO("n " << n);
      check_against_float64(at::randn({2, 3, n}, at::kDouble), at::randn({n}, at::kDouble),
                            at::randn({2, 3, n}, at::kDouble), 1e-5);
    }
  }
  SECTION("rows where eps dominates, large values, and a zero row") {
    at::Tensor x = at::randn({4, 64}, at::kDouble);
    x[0].mul_(1e-5);
    x[1].mul_(1e15);
    x[2].zero_();
    check_against_float64(x, at::randn({64}, at::kDouble), at::randn({4, 64}, at::kDouble), 1e-6);
  }
}

TEST_CASE("rms_norm's weight gradient does not depend on the number of threads", "[kernels]") {
  at::manual_seed(12);
  const at::Tensor x = at::randn({1000, 256}), w = at::randn({256}), g = at::randn({1000, 256});
  const int threads = at::get_num_threads();
  const auto weight_grad = [&](int count) {
    at::set_num_threads(count);
    const at::Tensor wr = w.clone().requires_grad_(true);
    dpo::rms_norm(x, wr, 1e-6).backward(g);
    return wr.grad();
  };
  const at::Tensor one = weight_grad(1), two = weight_grad(2);
  at::set_num_threads(threads);
  CHECK(at::equal(one, two));
}

TEST_CASE("rms_norm without the weight's gradient, off the lanes, and with a mismatched weight", "[kernels]") {
  at::manual_seed(13);
  const at::Tensor x = at::randn({5, 24}).requires_grad_(true), w = at::randn({24});
  dpo::rms_norm(x, w, 1e-6).sum().backward();
  const at::Tensor x64 = x.detach().to(at::kDouble).requires_grad_(true);
  reference(x64, w.to(at::kDouble), 1e-6).sum().backward();
  CHECK(at::allclose(x.grad().to(at::kDouble), x64.grad(), 1e-5, 1e-6));
  SECTION("bfloat16 x: transformers' formula, normalised in float32 and cast back before the weight") {
    const at::Tensor xb = at::randn({3, 40}).to(at::kBFloat16), wb = at::randn({40}).to(at::kBFloat16);
    const at::Tensor x32 = xb.to(at::kFloat);
    const at::Tensor want = wb * (x32 * at::rsqrt(x32.pow(2).mean(-1, true) + 1e-6)).to(at::kBFloat16);
    const at::Tensor got = dpo::rms_norm(xb, wb, 1e-6);
    CHECK(got.scalar_type() == at::kBFloat16);
    CHECK(at::equal(got, want));
  }
  SECTION("strided x: libtorch's operations, same values") {
    const at::Tensor wide = at::randn({6, 48});
    const at::Tensor strided = wide.narrow(1, 0, 24);
    CHECK(at::allclose(dpo::rms_norm(strided, w, 1e-6), dpo::rms_norm(strided.contiguous(), w, 1e-6), 1e-6, 1e-6));
  }
  CHECK_THROWS_WITH(dpo::rms_norm(x, at::randn({23}), 1e-6), Catch::Contains("rms_norm: weight"));
}
