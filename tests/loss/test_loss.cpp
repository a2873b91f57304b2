// The preference losses and metrics against their closed forms computed in plain double.
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

double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }

// The formulas of loss.h, written independently of the library.
double expected_loss(const std::string& type, const Pair& p, double beta, double eps) {
  const double h = (p.pc - p.rc) - (p.pr - p.rr);
  if (type == "sigmoid") return -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h);
  if (type == "robust") return (-(1 - eps) * log_sigmoid(beta * h) + eps * log_sigmoid(-beta * h)) / (1 - 2 * eps);
  if (type == "hinge") return std::max(0.0, 1 - beta * h);
  if (type == "ipo_sum") return std::pow(h - 1 / (2 * beta), 2);
  const double h_avg = (p.pc / p.nc - p.rc / p.nc) - (p.pr / p.nr - p.rr / p.nr);
  return std::pow(h_avg - 1 / (2 * beta), 2);
}

at::Tensor column(const std::vector<Pair>& pairs, double Pair::*field, bool requires_grad = false) {
  std::vector<double> values;
  for (const Pair& p : pairs) values.push_back(p.*field);
  return at::tensor(values, at::kDouble).set_requires_grad(requires_grad);
}

at::Tensor counts(const std::vector<Pair>& pairs, int64_t Pair::*field) {
  std::vector<int64_t> values;
  for (const Pair& p : pairs) values.push_back(p.*field);
  return at::tensor(values, at::kLong);
}

dpo::PreferenceLogps to_logps(const std::vector<Pair>& pairs, bool requires_grad = false) {
  dpo::PreferenceLogps l;
  l.policy_chosen = column(pairs, &Pair::pc, requires_grad);
  l.policy_rejected = column(pairs, &Pair::pr, requires_grad);
  l.reference_chosen = column(pairs, &Pair::rc);
  l.reference_rejected = column(pairs, &Pair::rr);
  l.chosen_tokens = counts(pairs, &Pair::nc);
  l.rejected_tokens = counts(pairs, &Pair::nr);
  return l;
}

dpo::LossOptions options(const std::string& type, double beta, double eps) {
  dpo::LossOptions o;
  o.type = type;
  o.beta = beta;
  o.label_smoothing = eps;
  return o;
}

const std::vector<std::string> kLossTypes = {"sigmoid", "ipo", "ipo_sum", "hinge", "robust"};

}  // namespace

TEST_CASE("every loss type matches its closed form, with and without label smoothing", "[loss]") {
  const std::vector<Pair> pairs = random_pairs(7, 9);
  for (const std::string& type : kLossTypes) {
    for (double eps : {0.0, 0.2}) {
      for (double beta : {0.1, 0.5}) {
        CAPTURE(type, eps, beta);
        const at::Tensor losses = dpo::preference_losses(to_logps(pairs), options(type, beta, eps));
        REQUIRE(losses.sizes() == at::IntArrayRef{static_cast<int64_t>(pairs.size())});
        for (size_t i = 0; i < pairs.size(); ++i) {
          const double expected = expected_loss(type, pairs[i], beta, eps);
          CHECK(losses[i].item<double>() == Approx(expected).epsilon(1e-12).margin(1e-12));
        }
      }
    }
  }
}

TEST_CASE("the loss gradient w.r.t. policy log-probs matches central finite differences", "[loss]") {
  const std::vector<Pair> pairs = random_pairs(11, 5);
  const double step = 1e-6;
  for (const std::string& type : kLossTypes) {
    for (double eps : {0.0, 0.15}) {
      CAPTURE(type, eps);
      const dpo::LossOptions opts = options(type, 0.3, eps);
      dpo::PreferenceLogps logps = to_logps(pairs, /*requires_grad=*/true);
      dpo::preference_losses(logps, opts).sum().backward();
      for (size_t i = 0; i < pairs.size(); ++i) {
        for (double Pair::*field : {&Pair::pc, &Pair::pr}) {
          Pair plus = pairs[i], minus = pairs[i];
          plus.*field += step;
          minus.*field -= step;
          const double numeric =
              (expected_loss(type, plus, 0.3, eps) - expected_loss(type, minus, 0.3, eps)) / (2 * step);
          const at::Tensor& grad = field == &Pair::pc ? logps.policy_chosen.grad() : logps.policy_rejected.grad();
          CHECK(grad[i].item<double>() == Approx(numeric).epsilon(1e-6).margin(1e-8));
        }
      }
    }
  }
}

TEST_CASE("the sigmoid loss gradient is the analytic one, and the reference gets none", "[loss]") {
  const std::vector<Pair> pairs = random_pairs(13, 6);
  const double beta = 0.2, eps = 0.1;
  dpo::PreferenceLogps logps = to_logps(pairs, true);
  logps.reference_chosen.set_requires_grad(true);
  dpo::preference_losses(logps, options("sigmoid", beta, eps)).sum().backward();
  const auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  for (size_t i = 0; i < pairs.size(); ++i) {
    const Pair& p = pairs[i];
    const double h = (p.pc - p.rc) - (p.pr - p.rr);
    const double d_dh = -(1 - eps) * beta * sigmoid(-beta * h) + eps * beta * sigmoid(beta * h);
    CHECK(logps.policy_chosen.grad()[i].item<double>() == Approx(d_dh).epsilon(1e-12));
    CHECK(logps.policy_rejected.grad()[i].item<double>() == Approx(-d_dh).epsilon(1e-12));
  }
  CHECK_FALSE(logps.reference_chosen.grad().defined());
}

