// Tiled attention on CPUs (model/tiled_attention.cpp): output and the gradients of q, k and v
// against float64 attention written out with repeat_kv and TokenLayout's mask, in float32 and
// bfloat16 products, on rows whose segments end inside and across query tiles (prompts, chosen and
// rejected branches, packed documents, padding); the scores it computes (masked tiles skipped);
// and which attention causal_attention takes.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "catch2_api.h"

#include "dpo/model/layers.h"
#include "dpo/model/tiled_attention.h"

namespace {

double relative_error(const at::Tensor& x, const at::Tensor& y) {
  const double scale = y.abs().max().item<double>();
  return (x.to(at::kDouble) - y).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

at::Tensor in_double(const at::Tensor& t, at::ScalarType dtype) { return t.detach().to(dtype).to(at::kDouble); }

// Float64 attention as transformers' eager attention with repeat_kv: q [B, H, T, D], k, v
// [B, KV, T, D], allowed [B, T, T] (true where a token may look).
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& allowed) {
  const int64_t H = q.size(1), rep = H / k.size(1);
  const at::Tensor kr = k.repeat_interleave(rep, 1), vr = v.repeat_interleave(rep, 1);
  const at::Tensor scores = at::matmul(q, kr.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(3)));
  const at::Tensor masked = scores.masked_fill(allowed.unsqueeze(1).logical_not(), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(masked, -1), vr);
}

// Runs of (document, branch, length) laid side by side into one row of a TokenLayout; positions
// restart after the prompt as prefix sharing lays them out (they do not change attention).
dpo::TokenLayout layout_of(const std::vector<std::vector<std::array<int64_t, 3>>>& rows) {
  std::vector<int64_t> documents, branches, positions;
  int64_t T = 0;
  for (const auto& row : rows) {
    int64_t length = 0;
    for (const auto& [document, branch, count] : row) {
      for (int64_t i = 0; i < count; ++i) {
        documents.push_back(document);
        branches.push_back(branch);
        positions.push_back(i);
      }
      length += count;
    }
    T = length;
  }
  const auto B = static_cast<int64_t>(rows.size());
  dpo::TokenLayout layout;
  layout.documents = at::tensor(documents).view({B, T});
  layout.branches = at::tensor(branches).view({B, T});
  layout.positions = at::tensor(positions).view({B, T});
  return layout;
}

}  // namespace

TEST_CASE("tiled attention: output and gradients equal float64 attention under causal and layout masks", "[precision]") {
  at::manual_seed(5);
  const int64_t B = 2, H = 4, KV = 2, T = 150, D = 8;
  // Row 0: a 70-token prompt (two query tiles), chosen 40, rejected 30, then 10 slots of padding.
  // Row 1: two pairs packed, of 20 + 15 + 25 and 30 + 30 + 30 tokens.
  const dpo::TokenLayout layout = layout_of({{{0, 0, 70}, {0, 1, 40}, {0, 2, 30}, {-1, 0, 10}},
                                             {{0, 0, 20}, {0, 1, 15}, {0, 2, 25}, {1, 0, 30}, {1, 1, 30}, {1, 2, 30}}});
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    if (!dpo::takes_tiled_attention(dtype, at::kCPU)) {
      WARN("no oneDNN GEMM for " << dtype << " products here: tiled attention not tested in it");
      continue;
    }
    for (const bool with_layout : {false, true}) {
      INFO(dtype << (with_layout ? ", layout mask" : ", causal mask"));
      const at::Tensor allowed =
          with_layout ? dpo::attention_allowed(layout) : at::ones({T, T}, at::kBool).tril().expand({B, T, T});
      const at::Tensor q = at::randn({B, H, T, D}).requires_grad_(true);
      // k and v as the projections leave them: heads-first views of [B, T, KV, D].
      const at::Tensor k = at::randn({B, T, KV, D}).transpose(1, 2).requires_grad_(true);
      const at::Tensor v = at::randn({B, T, KV, D}).transpose(1, 2).requires_grad_(true);
      const at::Tensor y = dpo::tiled_attention(q, k, v, dtype, with_layout ? layout : dpo::TokenLayout{});
      REQUIRE(y.sizes() == q.sizes());
      CHECK(y.scalar_type() == at::kFloat);

      const at::Tensor q64 = in_double(q, dtype).requires_grad_(true), k64 = in_double(k, dtype).requires_grad_(true),
                       v64 = in_double(v, dtype).requires_grad_(true);
      const at::Tensor want = reference_attention(q64, k64, v64, allowed);
      // bfloat16: the probabilities and the scores' gradient are rounded for their products (2^-9
      // relative each). A wrong scale, head, span or mask is off by far more.
      const double tolerance = dtype == at::kFloat ? 1e-5 : 1e-2;
      CHECK(relative_error(y, want) < tolerance);
      const at::Tensor grad_y = at::randn({B, H, T, D});
      y.backward(grad_y);
      want.backward(in_double(grad_y, dtype));
      for (const auto& [got, input64] : {std::pair{q, q64}, std::pair{k, k64}, std::pair{v, v64}}) {
        CHECK(got.grad().scalar_type() == at::kFloat);
        CHECK(relative_error(got.grad(), input64.grad()) < 2 * tolerance);
      }
      // Without gradients (reference log-probs, evaluation) no probabilities are kept: same output.
      const at::NoGradGuard no_grad;
      CHECK(at::equal(dpo::tiled_attention(q, k, v, dtype, with_layout ? layout : dpo::TokenLayout{}), y));
    }
  }
}

