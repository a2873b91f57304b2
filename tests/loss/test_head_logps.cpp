// head_token_logps (the LM head and log-softmax on scored positions only, chunk by chunk, with its
// own backward) against plain autograd through the full logits, and model_sequence_logps against
// sequence_logps(model.forward(...)) on both architectures and in both precisions.
#include <cmath>
#include <map>
#include <utility>
#include <vector>
#include <string>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include "catch2_api.h"

#include "dpo/error.h"
#include "dpo/kernels/float_matmul.h"
#include "dpo/loss/head_logps.h"
#include "dpo/loss/logps.h"
#include "float_rounding.h"
#include "tiny_llama.h"

namespace {

// The plain path: full logits, log-softmax, gather; autograd differentiates it.
at::Tensor plain_logps(const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets) {
  return at::log_softmax(at::mm(h, w.t()), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
}

struct Grads {
  at::Tensor value, hidden, weight;
};

template <typename F>
Grads value_and_grads(F logps, const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& targets,
                      const at::Tensor& upstream) {
  const at::Tensor h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  const at::Tensor value = logps(h, w, targets);
  (value * upstream).sum().backward();
  return {value.detach(), h.grad(), w.grad()};
}

}  // namespace

namespace {

// head_token_logps of h, w (in their dtype) against plain autograd over the full float64 logits of
// the same values, to `tolerance` (values absolute, gradients normwise relative).
void check_head_against_float64(const at::Tensor& h, const at::Tensor& w, double tolerance) {
  const int64_t rows = h.size(0), vocab = w.size(0);
  const at::Tensor targets = at::randint(0, vocab, {rows}, at::kLong);
  const at::Tensor upstream = at::randn({rows}, h.options());
  const Grads mine = value_and_grads(
      [](const at::Tensor& a, const at::Tensor& b, const at::Tensor& t) { return dpo::head_token_logps(a, b, t, at::ScalarType::Undefined); },
      h, w, targets, upstream);
  const Grads plain = value_and_grads(plain_logps, h.to(at::kDouble), w.to(at::kDouble), targets, upstream.to(at::kDouble));
  CHECK(mine.value.scalar_type() == h.scalar_type());
  CHECK((mine.value.to(at::kDouble) - plain.value).abs().max().item<double>() < tolerance);
  CHECK(float_rounding::normwise_relative_difference(mine.hidden.to(at::kDouble), plain.hidden) < tolerance);
  CHECK(float_rounding::normwise_relative_difference(mine.weight.to(at::kDouble), plain.weight) < tolerance);
  // Without gradients the product is chunked too; the values are the same.
  at::NoGradGuard no_grad;
  CHECK(at::equal(dpo::head_token_logps(h, w, targets, at::ScalarType::Undefined), mine.value));
}

}  // namespace

TEST_CASE("head log-probs and their gradients equal plain autograd over the full logits, in float64 and float32",
          "[logps]") {
  at::manual_seed(3);
  // 400000 classes at hidden 4 (chunks of 2^22 logits): all 45 rows in five blocks of 80000 columns,
  // forward (each row's log-sum-exp joined over the blocks) and backward, so that block edges are on
  // the path.
  const at::Tensor h = at::randn({45, 4}, at::kDouble), w = at::randn({400000, 4}, at::kDouble);
  SECTION("float64") { check_head_against_float64(h, w, 1e-12); }
  // float32: on CPUs the log-softmax and its gradient are kernels/logit_rows' (float32 rounding of
  // log-probs up to ~15 in magnitude).
  SECTION("float32") { check_head_against_float64(h.to(at::kFloat), w.to(at::kFloat), 1e-5); }
}

TEST_CASE("head log-probs and gradients over more rows than one tile holds equal plain autograd", "[logps]") {
  at::manual_seed(5);
  // The head's tiles at hidden 3 hold 2^22 logits and at least 1024 vocabulary columns, so at most
  // 4096 rows: 4100 rows are two row tiles of 2050, each in two blocks of 1050 columns; the
  // weight's gradient is summed over the row tiles.
  const at::Tensor h = at::randn({4100, 3}, at::kDouble), w = at::randn({2100, 3}, at::kDouble);
  check_head_against_float64(h, w, 1e-12);
}

TEST_CASE("head log-probs in a bfloat16 matmul are float32 and keep float32 gradients of float32 inputs", "[logps]") {
  at::manual_seed(4);
  const at::Tensor h = at::randn({20, 16}), w = at::randn({300, 16}) * 0.1;
  const at::Tensor targets = at::randint(0, 300, {20}, at::kLong);
  const at::Tensor upstream = at::randn({20});
  const Grads mine = value_and_grads(
      [](const at::Tensor& a, const at::Tensor& b, const at::Tensor& t) { return dpo::head_token_logps(a, b, t, at::kBFloat16); },
      h, w, targets, upstream);
  // The same logits through plain autograd: the product of the bfloat16 operands, in float32 where
  // kernels/ has bfloat16 products with float32 results, else rounded to bfloat16 as libtorch's.
  const bool float32_logits = dpo::bfloat16_products_in_float32();
  INFO("bfloat16 products with float32 results: " << float32_logits);
  const Grads plain = value_and_grads(
      [float32_logits](const at::Tensor& a, const at::Tensor& b, const at::Tensor& t) {
        const at::Tensor a16 = a.to(at::kBFloat16), b16 = b.to(at::kBFloat16);
        const at::Tensor logits =
            float32_logits ? at::mm(a16.to(at::kFloat), b16.to(at::kFloat).t()) : at::mm(a16, b16.t()).to(at::kFloat);
        return at::log_softmax(logits, -1).gather(1, t.unsqueeze(1)).squeeze(1);
      },
      h, w, targets, upstream);
  CHECK(mine.value.scalar_type() == at::kFloat);
  CHECK(mine.hidden.scalar_type() == at::kFloat);
  CHECK(mine.weight.scalar_type() == at::kFloat);
  CHECK(at::allclose(mine.value, plain.value, 1e-5, 1e-5));
  // Mine rounds the logits' gradient to bfloat16 before the two products (8 bits: ~4e-3).
  CHECK(float_rounding::normwise_relative_difference(mine.hidden, plain.hidden) < 1e-2);
  CHECK(float_rounding::normwise_relative_difference(mine.weight, plain.weight) < 1e-2);
}

namespace {

// Values and gradients of a loss that couples the rows of each chunk (rows [ends[i-1], ends[i])):
// the log-sigmoid of a weighted sum of the chunk's log-probs. Plain: head_token_logps, the loss,
// backward(). Ahead: head_logps_with_gradient, the anchor's backward() taken 3 times over (its
// gradients scale with the anchor's), divided back.
Grads chunked_loss_grads(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& targets,
                         const std::vector<int64_t>& ends, bool ahead) {
  const auto chunk_loss = [](const at::Tensor& logps, int64_t first) {
    const at::Tensor weights = at::linspace(0.5, 1.5, logps.size(0), logps.options());
    return -at::log_sigmoid((logps * weights).sum() * 0.1 + static_cast<double>(first) * 0.01);
  };
  const at::Tensor h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  if (!ahead) {
    const at::Tensor value = dpo::head_token_logps(h, w, targets, at::ScalarType::Undefined);
    at::Tensor total = at::zeros({}, value.options());
    int64_t begin = 0;
    for (const int64_t end : ends) {
      total = total + chunk_loss(value.narrow(0, begin, end - begin), begin);
      begin = end;
    }
    total.backward();
    return {value.detach(), h.grad(), w.grad()};
  }
  size_t chunk = 0;
  const dpo::TokenGradient gradient = [&](int64_t first, const at::Tensor& logps) {
    CHECK(first == (chunk == 0 ? 0 : ends[chunk - 1]));
    CHECK(logps.size(0) == ends[chunk] - first);
    ++chunk;
    const at::Tensor leaf = logps.detach().requires_grad_(true);
    return torch::autograd::grad({chunk_loss(leaf, first)}, {leaf})[0];
  };
  const dpo::HeadLogpsWithGradient out =
      dpo::head_logps_with_gradient(h, w, targets, at::ScalarType::Undefined, ends, gradient);
  CHECK(chunk == ends.size());
  CHECK(!out.logps.requires_grad());
  CHECK(out.anchor.item<double>() == 0.0);
  (out.anchor * 3.0).backward();
  return {out.logps, h.grad() / 3.0, w.grad() / 3.0};
}

}  // namespace

TEST_CASE("head log-probs with the loss's gradient formed in forward equal plain autograd, chunk by chunk", "[logps]") {
  at::manual_seed(6);
  const at::Tensor h = at::randn({30, 8}, at::kDouble), w = at::randn({50, 8}, at::kDouble);
  const at::Tensor targets = at::randint(0, 50, {30}, at::kLong);
  const std::vector<int64_t> ends = {7, 19, 30};
  for (const auto& [dtype, tolerance] : {std::pair{at::kDouble, 1e-12}, std::pair{at::kFloat, 1e-5}}) {
    INFO(dtype);
    const Grads plain = chunked_loss_grads(h.to(dtype), w.to(dtype), targets, ends, false);
    const Grads ahead = chunked_loss_grads(h.to(dtype), w.to(dtype), targets, ends, true);
    CHECK(ahead.hidden.scalar_type() == dtype);
    CHECK(ahead.weight.scalar_type() == dtype);
    CHECK((ahead.value - plain.value).abs().max().item<double>() < tolerance);
    CHECK(float_rounding::normwise_relative_difference(ahead.hidden.to(at::kDouble), plain.hidden.to(at::kDouble)) < tolerance);
    CHECK(float_rounding::normwise_relative_difference(ahead.weight.to(at::kDouble), plain.weight.to(at::kDouble)) < tolerance);
  }
  const auto none = [](int64_t, const at::Tensor& logps) { return at::zeros({logps.size(0) + 1}); };
  CHECK_THROWS_WITH(dpo::head_logps_with_gradient(h, w, targets, at::ScalarType::Undefined, {7, 29}, none),
                    Catch::Contains("30 rows"));
  CHECK_THROWS_WITH(dpo::head_logps_with_gradient(h, w, targets, at::ScalarType::Undefined, {30}, none),
                    Catch::Contains("31 values for a chunk of 30 rows"));
  for (const at::Tensor& sum : {at::zeros({50, 7}, at::kDouble), at::zeros({50, 8}, at::kFloat),
                                at::zeros({8, 50}, at::kDouble).t()}) {
    CHECK_FALSE(dpo::takes_weight_gradient_sum(w, sum));
    CHECK_THROWS_WITH(dpo::head_logps_with_gradient(h, w, targets, at::ScalarType::Undefined, {30}, none, sum),
                      Catch::Contains("the weight's gradient sum must be a contiguous [50, 8] tensor"));
  }
  CHECK(dpo::takes_weight_gradient_sum(w, at::zeros({50, 8}, at::kDouble)));
  // WPO's normaliser from the chunks' logits, against the whole logits' in float64; written before
  // the chunk's gradient is asked for.
  const at::Tensor logits = at::mm(h, w.t());
  const at::Tensor want = at::logsumexp(2 * logits, -1) - 2 * at::logsumexp(logits, -1);
  const at::Tensor log_sum_squared = at::full({30}, std::nan(""), at::kDouble);
  const auto seen = [&](int64_t first, const at::Tensor& logps) {
    CHECK_FALSE(at::isnan(log_sum_squared.narrow(0, first, logps.size(0))).any().item<bool>());
    return at::zeros_like(logps);
  };
  dpo::head_logps_with_gradient(h, w, targets, at::ScalarType::Undefined, ends, seen, at::Tensor(), log_sum_squared);
  CHECK(at::allclose(log_sum_squared, want, 1e-12, 1e-12));
  CHECK_THROWS_WITH(dpo::head_logps_with_gradient(h, w, targets, at::ScalarType::Undefined, ends, seen, at::Tensor(),
                                                  at::zeros({30}, at::kFloat)),
                    Catch::Contains("the log-sum-squared output must be [30] of the log-probs' dtype"));
}

TEST_CASE("head log-probs refuse mismatched shapes, naming them", "[logps]") {
  const at::Tensor w = at::randn({10, 4});
  CHECK_THROWS_WITH(dpo::head_token_logps(at::randn({3, 5}), w, at::zeros({3}, at::kLong), at::ScalarType::Undefined),
                    Catch::Contains("[3, 5]"));
  CHECK_THROWS_WITH(dpo::head_token_logps(at::randn({3, 4}), w, at::zeros({2}, at::kLong), at::ScalarType::Undefined),
                    Catch::Contains("targets"));
  CHECK_THROWS_WITH(dpo::head_token_logps(at::randn({3, 4}), w, at::full({3}, 10, at::kLong), at::ScalarType::Undefined),
                    Catch::Contains("target token 10 is outside the head's vocabulary of 10"));
  CHECK_THROWS_WITH(dpo::head_token_logps(at::randn({3, 4}), w, at::full({3}, -1, at::kLong), at::ScalarType::Undefined),
                    Catch::Contains("target token -1"));
}

namespace {

std::map<std::string, at::Tensor> grads_of(dpo::CausalLMImpl& model, const at::Tensor& logps) {
  model.zero_grad();
  (logps * at::linspace(0.5, 1.5, logps.size(0))).sum().backward();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : model.named_parameters()) grads[p.key()] = p.value().grad().clone();
  return grads;
}

void check_model_path_equals_full_logits(dpo::CausalLMImpl& model, at::ScalarType matmul, double tolerance) {
  model.set_matmul_dtype(matmul);
  at::manual_seed(5);
  const at::Tensor ids = at::randint(0, 32, {4, 12}, at::kLong);
  at::Tensor mask = at::zeros({4, 12}, at::kBool);
  mask.narrow(1, 5, 7).fill_(true);  // a 5-token prompt, then the response
  mask[1].narrow(0, 9, 3).fill_(false);  // a shorter response: padding after it
  mask[3].fill_(false);                  // a row with nothing scored
  const dpo::SequenceLogps fused = dpo::model_sequence_logps(model, ids, mask);
  const auto fused_grads = grads_of(model, fused.logps);
  const dpo::SequenceLogps full = dpo::sequence_logps(model.forward(ids), ids, mask);
  const auto full_grads = grads_of(model, full.logps);
  CHECK(at::equal(fused.token_counts, full.token_counts));
  CHECK(fused.logps.scalar_type() == at::kFloat);
  CHECK(at::allclose(fused.logps, full.logps, tolerance, tolerance));
  CHECK(fused.logps[3].item<float>() == 0.0f);
  for (const auto& [name, grad] : full_grads) {
    INFO(name);
    CHECK(float_rounding::normwise_relative_difference(fused_grads.at(name), grad) < 10 * tolerance);
  }
}

}  // namespace

