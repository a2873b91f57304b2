// Mixed precision's attention on CPUs (model/attention_in_float32.cpp): output and the gradients
// of q, k and v against float64 attention of the same bfloat16-rounded inputs, with grouped
// key/value heads, under the causal mask and under a layout's mask; and which attention takes it
// (any float32 q under a bfloat16 product dtype, also Llama's pure bfloat16, whose rotary
// positions run in float32).
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>
#include <limits>

#include "catch2_api.h"

#include "dpo/kernels/float_matmul.h"
#include "dpo/model/layers.h"

namespace {

double relative_error(const at::Tensor& x, const at::Tensor& y) {
  const double scale = y.abs().max().item<double>();
  return (x.to(at::kDouble) - y).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

at::Tensor rounded(const at::Tensor& t) { return t.detach().to(at::kBFloat16).to(at::kDouble); }

// Float64 attention, written out head by head as transformers' eager attention with repeat_kv:
// q [B, H, T, D], k, v [B, KV, T, D], allowed [B, T, T] (true where a token may look).
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& allowed) {
  const int64_t H = q.size(1), rep = H / k.size(1);
  const at::Tensor kr = k.repeat_interleave(rep, 1), vr = v.repeat_interleave(rep, 1);
  const at::Tensor scores = at::matmul(q, kr.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(3)));
  const at::Tensor masked = scores.masked_fill(allowed.unsqueeze(1).logical_not(), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(masked, -1), vr);
}

}  // namespace

TEST_CASE("attention_in_float32: output and gradients equal float64 attention of the bfloat16 inputs", "[precision]") {
  at::manual_seed(5);
  const int64_t B = 2, H = 4, KV = 2, T = 7, D = 8, rep = H / KV;
  const at::Tensor causal = at::ones({T, T}, at::kBool).tril().expand({B, T, T});
  // A layout's mask: row 0 causal, row 1 two sequences packed side by side (block-diagonal).
  at::Tensor packed = causal.clone();
  packed[1].slice(0, 4).slice(1, 0, 4).fill_(false);
  for (const bool with_layout : {false, true}) {
    INFO((with_layout ? "layout mask" : "causal mask"));
    const at::Tensor allowed = with_layout ? packed : causal;
    const at::Tensor q = at::randn({B, H, T, D}).requires_grad_(true);
    // k and v as the projections leave them: heads-first views of [B, T, KV, D].
    const at::Tensor k = at::randn({B, T, KV, D}).transpose(1, 2).requires_grad_(true);
    const at::Tensor v = at::randn({B, T, KV, D}).transpose(1, 2).requires_grad_(true);
    const at::Tensor bias = at::zeros({B, T, T}).masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    const at::Tensor grouped_bias = bias.view({B, 1, 1, T, T}).expand({B, KV, rep, T, T}).reshape({B * KV, rep * T, T});
    const at::Tensor y = dpo::attention_in_float32(q, k, v, grouped_bias);
    REQUIRE(y.sizes() == q.sizes());
    CHECK(y.scalar_type() == at::kFloat);

    const at::Tensor q64 = rounded(q).requires_grad_(true), k64 = rounded(k).requires_grad_(true),
                     v64 = rounded(v).requires_grad_(true);
    const at::Tensor want = reference_attention(q64, k64, v64, allowed);
    // The probabilities and the scores' gradient are rounded to bfloat16 for their products
    // (2^-9 relative each); a wrong scale, head or transpose is off by far more.
    CHECK(relative_error(y, want) < 1e-2);
    const at::Tensor grad_y = at::randn({B, H, T, D});
    y.backward(grad_y);
    want.backward(rounded(grad_y));
    for (const auto& [got, input64] : {std::pair{q, q64}, std::pair{k, k64}, std::pair{v, v64}}) {
      CHECK(got.grad().scalar_type() == at::kFloat);
      CHECK(relative_error(got.grad(), input64.grad()) < 2e-2);
    }
  }
}

TEST_CASE("causal_attention takes attention_in_float32 under mixed precision where oneDNN offers it", "[precision]") {
  at::manual_seed(6);
  const at::Tensor q = at::randn({1, 2, 5, 4}), k = at::randn({1, 1, 5, 4}), v = at::randn({1, 1, 5, 4});
  const at::Tensor y = dpo::causal_attention(q, k, v, at::kBFloat16);
  const at::Tensor want = reference_attention(rounded(q), rounded(k), rounded(v), at::ones({1, 5, 5}, at::kBool).tril());
  CHECK(relative_error(y, want) < 1e-2);
#if TORCH_VERSION_MAJOR < 2
  // Float32 output where the node runs, bfloat16 (libtorch's products) elsewhere.
  CHECK(y.scalar_type() == (dpo::bfloat16_products_in_float32() ? at::kFloat : at::kBFloat16));
#endif
  // Llama's pure bfloat16 weights: rotary positions leave q and k in float32 and v a bfloat16
  // heads-first view; v's gradient comes back in bfloat16.
  const at::Tensor vb = at::randn({1, 5, 1, 4}).to(at::kBFloat16).transpose(1, 2).requires_grad_(true);
  const at::Tensor mixed = dpo::causal_attention(q, k, vb, at::kBFloat16);
  CHECK(relative_error(mixed, reference_attention(rounded(q), rounded(k), rounded(vb), at::ones({1, 5, 5}, at::kBool).tril())) <
        1e-2);
  mixed.sum().backward();
  CHECK(vb.grad().scalar_type() == at::kBFloat16);
  // Pure bfloat16 q (GPT-2's pure bfloat16 weights): libtorch's products, a bfloat16 output.
  CHECK(dpo::causal_attention(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), at::kBFloat16).scalar_type() ==
        at::kBFloat16);
}
