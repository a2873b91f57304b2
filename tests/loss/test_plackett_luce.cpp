// The DPO paper's Plackett-Luce objective (Appendix A.3): the loss of K ranked responses against the
// product formula written out here in plain double, its gradient against finite differences, K = 2
// against the sigmoid DPO loss, padding of rows that rank fewer responses, and the ranking metrics.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"

#include "dpo/config/config.h"
#include "dpo/loss/loss.h"

namespace {

// -log prod_{k < K} exp(r_k) / sum_{j >= k} exp(r_j), as the paper writes it (eq. 18), in double.
double paper_loss(const std::vector<double>& r) {
  double log_likelihood = 0;
  for (size_t k = 0; k < r.size(); ++k) {
    double tail = 0;
    for (size_t j = k; j < r.size(); ++j) tail += std::exp(r[j]);
    log_likelihood += r[k] - std::log(tail);
  }
  return -log_likelihood;
}

// Random rewards [B, K] and per row a count of real responses in [2, K].
struct Ranked {
  std::vector<std::vector<double>> rewards;
  std::vector<int64_t> counts;
  at::Tensor tensor() const {
    at::Tensor t = at::zeros({static_cast<int64_t>(rewards.size()), static_cast<int64_t>(rewards[0].size())}, at::kDouble);
    for (size_t b = 0; b < rewards.size(); ++b)
      for (size_t k = 0; k < rewards[b].size(); ++k) t[static_cast<int64_t>(b)][static_cast<int64_t>(k)] = rewards[b][k];
    return t;
  }
  at::Tensor valid() const {
    at::Tensor v = at::zeros({static_cast<int64_t>(rewards.size()), static_cast<int64_t>(rewards[0].size())}, at::kBool);
    for (size_t b = 0; b < rewards.size(); ++b) v[static_cast<int64_t>(b)].narrow(0, 0, counts[b]).fill_(true);
    return v;
  }
};

Ranked random_ranked(uint32_t seed, int rows, int k) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> reward(0.0, 3.0);
  std::uniform_int_distribution<int64_t> count(2, k);
  Ranked r;
  for (int b = 0; b < rows; ++b) {
    std::vector<double> row;
    for (int j = 0; j < k; ++j) row.push_back(reward(rng));
    r.rewards.push_back(row);
    r.counts.push_back(count(rng));
  }
  return r;
}

dpo::LossOptions options_of(const char* type, double beta) {
  dpo::LossOptions o;
  o.type = type;
  o.beta = beta;
  return o;
}

}  // namespace

TEST_CASE("plackett_luce equals the paper's product formula on rows of different lengths", "[loss]") {
  const Ranked r = random_ranked(7, 12, 5);
  const at::Tensor losses = dpo::plackett_luce_losses(r.tensor(), r.valid());
  REQUIRE(losses.sizes() == at::IntArrayRef({12}));
  for (size_t b = 0; b < r.rewards.size(); ++b) {
    INFO("row " << b << " with " << r.counts[b] << " responses");
    const std::vector<double> real(r.rewards[b].begin(), r.rewards[b].begin() + r.counts[b]);
    CHECK(losses[static_cast<int64_t>(b)].item<double>() == Approx(paper_loss(real)).epsilon(1e-12));
  }
}

TEST_CASE("plackett_luce at equal rewards is log K!, and padding values change nothing", "[loss]") {
  const at::Tensor zeros = at::zeros({1, 4}, at::kDouble);
  CHECK(dpo::plackett_luce_losses(zeros, at::ones({1, 4}, at::kBool)).item<double>() == Approx(std::log(24.0)).epsilon(1e-14));
  Ranked r = random_ranked(3, 6, 4);
  const at::Tensor before = dpo::plackett_luce_losses(r.tensor(), r.valid());
  for (size_t b = 0; b < r.rewards.size(); ++b)
    for (size_t k = static_cast<size_t>(r.counts[b]); k < 4; ++k) r.rewards[b][k] = 1e3 * static_cast<double>(k + 1);
  CHECK(at::equal(before, dpo::plackett_luce_losses(r.tensor(), r.valid())));
}

TEST_CASE("plackett_luce's gradient matches central finite differences", "[loss]") {
  const Ranked r = random_ranked(11, 5, 4);
  const at::Tensor rewards = r.tensor().requires_grad_(true);
  dpo::plackett_luce_losses(rewards, r.valid()).sum().backward();
  const at::Tensor grad = rewards.grad();
  const double h = 1e-6;
  for (size_t b = 0; b < r.rewards.size(); ++b)
    for (size_t k = 0; k < 4; ++k) {
      INFO("row " << b << " response " << k);
      std::vector<double> plus(r.rewards[b].begin(), r.rewards[b].begin() + r.counts[b]), minus = plus;
      double numeric = 0;  // a padded response has no effect on the loss
      if (k < static_cast<size_t>(r.counts[b])) {
        plus[k] += h;
        minus[k] -= h;
        numeric = (paper_loss(plus) - paper_loss(minus)) / (2 * h);
      }
      CHECK(grad[static_cast<int64_t>(b)][static_cast<int64_t>(k)].item<double>() == Approx(numeric).margin(1e-8));
    }
}

