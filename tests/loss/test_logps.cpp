// sequence_logps against an explicit float64 loop: log-softmax by hand, next-token gather, masking.
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"

#include "dpo/error.h"
#include "dpo/loss/logps.h"

namespace {

struct Expected {
  std::vector<double> logps;
  std::vector<int64_t> counts;
};

// The paper code's _get_batch_logps, written as loops over doubles. The float32 path is compared
// with it to 1e-5 relative: float32 rounding of a log-softmax and a short sum (docs/numerics.md).
Expected reference_logps(const at::Tensor& logits, const at::Tensor& ids, const at::Tensor& mask) {
  const at::Tensor l = logits.to(at::kDouble).contiguous();
  const int64_t rows = l.size(0), steps = l.size(1), vocab = l.size(2);
  const auto lv = l.accessor<double, 3>();
  const auto iv = ids.accessor<int64_t, 2>();
  const auto mv = mask.accessor<bool, 2>();
  Expected e{std::vector<double>(rows, 0.0), std::vector<int64_t>(rows, 0)};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 1; t < steps; ++t) {
      if (!mv[r][t]) continue;
      double total = 0;
      for (int64_t v = 0; v < vocab; ++v) total += std::exp(lv[r][t - 1][v]);
      e.logps[r] += lv[r][t - 1][iv[r][t]] - std::log(total);
      e.counts[r] += 1;
    }
  }
  return e;
}

struct Batch {
  at::Tensor logits, ids, mask;
};

// Four rows of length 7 over a vocabulary of 11: prompt lengths 2, 0 (empty prompt: the first
// response token has no predecessor and is not scored), 3 and 1, then responses, then padding.
Batch random_batch() {
  at::manual_seed(5);
  const int64_t rows = 4, steps = 7, vocab = 11;
  Batch b;
  b.logits = at::randn({rows, steps, vocab}, at::kFloat) * 3;
  b.ids = at::randint(1, vocab, {rows, steps}, at::kLong);
  b.mask = at::zeros({rows, steps}, at::kBool);
  const int64_t prompt[] = {2, 0, 3, 1}, response[] = {3, 4, 4, 2};
  for (int64_t r = 0; r < rows; ++r) {
    b.mask[r].narrow(0, prompt[r], response[r]).fill_(true);
    const int64_t end = prompt[r] + response[r];
    if (end < steps) b.ids[r].narrow(0, end, steps - end).fill_(0);  // padding, as collate does
  }
  return b;
}

}  // namespace

TEST_CASE("sequence log-probs are the masked sum of next-token log-softmax", "[logps]") {
  const Batch b = random_batch();
  const Expected e = reference_logps(b.logits, b.ids, b.mask);
  const dpo::SequenceLogps got = dpo::sequence_logps(b.logits, b.ids, b.mask);
  REQUIRE(got.logps.scalar_type() == at::kFloat);
  REQUIRE(got.token_counts.scalar_type() == at::kLong);
  for (int64_t r = 0; r < 4; ++r) {
    CAPTURE(r);
    CHECK(got.logps[r].item<double>() == Approx(e.logps[r]).epsilon(1e-5));
    CHECK(got.token_counts[r].item<int64_t>() == e.counts[r]);
  }
  // Row 1 has an empty prompt: 4 response tokens, of which the first is not scored.
  CHECK(got.token_counts[1].item<int64_t>() == 3);
  CHECK(got.token_counts[0].item<int64_t>() == 3);
}

TEST_CASE("padding logits do not reach the sum, even when they are not finite", "[logps]") {
  Batch b = random_batch();
  const Expected e = reference_logps(b.logits, b.ids, b.mask);
  // Row 0 ends at position 5: logits at 5 and 6 only predict padding.
  b.logits[0][5].fill_(std::nan(""));
  b.logits[0][6].fill_(-INFINITY);
  const dpo::SequenceLogps got = dpo::sequence_logps(b.logits, b.ids, b.mask);
  CHECK(got.logps[0].item<double>() == Approx(e.logps[0]).epsilon(1e-5));
}