TEST_CASE("log-probs with the head on scored positions only equal the full-logits path, GPT-2 and Llama", "[logps]") {
  SECTION("llama fp32") {
    auto model = tiny_llama(1);
    check_model_path_equals_full_logits(*model, at::ScalarType::Undefined, float_rounding::kForwardRelative);
  }
  SECTION("gpt2 fp32") {
    auto model = tiny_gpt2(1);
    check_model_path_equals_full_logits(*model, at::ScalarType::Undefined, float_rounding::kForwardRelative);
  }
  SECTION("llama bf16-mixed") {
    auto model = tiny_llama(2);
    check_model_path_equals_full_logits(*model, at::kBFloat16, 2e-3);
  }
  SECTION("gpt2 bf16-mixed") {
    auto model = tiny_gpt2(2);
    check_model_path_equals_full_logits(*model, at::kBFloat16, 2e-3);
  }
}

namespace {

// Parameter gradients of sum(states * weights): random weights per state, as a head gives (a plain
// sum of LayerNorm outputs has a gradient of rounding noise only: its features sum to a constant).
std::map<std::string, at::Tensor> state_grads(dpo::CausalLMImpl& model, const at::Tensor& states, const at::Tensor& weights) {
  model.zero_grad();
  (states * weights.to(states.scalar_type())).sum().backward();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : model.named_parameters())
    if (p.value().grad().defined()) grads[p.key()] = p.value().grad().to_dense().clone();
  return grads;
}

}  // namespace

