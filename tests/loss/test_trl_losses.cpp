// TRL's per-pair loss types against TRL's formulas, written out here in plain double, term by
// term as in trl/trainer/dpo_trainer.py (HEAD f2cd577): values, gradients, and the value at
// policy == reference.
#include <cfloat>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"

#include "dpo/error.h"
#include "dpo/loss/loss.h"
#include "loss/random_pairs.h"

namespace {

// Random pairs, then pairs whose log-ratios are so large that beta * h (and beta * c, beta * r)
// is about +-50 and +-100 at beta = 0.1: exp of those overflows float32's range.
std::vector<Pair> pairs_with_large_margins(uint32_t seed) {
  std::vector<Pair> pairs = random_pairs(seed, 8);
  pairs.push_back({-20.0, -700.0, -320.0, -200.0, 3, 2});   // c = 300, r = -500, h = 800
  pairs.push_back({-320.0, -200.0, -20.0, -700.0, 2, 3});   // c = -300, r = 500, h = -800
  pairs.push_back({-40.0, -45.0, -540.0, -45.0, 1, 1});     // c = 500, r = 0
  pairs.push_back({-540.0, -45.0, -40.0, -45.0, 1, 1});     // c = -500, r = 0
  pairs.push_back({-510.0, -10.0, -10.0, -510.0, 1, 1});    // c = -500, r = 500, h = -1000 (keep last)
  return pairs;
}

// TRL's building blocks, as torch defines them.
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double logsigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }

struct Params {
  double beta, label_smoothing, discopop_tau;
};

// TRL's per-sequence loss for `type` (dpo_trainer.py, _compute_loss, reverse_kl scores).
double trl_loss(const std::string& type, const Pair& p, const Params& k) {
  const double beta = k.beta, eps = k.label_smoothing;
  const double chosen_scores = p.pc - p.rc, rejected_scores = p.pr - p.rr;
  const double delta_score = chosen_scores - rejected_scores;
  if (type == "exo_pair") {
    const double qw = sigmoid(beta * delta_score), log_qw = logsigmoid(beta * delta_score);
    const double ql = sigmoid(-beta * delta_score), log_ql = logsigmoid(-beta * delta_score);
    return qw * (log_qw - std::log1p(-eps)) + ql * (log_ql - std::log(eps));
  }
  if (type == "nca_pair") {
    const double chosen_rewards = beta * chosen_scores, rejected_rewards = beta * rejected_scores;
    return -logsigmoid(chosen_rewards) - 0.5 * logsigmoid(-chosen_rewards) - 0.5 * logsigmoid(-rejected_rewards);
  }
  if (type == "sppo_hard") {
    const double winner_margin_error = std::pow(chosen_scores - 0.5 / beta, 2);
    const double loser_margin_error = std::pow(rejected_scores + 0.5 / beta, 2);
    return winner_margin_error + loser_margin_error;
  }
  if (type == "apo_zero") return (1 - sigmoid(beta * chosen_scores)) + sigmoid(beta * rejected_scores);
  if (type == "apo_down") return sigmoid(beta * chosen_scores) + (1 - sigmoid(beta * delta_score));
  if (type == "discopop") {
    const double logits = delta_score * beta;
    const double log_ratio_modulation = sigmoid(logits / k.discopop_tau);
    const double logistic_component = -logsigmoid(logits);
    const double exp_component = std::exp(-logits);
    return logistic_component * (1 - log_ratio_modulation) + exp_component * log_ratio_modulation;
  }
  if (type == "sigmoid_norm") {
    const double chosen_avg_score = chosen_scores / std::max<double>(p.nc, 1);
    const double rejected_avg_score = rejected_scores / std::max<double>(p.nr, 1);
    return -logsigmoid(beta * (chosen_avg_score - rejected_avg_score));
  }
  FAIL("no TRL formula written out for " << type);
  return 0;
}

const std::vector<std::string> kNewTypes = {"exo_pair", "nca_pair", "sppo_hard", "apo_zero",
                                            "apo_down", "discopop", "sigmoid_norm"};

