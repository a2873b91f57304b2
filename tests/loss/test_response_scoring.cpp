// What pair_logps computes beyond the plain sums, for the loss terms that read it: LD-DPO's weighted
// sums, the unlikelihood sums of log(1 - p) and WPO's length-normalised log-probs, each against the
// same quantity computed here in float64 from the model's full logits (TRL's formulas).
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"

#include "dpo/data/collate.h"
#include "dpo/loss/logps.h"
#include "tiny_llama.h"

namespace {

// Two pairs over a 4-token prompt: chosen responses of 6 and 3 tokens, rejected ones of 4 and 7.
dpo::PairBatch two_pairs() {
  at::manual_seed(11);
  dpo::PairBatch batch;
  batch.num_pairs = 2;
  batch.example_indices = {0, 1};
  batch.input_ids = at::randint(1, 32, {4, 12}, at::kLong);
  batch.response_mask = at::zeros({4, 12}, at::kBool);
  const int64_t lengths[] = {6, 3, 4, 7};  // chosen 0, chosen 1, rejected 0, rejected 1
  for (int64_t row = 0; row < 4; ++row) batch.response_mask[row].narrow(0, 4, lengths[row]).fill_(true);
  return batch;
}

struct TokenValues {
  std::vector<std::vector<double>> logp, log_sum_sq;  // per row, per scored token in order
};

TokenValues from_full_logits(dpo::CausalLMImpl& model, const dpo::PairBatch& batch) {
  at::NoGradGuard no_grad;
  const at::Tensor logits = model.forward(batch.input_ids).to(at::kDouble);
  const at::Tensor logp = at::log_softmax(logits, -1);
  const at::Tensor log_sum_sq = at::logsumexp(2 * logits, -1) - 2 * at::logsumexp(logits, -1);
  TokenValues out;
  for (int64_t row = 0; row < batch.input_ids.size(0); ++row) {
    out.logp.emplace_back();
    out.log_sum_sq.emplace_back();
    for (int64_t t = 1; t < batch.input_ids.size(1); ++t) {
      if (!batch.response_mask[row][t].item<bool>()) continue;
      out.logp.back().push_back(logp[row][t - 1][batch.input_ids[row][t].item<int64_t>()].item<double>());
      out.log_sum_sq.back().push_back(log_sum_sq[row][t - 1].item<double>());
    }
  }
  return out;
}

}  // namespace

TEST_CASE("LD-DPO weighs each pair's tokens past the shorter response's length by ld_alpha", "[logps]") {
  auto model = tiny_llama(1);
  const dpo::PairBatch batch = two_pairs();
  const TokenValues v = from_full_logits(*model, batch);
  for (const double alpha : {0.0, 0.3, 1.0}) {
    CAPTURE(alpha);
    const dpo::PairLogps got = dpo::pair_logps(*model, batch, dpo::ResponseScoring{alpha});
    for (int64_t pair = 0; pair < 2; ++pair) {
      const size_t shared = std::min(v.logp[pair].size(), v.logp[pair + 2].size());
      for (const int64_t row : {pair, pair + 2}) {
        double expected = 0;
        for (size_t k = 0; k < v.logp[row].size(); ++k) expected += (k < shared ? 1.0 : alpha) * v.logp[row][k];
        const at::Tensor& side = row < 2 ? got.chosen : got.rejected;
        CAPTURE(pair, row);
        CHECK(side[pair].item<double>() == Approx(expected).epsilon(1e-5));
      }
    }
    // The token counts stay the plain counts (TRL's ipo divides by them).
    CHECK(got.rejected_tokens[1].item<int64_t>() == 7);
  }
}

TEST_CASE("unlikelihood sums log(1 - p) over the rejected tokens, and WPO averages log p - log sum p^2", "[logps]") {
  auto model = tiny_llama(1);
  const dpo::PairBatch batch = two_pairs();
  const TokenValues v = from_full_logits(*model, batch);
  dpo::ResponseScoring scoring;
  scoring.unlikelihood = true;
  scoring.wpo_weights = true;
  const dpo::PairLogps got = dpo::pair_logps(*model, batch, scoring);
  for (int64_t pair = 0; pair < 2; ++pair) {
    CAPTURE(pair);
    double unlikely = 0, chosen_weight = 0, rejected_weight = 0;
    for (const double lp : v.logp[pair + 2]) unlikely += std::log1p(-std::exp(lp));
    for (size_t k = 0; k < v.logp[pair].size(); ++k) chosen_weight += v.logp[pair][k] - v.log_sum_sq[pair][k];
    for (size_t k = 0; k < v.logp[pair + 2].size(); ++k)
      rejected_weight += v.logp[pair + 2][k] - v.log_sum_sq[pair + 2][k];
    CHECK(got.rejected_unlikelihood[pair].item<double>() == Approx(unlikely).epsilon(1e-5));
    CHECK(got.chosen_weight_logps[pair].item<double>() ==
          Approx(chosen_weight / static_cast<double>(v.logp[pair].size())).epsilon(1e-5));
    CHECK(got.rejected_weight_logps[pair].item<double>() ==
          Approx(rejected_weight / static_cast<double>(v.logp[pair + 2].size())).epsilon(1e-5));
  }
  // WPO's weights are constants: no gradient reaches the model through them.
  CHECK_FALSE(got.chosen_weight_logps.requires_grad());
  CHECK(got.rejected_unlikelihood.requires_grad());
}