TEST_CASE("tiled attention: bfloat16 inputs get a bfloat16 output and gradients", "[precision]") {
  if (!dpo::takes_tiled_attention(at::kBFloat16, at::kCPU)) return;
  at::manual_seed(7);
  const at::Tensor q = at::randn({1, 2, 9, 4}).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor k = at::randn({1, 9, 1, 4}).to(at::kBFloat16).transpose(1, 2).requires_grad_(true);
  const at::Tensor v = at::randn({1, 9, 1, 4}).to(at::kBFloat16).transpose(1, 2).requires_grad_(true);
  const at::Tensor y = dpo::tiled_attention(q, k, v, at::kBFloat16, {});
  CHECK(y.scalar_type() == at::kBFloat16);
  const at::Tensor allowed = at::ones({1, 9, 9}, at::kBool).tril();
  CHECK(relative_error(y, reference_attention(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), allowed)) < 1e-2);
  y.sum().backward();
  for (const at::Tensor& input : {q, k, v}) CHECK(input.grad().scalar_type() == at::kBFloat16);
}

TEST_CASE("tiled attention reads q, k and v where the projection wrote them and writes [B, T, H, D]", "[precision]") {
  at::manual_seed(11);
  const int64_t B = 2, H = 4, KV = 2, T = 70, D = 8;
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    if (!dpo::takes_tiled_attention(dtype, at::kCPU)) continue;
    INFO(dtype);
    // As a fused projection leaves them: one [B, T, (H + 2 KV) D] tensor, each part viewed heads-first.
    const at::Tensor qkv = at::randn({B, T, (H + 2 * KV) * D}).requires_grad_(true);
    const auto parts = qkv.split_with_sizes({H * D, KV * D, KV * D}, -1);
    const auto heads_first = [&](const at::Tensor& t, int64_t n) { return t.view({B, T, n, D}).transpose(1, 2); };
    const at::Tensor y = dpo::tiled_attention(heads_first(parts[0], H), heads_first(parts[1], KV),
                                              heads_first(parts[2], KV), dtype, {});
    // The output is [B, T, H, D] in memory: the projection after it reads [B, T, H D] as it is.
    CHECK(y.transpose(1, 2).is_contiguous());
    const at::Tensor grad_y = at::randn({B, H, T, D});
    y.backward(grad_y);
    // The same values as contiguous head-major copies.
    std::vector<at::Tensor> copies;
    for (const auto& [part, n] : {std::pair{parts[0], H}, std::pair{parts[1], KV}, std::pair{parts[2], KV}})
      copies.push_back(heads_first(part, n).detach().contiguous().requires_grad_(true));
    const at::Tensor want = dpo::tiled_attention(copies[0], copies[1], copies[2], dtype, {});
    want.backward(grad_y);
    CHECK(relative_error(y, want.to(at::kDouble)) < 1e-6);
    const auto grads = qkv.grad().split_with_sizes({H * D, KV * D, KV * D}, -1);
    for (size_t i = 0; i < copies.size(); ++i) {
      const at::Tensor expected = copies[i].grad().transpose(1, 2).reshape(grads[i].sizes());
      CHECK(relative_error(grads[i], expected.to(at::kDouble)) < 1e-6);
    }
  }
}

TEST_CASE("tiled attention computes only the scores a layout lets be seen", "[precision]") {
  // Plain causal rows of 128: query tiles of 64 read 64 and 128 keys.
  CHECK(dpo::tiled_attention_scores({}, 3, 128) == 3 * (64 * 64 + 64 * 128));
  // Prompt, chosen and rejected of 64 each: the prompt reads itself, chosen reads prompt + chosen,
  // rejected reads prompt + rejected (never chosen): 20480 of the 36864 scores of whole rows.
  CHECK(dpo::tiled_attention_scores(layout_of({{{0, 0, 64}, {0, 1, 64}, {0, 2, 64}}}), 1, 192) ==
        64 * 64 + 64 * 128 + 64 * 128);
  // Two documents packed: the second never reads the first.
  CHECK(dpo::tiled_attention_scores(layout_of({{{0, 0, 10}, {1, 0, 20}}}), 1, 30) == 10 * 10 + 20 * 20);
}

TEST_CASE("causal_attention takes tiled attention where the CPU's GEMMs are loaded", "[precision]") {
  at::manual_seed(6);
  const at::Tensor q = at::randn({1, 2, 5, 4}), k = at::randn({1, 1, 5, 4}), v = at::randn({1, 1, 5, 4});
  const at::Tensor allowed = at::ones({1, 5, 5}, at::kBool).tril();
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    INFO(dtype);
    const at::Tensor y = dpo::causal_attention(q, k, v, dtype);
    CHECK(relative_error(y, reference_attention(in_double(q, dtype), in_double(k, dtype), in_double(v, dtype), allowed)) <
          (dtype == at::kFloat ? 1e-5 : 1e-2));
    // Float32 output where tiled attention runs (q is float32), the products' dtype elsewhere.
    CHECK(y.scalar_type() == (dpo::takes_tiled_attention(dtype, at::kCPU) ? at::kFloat : dtype));
    if (dpo::takes_tiled_attention(dtype, at::kCPU)) CHECK(at::equal(y, dpo::tiled_attention(q, k, v, dtype, {})));
  }
}