TEST_CASE("policy equal to reference gives the sigmoid loss ln 2 and zero rewards", "[loss]") {
  std::vector<Pair> pairs = random_pairs(17, 8);
  for (Pair& p : pairs) p.pc = p.rc, p.pr = p.rr;
  dpo::PreferenceLogps logps = to_logps(pairs);
  // float32 as the models produce them: the log-ratios are exactly zero all the same.
  for (at::Tensor* t : {&logps.policy_chosen, &logps.policy_rejected, &logps.reference_chosen,
                        &logps.reference_rejected})
    *t = t->to(at::kFloat);
  for (double eps : {0.0, 0.3}) {
    const dpo::LossOptions opts = options("sigmoid", 0.1, eps);
    const at::Tensor losses = dpo::preference_losses(logps, opts);
    const dpo::PairMetrics m = dpo::pair_metrics(logps, losses, opts);
    for (int64_t i = 0; i < losses.size(0); ++i) {
      CHECK(std::fabs(losses[i].item<double>() - std::log(2.0)) < 1e-7);
      CHECK(m.rewards_chosen[i].item<double>() == 0.0);
      CHECK(m.rewards_rejected[i].item<double>() == 0.0);
      CHECK(m.margins[i].item<double>() == 0.0);
      CHECK(m.accuracies[i].item<double>() == 0.0);
    }
  }
}

TEST_CASE("hinge at zero log-ratio difference is 1", "[loss]") {
  const std::vector<Pair> pairs = {{-10, -20, -10, -20, 3, 4}, {-5, -7, -6, -8, 2, 2}};
  const at::Tensor losses = dpo::preference_losses(to_logps(pairs), options("hinge", 0.1, 0.0));
  CHECK(losses[0].item<double>() == 1.0);
  CHECK(losses[1].item<double>() == 1.0);  // h = 1 - 1 = 0 as well
}

TEST_CASE("ipo divides each log-prob by its token count, ipo_sum does not", "[loss]") {
  // chosen: policy -6 vs reference -12 over 3 tokens; rejected: -10 vs -8 over 5 tokens.
  const std::vector<Pair> pairs = {{-6, -10, -12, -8, 3, 5}};
  const double beta = 0.25;
  const double h_avg = (-6.0 / 3 + 12.0 / 3) - (-10.0 / 5 + 8.0 / 5);  // 2 + 0.4
  const double h = (-6.0 + 12.0) - (-10.0 + 8.0);                      // 8
  const at::Tensor ipo = dpo::preference_losses(to_logps(pairs), options("ipo", beta, 0.0));
  const at::Tensor ipo_sum = dpo::preference_losses(to_logps(pairs), options("ipo_sum", beta, 0.0));
  CHECK(ipo[0].item<double>() == Approx(std::pow(h_avg - 2.0, 2)).epsilon(1e-14));
  CHECK(ipo_sum[0].item<double>() == Approx(std::pow(h - 2.0, 2)).epsilon(1e-14));
}

TEST_CASE("metrics are beta times summed log-ratios for every loss type, detached float64", "[loss]") {
  const std::vector<Pair> pairs = random_pairs(19, 7);
  for (const std::string& type : kLossTypes) {
    CAPTURE(type);
    const dpo::LossOptions opts = options(type, 0.4, 0.0);
    dpo::PreferenceLogps logps = to_logps(pairs, true);
    logps.policy_chosen = logps.policy_chosen.to(at::kFloat);
    logps.policy_rejected = logps.policy_rejected.to(at::kFloat);
    const at::Tensor losses = dpo::preference_losses(logps, opts);
    const dpo::PairMetrics m = dpo::pair_metrics(logps, losses, opts);
    for (const at::Tensor* t : {&m.loss, &m.rewards_chosen, &m.rewards_rejected, &m.accuracies, &m.margins,
                                &m.logps_chosen, &m.logps_rejected}) {
      CHECK(t->scalar_type() == at::kDouble);
      CHECK_FALSE(t->requires_grad());
    }
    for (size_t i = 0; i < pairs.size(); ++i) {
      const double pc = static_cast<float>(pairs[i].pc), pr = static_cast<float>(pairs[i].pr);
      const double rc = 0.4 * (pc - pairs[i].rc), rr = 0.4 * (pr - pairs[i].rr);
      CHECK(m.rewards_chosen[i].item<double>() == Approx(rc).epsilon(1e-12));
      CHECK(m.rewards_rejected[i].item<double>() == Approx(rr).epsilon(1e-12));
      CHECK(m.margins[i].item<double>() == Approx(rc - rr).epsilon(1e-12).margin(1e-12));
      CHECK(m.accuracies[i].item<double>() == (rc > rr ? 1.0 : 0.0));
      CHECK(m.logps_chosen[i].item<double>() == pc);
      CHECK(m.logps_rejected[i].item<double>() == pr);
      CHECK(m.loss[i].item<double>() == losses[i].item<double>());
    }
  }
}

TEST_CASE("an unknown loss type is refused, naming it", "[loss]") {
  CHECK(dpo::parse_loss_type("robust") == dpo::LossType::Robust);
  CHECK(dpo::parse_loss_type("ipo_sum") == dpo::LossType::IpoSum);
  CHECK_THROWS_WITH(dpo::parse_loss_type("kto"), Catch::Contains("'kto'") && Catch::Contains("loss.type"));
  const std::vector<Pair> pairs = random_pairs(23, 2);
  CHECK_THROWS_AS(dpo::preference_losses(to_logps(pairs), options("dpo", 0.1, 0.0)), dpo::Error);
}