at::Tensor column(const std::vector<Pair>& pairs, double Pair::*field, at::ScalarType dtype, bool requires_grad) {
  std::vector<double> values;
  for (const Pair& p : pairs) values.push_back(p.*field);
  return at::tensor(values, at::kDouble).to(dtype).set_requires_grad(requires_grad);
}

at::Tensor counts(const std::vector<Pair>& pairs, int64_t Pair::*field) {
  std::vector<int64_t> values;
  for (const Pair& p : pairs) values.push_back(p.*field);
  return at::tensor(values, at::kLong);
}

dpo::PreferenceLogps to_logps(const std::vector<Pair>& pairs, at::ScalarType dtype = at::kDouble,
                              bool requires_grad = false) {
  return {column(pairs, &Pair::pc, dtype, requires_grad), column(pairs, &Pair::pr, dtype, requires_grad),
          column(pairs, &Pair::rc, dtype, false),         column(pairs, &Pair::rr, dtype, false),
          counts(pairs, &Pair::nc),                       counts(pairs, &Pair::nr)};
}

dpo::LossOptions options(const std::string& type, const Params& k) {
  dpo::LossOptions o;
  o.type = type;
  o.beta = k.beta;
  o.label_smoothing = k.label_smoothing;
  o.discopop_tau = k.discopop_tau;
  return o;
}

// beta, label_smoothing, discopop_tau (TRL's defaults first).
const std::vector<Params> kParams = {{0.1, 1e-3, 0.05}, {0.5, 0.2, 0.3}, {0.1, 0.1, 2.0}};

}  // namespace

TEST_CASE("each TRL loss type equals TRL's formula in double, large margins included", "[loss]") {
  const std::vector<Pair> pairs = pairs_with_large_margins(5);
  for (const std::string& type : kNewTypes) {
    for (const Params& k : kParams) {
      CAPTURE(type, k.beta, k.label_smoothing, k.discopop_tau);
      const at::Tensor losses = dpo::preference_losses(to_logps(pairs), options(type, k));
      REQUIRE(losses.sizes() == at::IntArrayRef{static_cast<int64_t>(pairs.size())});
      for (size_t i = 0; i < pairs.size(); ++i) {
        CAPTURE(i);
        const double expected = trl_loss(type, pairs[i], k);
        const double got = losses[i].item<double>();
        REQUIRE(std::isfinite(expected));
        CHECK(std::isfinite(got));
        CHECK(got == Approx(expected).epsilon(1e-10).margin(1e-12));
      }
    }
  }
}

TEST_CASE("each TRL loss type's gradient matches central finite differences of TRL's formula", "[loss]") {
  const std::vector<Pair> pairs = pairs_with_large_margins(9);
  const double step = 1e-6;
  for (const std::string& type : kNewTypes) {
    for (const Params& k : kParams) {
      CAPTURE(type, k.beta, k.label_smoothing, k.discopop_tau);
      dpo::PreferenceLogps logps = to_logps(pairs, at::kDouble, /*requires_grad=*/true);
      dpo::preference_losses(logps, options(type, k)).sum().backward();
      for (size_t i = 0; i < pairs.size(); ++i) {
        for (double Pair::*field : {&Pair::pc, &Pair::pr}) {
          Pair plus = pairs[i], minus = pairs[i];
          plus.*field += step;
          minus.*field -= step;
          const double numeric = (trl_loss(type, plus, k) - trl_loss(type, minus, k)) / (2 * step);
          const at::Tensor& grad = field == &Pair::pc ? logps.policy_chosen.grad() : logps.policy_rejected.grad();
          const bool chosen = field == &Pair::pc;
          CAPTURE(i, chosen);
          const double analytic = grad[static_cast<int64_t>(i)].item<double>();
          CHECK(std::isfinite(analytic));
          // The difference quotient's rounding error is about |loss| * DBL_EPSILON / step.
          const double rounding = 4 * std::abs(trl_loss(type, pairs[i], k)) * DBL_EPSILON / step;
          CHECK(analytic == Approx(numeric).epsilon(1e-6).margin(1e-8 + rounding));
        }
      }
    }
  }
}