TEST_CASE("plackett_luce with K = 2 is the sigmoid DPO loss, value and gradient", "[loss]") {
  const auto t = [](std::vector<double> v) { return at::tensor(v, at::kDouble); };
  dpo::PreferenceLogps logps(t({-3.0, -10.5, -7.25, -1.0}), t({-4.0, -9.0, -7.25, -6.5}), t({-3.5, -10.0, -7.0, -2.0}),
                             t({-3.9, -9.5, -7.5, -6.0}), at::full({4}, 5, at::kLong), at::full({4}, 6, at::kLong));
  for (double beta : {0.1, 0.5, 2.0}) {
    INFO("beta " << beta);
    dpo::PreferenceLogps a = logps, b = logps;
    a.policy_chosen = logps.policy_chosen.clone().requires_grad_(true);
    b.policy_chosen = logps.policy_chosen.clone().requires_grad_(true);
    const at::Tensor pl = dpo::preference_losses(a, options_of("plackett_luce", beta));
    const at::Tensor sigmoid = dpo::preference_losses(b, options_of("sigmoid", beta));
    CHECK(at::allclose(pl, sigmoid, 1e-14, 1e-15));
    pl.sum().backward();
    sigmoid.sum().backward();
    CHECK(at::allclose(a.policy_chosen.grad(), b.policy_chosen.grad(), 1e-14, 1e-15));
    // K = 2: the ranking accuracies are the accuracy.
    const dpo::PairMetrics m = dpo::pair_metrics(a, pl, options_of("plackett_luce", beta));
    const dpo::PairMetrics s = dpo::pair_metrics(b, sigmoid, options_of("sigmoid", beta));
    CHECK(at::equal(m.accuracies, s.accuracies));
    CHECK(at::equal(m.ranking_pairwise, s.accuracies));
    CHECK(at::equal(m.ranking_full, s.accuracies));
    CHECK(at::allclose(m.rewards_rejected, s.rewards_rejected));
    CHECK_FALSE(s.ranking_pairwise.defined());
  }
}

TEST_CASE("ranked metrics: the best beats all, the share of ordered pairs, the whole order", "[loss]") {
  // Rewards (reference 0, beta 1): row 0 ranked right (3 > 2 > 1 > 0); row 1: 3, 1, 2 and a missing
  // fourth; row 2: 1, 2, 0, 3.
  const auto t = [](std::vector<double> v) { return at::tensor(v, at::kDouble); };
  dpo::PreferenceLogps logps(t({3, 3, 1}), t({2, 1, 2}), at::zeros({3}, at::kDouble), at::zeros({3}, at::kDouble),
                             at::ones({3}, at::kLong), at::ones({3}, at::kLong));
  logps.policy_more = at::tensor(std::vector<double>{1, 0, 2, 0, 0, 3}, at::kDouble).view({3, 2});
  logps.reference_more = at::zeros({3, 2}, at::kDouble);
  logps.more_tokens = at::tensor(std::vector<int64_t>{4, 4, 2, 0, 1, 1}, at::kLong).view({3, 2});
  const dpo::LossOptions o = options_of("plackett_luce", 1.0);
  const at::Tensor losses = dpo::preference_losses(logps, o);
  CHECK(losses[0].item<double>() == Approx(paper_loss({3, 2, 1, 0})).epsilon(1e-12));
  CHECK(losses[1].item<double>() == Approx(paper_loss({3, 1, 2})).epsilon(1e-12));
  const dpo::PairMetrics m = dpo::pair_metrics(logps, losses, o);
  const auto values = [](const at::Tensor& x) { return std::vector<double>(x.data_ptr<double>(), x.data_ptr<double>() + x.numel()); };
  CHECK(values(m.accuracies) == std::vector<double>{1, 1, 0});
  CHECK(values(m.ranking_full) == std::vector<double>{1, 0, 0});
  const std::vector<double> pairwise = values(m.ranking_pairwise);
  CHECK(pairwise[0] == Approx(1.0));
  CHECK(pairwise[1] == Approx(2.0 / 3.0));  // (3,1) (3,2) right, (1,2) wrong
  CHECK(pairwise[2] == Approx(2.0 / 6.0));  // of 1>2, 1>0, 1>3, 2>0, 2>3, 0>3: 1>0 and 2>0 right
  CHECK(values(m.rewards_rejected) == std::vector<double>{1.0, 1.5, 5.0 / 3.0});
}
