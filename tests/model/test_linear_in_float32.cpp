// Mixed precision's linear layers on CPUs (model/linear_in_float32.cpp): forward and all three
// gradients against float64 products of the same bfloat16-rounded operands, for nn.Linear's and
// Conv1D's weight layouts, with and without a bias; and the layers that take it.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "catch2_api.h"

#include "dpo/kernels/float_matmul.h"
#include "dpo/model/layers.h"

namespace {

double relative_error(const at::Tensor& x, const at::Tensor& y) {
  const double scale = y.abs().max().item<double>();
  return (x.to(at::kDouble) - y).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

// The value in bfloat16, then float64 (the operands the products see).
at::Tensor rounded(const at::Tensor& t) { return t.detach().to(at::kBFloat16).to(at::kDouble); }

}  // namespace

TEST_CASE("linear_in_float32: float32 output and gradients equal float64 products of the bfloat16 operands",
          "[precision]") {
  const bool loaded = dpo::bfloat16_products_in_float32();
  INFO("oneDNN's bfloat16 GEMM loaded: " << loaded);
  at::manual_seed(3);
  const int64_t K = 24, N = 10;
  // Float32 results of exact bfloat16 products: K * 2^-24 at most. Without oneDNN's GEMM
  // (DPO_BF16_MATMUL=libtorch, as on CUDA) libtorch's bfloat16 product rounds its results to
  // bfloat16; libtorch 1.13's CPU kernel was off by up to 1.4e-2 of the largest value here.
  const double tol = loaded ? 1e-5 : 5e-2;
  for (const bool in_out : {false, true}) {
    for (const bool with_bias : {false, true}) {
      INFO((in_out ? "Conv1D [K, N]" : "nn.Linear [N, K]") << (with_bias ? ", bias" : ", no bias"));
      const at::Tensor x = at::randn({2, 5, K}, at::kFloat).requires_grad_(true);
      const at::Tensor weight = (in_out ? at::randn({K, N}) : at::randn({N, K})).requires_grad_(true);
      const at::Tensor bias = with_bias ? at::randn({N}).requires_grad_(true) : at::Tensor();
      const at::Tensor y = dpo::linear_in_float32(x, weight, bias, in_out);
      REQUIRE(y.sizes() == at::IntArrayRef({2, 5, N}));
      CHECK(y.scalar_type() == at::kFloat);

      const at::Tensor x64 = rounded(x).reshape({-1, K}), w64 = in_out ? rounded(weight) : rounded(weight).t();
      at::Tensor want = at::mm(x64, w64);
      if (with_bias) want = want + bias.detach().to(at::kDouble);
      CHECK(relative_error(y.reshape({-1, N}), want) < tol);

      const at::Tensor grad_y = at::randn({2, 5, N});
      y.backward(grad_y);
      const at::Tensor g64 = rounded(grad_y).reshape({-1, N});
      CHECK(relative_error(x.grad().reshape({-1, K}), at::mm(g64, w64.t())) < tol);
      const at::Tensor grad_w64 = in_out ? at::mm(x64.t(), g64) : at::mm(g64.t(), x64);
      CHECK(weight.grad().scalar_type() == at::kFloat);
      CHECK(relative_error(weight.grad(), grad_w64) < tol);
      if (with_bias) CHECK(relative_error(bias.grad(), grad_y.to(at::kDouble).reshape({-1, N}).sum(0)) < 1e-6);
    }
  }
  // A bfloat16 input gets its gradient back in bfloat16.
  const at::Tensor xb = at::randn({3, K}).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor weight = at::randn({N, K}).requires_grad_(true);
  dpo::linear_in_float32(xb, weight, at::Tensor(), false).sum().backward();
  CHECK(xb.grad().scalar_type() == at::kBFloat16);
}

TEST_CASE("bfloat16 products on float32 CPU weights take linear_in_float32 where oneDNN offers it", "[precision]") {
  const at::Tensor weight = at::zeros({2, 2});
  CHECK(dpo::takes_linear_in_float32(at::kBFloat16, weight) == dpo::bfloat16_products_in_float32());
  CHECK_FALSE(dpo::takes_linear_in_float32(at::kFloat, weight));
  CHECK_FALSE(dpo::takes_linear_in_float32(at::kHalf, weight));
  CHECK_FALSE(dpo::takes_linear_in_float32(at::kBFloat16, weight.to(at::kBFloat16)));  // pure bfloat16 weights
}