TEST_CASE("at policy == reference each loss type takes its closed form at zero log-ratios", "[loss]") {
  const double ln2 = std::log(2.0), beta = 0.25, eps = 0.1;
  const std::vector<std::pair<std::string, double>> at_zero = {
      {"sigmoid", ln2},
      {"robust", ln2},
      {"hinge", 1.0},
      {"ipo", 1 / (4 * beta * beta)},
      {"ipo_sum", 1 / (4 * beta * beta)},
      {"exo_pair", -ln2 - 0.5 * std::log(eps * (1 - eps))},  // KL((1/2, 1/2) || (1 - eps, eps))
      {"nca_pair", 2 * ln2},
      {"sppo_hard", 1 / (2 * beta * beta)},
      {"apo_zero", 1.0},
      {"apo_down", 1.0},
      {"discopop", (ln2 + 1) / 2},
      {"sigmoid_norm", ln2},
  };
  std::vector<Pair> pairs = pairs_with_large_margins(13);
  for (Pair& p : pairs) {
    p.pc = p.rc;
    p.pr = p.rr;
  }
  for (const auto& [type, expected] : at_zero) {
    CAPTURE(type);
    const at::Tensor losses = dpo::preference_losses(to_logps(pairs), options(type, {beta, eps, 0.05}));
    for (size_t i = 0; i < pairs.size(); ++i) CHECK(losses[i].item<double>() == Approx(expected).epsilon(1e-12));
  }
}

TEST_CASE("in float32, large margins give finite losses and gradients for every TRL loss type", "[loss]") {
  // TRL's discopop multiplies exp(-beta h) by its weight: at beta h = -100 that is inf * 0 = nan in
  // float32; here the value is finite and equals the double formula's.
  const std::vector<Pair> pairs = pairs_with_large_margins(17);
  for (const std::string& type : kNewTypes) {
    CAPTURE(type);
    const Params k{0.1, 1e-3, 0.05};
    dpo::PreferenceLogps logps = to_logps(pairs, at::kFloat, /*requires_grad=*/true);
    const at::Tensor losses = dpo::preference_losses(logps, options(type, k));
    losses.sum().backward();
    CHECK(at::isfinite(losses).all().item<bool>());
    CHECK(at::isfinite(logps.policy_chosen.grad()).all().item<bool>());
    CHECK(at::isfinite(logps.policy_rejected.grad()).all().item<bool>());
    const size_t last = pairs.size() - 1;
    CHECK(losses[static_cast<int64_t>(last)].item<double>() == Approx(trl_loss(type, pairs[last], k)).epsilon(1e-5));
  }
}

TEST_CASE("the TRL loss types parse by TRL's names and exo_pair refuses a zero label_smoothing", "[loss]") {
  CHECK(dpo::parse_loss_type("exo_pair") == dpo::LossType::ExoPair);
  CHECK(dpo::parse_loss_type("nca_pair") == dpo::LossType::NcaPair);
  CHECK(dpo::parse_loss_type("sppo_hard") == dpo::LossType::SppoHard);
  CHECK(dpo::parse_loss_type("apo_zero") == dpo::LossType::ApoZero);
  CHECK(dpo::parse_loss_type("apo_down") == dpo::LossType::ApoDown);
  CHECK(dpo::parse_loss_type("discopop") == dpo::LossType::Discopop);
  CHECK(dpo::parse_loss_type("sigmoid_norm") == dpo::LossType::SigmoidNorm);
  CHECK_THROWS_WITH(dpo::parse_loss_type("bco"), Catch::Contains("'bco'") && Catch::Contains("bco_pair"));
  const std::vector<Pair> pairs = pairs_with_large_margins(3);
  CHECK_THROWS_WITH(dpo::preference_losses(to_logps(pairs), options("exo_pair", {0.1, 0.0, 0.05})),
                    Catch::Contains("loss.label_smoothing") && Catch::Contains("exo_pair"));
}
