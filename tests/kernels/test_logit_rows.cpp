// The head's row kernels (log-softmax at targets, the log-sum-exp alone, the gradient) against
// float64 libtorch on the same float32 logits.
#include <ATen/ATen.h>
#include "catch2_api.h"

#include "dpo/kernels/logit_rows.h"

namespace {

struct Rows {
  at::Tensor logits, targets, g;
};

// Logits of a trained model's spread (a few units), one row with a dominant token.
Rows random_rows(int64_t rows, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  Rows r{at::randn({rows, vocab}) * 3.0, at::randint(0, vocab, {rows}, at::kLong), at::randn({rows})};
  r.logits[0][r.targets[0].item<int64_t>()] = 40.0;
  return r;
}

at::Tensor reference_lse(const at::Tensor& logits) { return at::logsumexp(logits.to(at::kDouble), -1); }

void check_against_float64(int64_t rows, int64_t vocab) {
  INFO("rows " << rows << ", vocab " << vocab);
  const Rows r = random_rows(rows, vocab, 11 + vocab);
  at::Tensor lse = at::empty({rows}), logps = at::empty({rows});
  dpo::log_softmax_at_targets(r.logits, r.targets, lse, logps);
  const at::Tensor want_lse = reference_lse(r.logits);
  const at::Tensor want_logps = r.logits.to(at::kDouble).gather(1, r.targets.unsqueeze(1)).squeeze(1) - want_lse;
  // float32 values of magnitude <= ~50: a few ulps (4e-6 at 32) of the float64 value.
  CHECK((lse.to(at::kDouble) - want_lse).abs().max().item<double>() < 1e-5);
  CHECK((logps.to(at::kDouble) - want_logps).abs().max().item<double>() < 1e-5);
  // The log-sum-exp alone (the head's vocabulary blocks) is the same rounding of the same sum.
  at::Tensor lse_alone = at::empty({rows});
  dpo::log_sum_exp_rows(r.logits, lse_alone);
  CHECK(at::equal(lse_alone, lse));

  // g (1{v = target} - softmax) against float64, element by element relative to |g|.
  const at::Tensor x64 = r.logits.to(at::kDouble);
  at::Tensor want = -at::softmax(x64, -1) * r.g.to(at::kDouble).unsqueeze(1);
  want.scatter_add_(1, r.targets.unsqueeze(1), r.g.to(at::kDouble).unsqueeze(1));
  const at::Tensor logits = r.logits.clone();
  const at::Tensor got = dpo::logp_gradient(logits, r.targets, lse, r.g, at::kFloat);
  CHECK(got.data_ptr() == logits.data_ptr());  // float32: in place
  const double scale = r.g.abs().max().item<double>();
  // (A dominant token's 1 - p inherits lse's rounding at 40, ~4e-6.)
  CHECK((got.to(at::kDouble) - want).abs().max().item<double>() < 1e-5 * scale);
  // bfloat16: the same values rounded once.
  const at::Tensor rounded = dpo::logp_gradient(r.logits.clone(), r.targets, lse, r.g, at::kBFloat16);
  CHECK(rounded.scalar_type() == at::kBFloat16);
  CHECK(at::equal(rounded, got.to(at::kBFloat16)));
}

}  // namespace

TEST_CASE("logit rows: log-softmax at targets and its gradient equal float64, wide and narrow vocabularies",
          "[kernels]") {
  check_against_float64(5, 50304 + 5);  // GPT-2's padded vocabulary, plus a tail of 5 lanes
  check_against_float64(300, 10);       // narrower than one vector: many rows per task
  check_against_float64(3, 2048 * 3 + 1);  // one column past the float64 sum's blocks
}

TEST_CASE("logit rows: a NaN logit makes its own row NaN and no other", "[kernels]") {
  Rows r = random_rows(4, 1000, 5);
  r.logits[2][17] = std::numeric_limits<float>::quiet_NaN();
  at::Tensor lse = at::empty({4}), logps = at::empty({4});
  dpo::log_softmax_at_targets(r.logits, r.targets, lse, logps);
  CHECK(at::isnan(lse[2]).item<bool>());
  CHECK(at::isnan(logps[2]).item<bool>());
  CHECK(at::isfinite(lse.index_select(0, at::tensor({0, 1, 3}, at::kLong))).all().item<bool>());
  at::Tensor lse_alone = at::empty({4});
  dpo::log_sum_exp_rows(r.logits, lse_alone);
  CHECK(at::isnan(lse_alone[2]).item<bool>());
  CHECK(at::equal(lse_alone.index_select(0, at::tensor({0, 1, 3}, at::kLong)),
                  lse.index_select(0, at::tensor({0, 1, 3}, at::kLong))));
  const at::Tensor grad = dpo::logp_gradient(r.logits.clone(), r.targets, lse, r.g, at::kFloat);
  CHECK(at::isnan(grad[2]).all().item<bool>());
  CHECK(at::isfinite(grad.index_select(0, at::tensor({0, 1, 3}, at::kLong))).all().item<bool>());
}

TEST_CASE("logit rows: taken for contiguous float32 CPU rows only, and bad companions are named", "[kernels]") {
  CHECK(dpo::takes_logit_rows(at::zeros({3, 5})));
  CHECK_FALSE(dpo::takes_logit_rows(at::zeros({3, 5}, at::kDouble)));
  CHECK_FALSE(dpo::takes_logit_rows(at::zeros({5, 3}).t()));
  CHECK_FALSE(dpo::takes_logit_rows(at::zeros({3, 8}).narrow(1, 0, 5)));
  at::Tensor lse = at::empty({3}), logps = at::empty({3});
  CHECK_THROWS_WITH(dpo::log_softmax_at_targets(at::zeros({3, 5}), at::zeros({3}, at::kInt), lse, logps),
                    Catch::Contains("targets"));
  CHECK_THROWS_WITH(dpo::log_softmax_at_targets(at::zeros({3, 5}), at::zeros({3}, at::kLong), at::empty({2}), logps),
                    Catch::Contains("lse"));
  CHECK_THROWS_WITH(dpo::log_sum_exp_rows(at::zeros({3, 5}), at::empty({3}, at::kDouble)), Catch::Contains("lse"));
  CHECK_THROWS_WITH(dpo::log_sum_exp_rows(at::zeros({5, 3}).t(), lse), Catch::Contains("float32 CPU rows"));
  CHECK_THROWS_WITH(dpo::logp_gradient(at::zeros({3, 5}), at::zeros({3}, at::kLong), lse, at::zeros({3}, at::kDouble),
                                       at::kFloat),
                    Catch::Contains("gradient"));
}