TEST_CASE("hidden states of kept positions equal the full forward's, with the last block's MLP on those rows only",
          "[logps]") {
  at::manual_seed(6);
  const at::Tensor ids = at::randint(0, 32, {3, 10}, at::kLong);
  // Repeats (a prompt's last token predicts every response's first token) and any order.
  const at::Tensor keep = at::tensor(std::vector<int64_t>{29, 4, 4, 13, 0, 21});
  const at::Tensor weights = at::randn({6, 16});
  for (const bool checkpointing : {false, true}) {
    for (auto model : {tiny_gpt2(8), tiny_llama(8)}) {
      INFO((model->spec().arch == dpo::Architecture::GPT2 ? "gpt2" : "llama") << (checkpointing ? ", checkpointed" : ""));
      model->train();
      model->set_gradient_checkpointing(checkpointing);
      const at::Tensor full = model->hidden_states(ids).reshape({30, -1}).index_select(0, keep);
      const auto full_grads = state_grads(*model, full, weights);
      const at::Tensor kept = model->hidden_states(ids, {}, keep);
      REQUIRE(kept.sizes() == full.sizes());
      CHECK(at::allclose(kept, full, 1e-5, 1e-6));
      const auto kept_grads = state_grads(*model, kept, weights);
      REQUIRE(kept_grads.size() == full_grads.size());
      for (const auto& [name, grad] : full_grads) {
        INFO(name);
        CHECK(float_rounding::normwise_relative_difference(kept_grads.at(name), grad) < 1e-5);
      }
    }
  }
}

TEST_CASE("a batch with nothing scored gives zero log-probs, and backward runs", "[logps]") {
  for (auto model : {tiny_gpt2(9), tiny_llama(9)}) {
    const at::Tensor ids = at::randint(0, 32, {2, 6}, at::kLong);
    const dpo::SequenceLogps none = dpo::model_sequence_logps(*model, ids, at::zeros({2, 6}, at::kBool));
    CHECK(at::equal(none.logps, at::zeros({2})));
    CHECK(at::equal(none.token_counts, at::zeros({2}, at::kLong)));
    if (none.logps.requires_grad()) REQUIRE_NOTHROW(none.logps.sum().backward());
  }
}