TEST_CASE("bfloat16 logits give float32 log-probs close to the float32 path", "[logps]") {
  const Batch b = random_batch();
  const at::Tensor bf16 = b.logits.to(at::kBFloat16);
  // The exact answer for the bfloat16 values themselves, and the float32 answer nearby.
  const Expected e = reference_logps(bf16, b.ids, b.mask);
  const dpo::SequenceLogps got = dpo::sequence_logps(bf16, b.ids, b.mask);
  const dpo::SequenceLogps f32 = dpo::sequence_logps(b.logits, b.ids, b.mask);
  REQUIRE(got.logps.scalar_type() == at::kFloat);
  for (int64_t r = 0; r < 4; ++r) {
    CHECK(got.logps[r].item<double>() == Approx(e.logps[r]).epsilon(1e-5));
    CHECK(got.logps[r].item<double>() == Approx(f32.logps[r].item<double>()).epsilon(0.05).margin(0.1));
  }
}

TEST_CASE("gradients flow to the logits only at scored positions", "[logps]") {
  const Batch b = random_batch();
  const at::Tensor logits = b.logits.to(at::kDouble).set_requires_grad(true);
  dpo::sequence_logps(logits, b.ids, b.mask).logps.sum().backward();
  const at::Tensor softmax = at::softmax(logits.detach(), -1);
  const auto iv = b.ids.accessor<int64_t, 2>();
  const auto mv = b.mask.accessor<bool, 2>();
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t t = 0; t < 7; ++t) {
      const bool scored = t + 1 < 7 && mv[r][t + 1];
      for (int64_t v = 0; v < 11; ++v) {
        // d log_softmax(x)[k] / dx_v = [v == k] - softmax(x)_v
        const double expected =
            scored ? (v == iv[r][t + 1] ? 1.0 : 0.0) - softmax[r][t][v].item<double>() : 0.0;
        CHECK(logits.grad()[r][t][v].item<double>() == Approx(expected).margin(1e-12));
      }
    }
  }
}

TEST_CASE("a mis-shaped mask or an id outside the vocabulary is refused, naming it", "[logps]") {
  const Batch b = random_batch();
  CHECK_THROWS_WITH(dpo::sequence_logps(b.logits, b.ids, b.mask.narrow(1, 0, 5)), Catch::Contains("response_mask"));
  at::Tensor ids = b.ids.clone();
  ids[2][3] = 11;
  CHECK_THROWS_WITH(dpo::sequence_logps(b.logits, ids, b.mask), Catch::Contains("input_ids"));
}

namespace {

// A stand-in causal LM whose logits are a fixed table indexed by row: enough to check the split.
// Its hidden states are the logits themselves and its head the identity.
class FixedLogitsModel : public dpo::CausalLMImpl {
 public:
  explicit FixedLogitsModel(at::Tensor logits)
      : dpo::CausalLMImpl(dpo::ModelSpec{}), logits_(std::move(logits)), identity_(at::eye(logits_.size(2), logits_.options())) {}
  at::Tensor hidden_states(const at::Tensor& input_ids, const dpo::TokenLayout& = {}, const at::Tensor& keep = {}) override {
    REQUIRE(input_ids.size(0) == logits_.size(0));
    return keep.defined() ? logits_.reshape({-1, logits_.size(2)}).index_select(0, keep) : logits_;
  }
  const at::Tensor& head_weight() const override { return identity_; }

 private:
  at::Tensor logits_, identity_;
};

}  // namespace

TEST_CASE("pair log-probs take chosen from the first B rows and rejected from the last B", "[logps]") {
  const Batch b = random_batch();
  FixedLogitsModel model(b.logits);
  dpo::PairBatch batch;
  batch.input_ids = b.ids;
  batch.response_mask = b.mask;
  batch.num_pairs = 2;
  const dpo::PairLogps pair = dpo::pair_logps(model, batch);
  const Expected e = reference_logps(b.logits, b.ids, b.mask);
  for (int64_t i = 0; i < 2; ++i) {
    CHECK(pair.chosen[i].item<double>() == Approx(e.logps[i]).epsilon(1e-5));
    CHECK(pair.rejected[i].item<double>() == Approx(e.logps[i + 2]).epsilon(1e-5));
    CHECK(pair.chosen_tokens[i].item<int64_t>() == e.counts[i]);
    CHECK(pair.rejected_tokens[i].item<int64_t>() == e.counts[i + 2]);
  }
  batch.num_pairs = 3;
  CHECK_THROWS_AS(dpo::pair_logps(model, batch), dpo::Error);
}
