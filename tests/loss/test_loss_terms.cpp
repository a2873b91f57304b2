// The loss types beyond the per-pair ones of test_trl_losses.cpp (bco_pair, aot, aot_unpaired, sft,
// simpo, cpo, unlikelihood), TRL's f-divergence scores, WPO's weights, and lists of weighted loss
// types, each against its formula written out here in plain double (TRL's dpo_trainer.py
// _compute_loss and cpo_trainer.py cpo_loss at HEAD f2cd577), values and finite-difference gradients.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"

#include "dpo/error.h"
#include "dpo/loss/loss.h"
#include "loss/random_pairs.h"

namespace {

double logsigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }

// A batch: the pairs and, per pair, the rejected response's sum of log(1 - p) and WPO's
// length-normalised log-probs of both responses.
struct Batch {
  std::vector<Pair> pairs;
  std::vector<double> unlikelihood, chosen_weight, rejected_weight;
};

Batch random_batch(uint32_t seed, int count) {
  Batch b;
  b.pairs = random_pairs(seed, count);
  for (size_t i = 0; i < b.pairs.size(); ++i) {
    b.unlikelihood.push_back(-0.1 - 0.37 * static_cast<double>(i % 5));
    b.chosen_weight.push_back(-0.2 - 0.11 * static_cast<double>(i % 3));
    b.rejected_weight.push_back(-0.5 + 0.07 * static_cast<double>(i % 4));
  }
  return b;
}

struct Knobs {
  double beta = 0.1, eps = 0.0;
  std::string f = "reverse_kl";
  double f_alpha = 0.5;
  double simpo_gamma = 0.5, cpo_alpha = 1.0;
};

double score(double x, const Knobs& k) {  // TRL's f_divergence_type branch
  if (k.f == "forward_kl") return -std::exp(-x);
  if (k.f == "js_divergence") return logsigmoid(x);
  if (k.f == "alpha_divergence") {
    if (std::abs(k.f_alpha - 1.0) < 1e-6) return x;
    return std::exp(std::min((k.f_alpha - 1.0) * x, 80.0)) / (k.f_alpha - 1.0);
  }
  return x;
}

double smoothed(double x, const Knobs& k) {
  return -logsigmoid(k.beta * x) * (1 - k.eps) - logsigmoid(-k.beta * x) * k.eps;
}

// TRL's per-sequence losses of the whole batch for `type`, written term by term.
std::vector<double> trl_batch_loss(const std::string& type, const Batch& b, const Knobs& k) {
  const size_t n = b.pairs.size();
  double tokens = 0;
  for (const Pair& p : b.pairs) tokens += static_cast<double>(p.nc);
  std::vector<double> out(n);
  if (type == "aot" || type == "aot_unpaired") {
    std::vector<double> x(n), y(n);
    for (size_t i = 0; i < n; ++i) {
      const Pair& p = b.pairs[i];
      x[i] = type == "aot" ? p.pc - p.pr : p.pc - p.rc;
      y[i] = type == "aot" ? p.rc - p.rr : p.pr - p.rr;
    }
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    for (size_t i = 0; i < n; ++i) out[i] = smoothed(x[i] - y[i], k);
    return out;
  }
  for (size_t i = 0; i < n; ++i) {
    const Pair& p = b.pairs[i];
    const double cs = score(p.pc - p.rc, k), rs = score(p.pr - p.rr, k), delta = cs - rs;
    if (type == "sigmoid") out[i] = smoothed(delta, k);
    else if (type == "bco_pair") out[i] = -logsigmoid(k.beta * cs) - logsigmoid(-k.beta * rs);
    else if (type == "ipo") out[i] = std::pow(cs / p.nc - rs / p.nr - 1 / (2 * k.beta), 2);
    else if (type == "sft") out[i] = -p.pc * static_cast<double>(n) / tokens;  // the batch's token mean, per pair
    else if (type == "simpo") out[i] = smoothed(p.pc / p.nc - p.pr / p.nr - k.simpo_gamma / k.beta, k);
    else if (type == "cpo") out[i] = smoothed(p.pc - p.pr, k) + k.cpo_alpha * (-p.pc * static_cast<double>(n) / tokens);
    else if (type == "unlikelihood") out[i] = -p.pc - b.unlikelihood[i];
    else FAIL("no formula written out for " << type);
  }
  return out;
}

at::Tensor column(const std::vector<double>& values, bool requires_grad = false) {
  return at::tensor(values, at::kDouble).set_requires_grad(requires_grad);
}

dpo::PreferenceLogps to_logps(const Batch& b, bool requires_grad) {
  std::vector<double> pc, pr, rc, rr;
  std::vector<int64_t> nc, nr;
  for (const Pair& p : b.pairs) {
    pc.push_back(p.pc), pr.push_back(p.pr), rc.push_back(p.rc), rr.push_back(p.rr);
    nc.push_back(p.nc), nr.push_back(p.nr);
  }
  dpo::PreferenceLogps logps{column(pc, requires_grad), column(pr, requires_grad), column(rc), column(rr),
                             at::tensor(nc, at::kLong),  at::tensor(nr, at::kLong)};
  logps.rejected_unlikelihood = column(b.unlikelihood, requires_grad);
  logps.chosen_weight_logps = column(b.chosen_weight);
  logps.rejected_weight_logps = column(b.rejected_weight);
  return logps;
}

dpo::LossOptions options(const std::string& type, const Knobs& k) {
  dpo::LossOptions o;
  o.type = type;
  o.beta = k.beta;
  o.label_smoothing = k.eps;
  o.f_divergence = k.f;
  o.f_alpha = k.f_alpha;
  o.simpo_gamma = k.simpo_gamma;
  o.cpo_alpha = k.cpo_alpha;
  return o;
}

// Checks values and the gradient in the policy values (and the unlikelihood sums) against central
// differences of the batch's summed formula.
void check_against_formula(const std::string& type, const Batch& batch, const Knobs& k) {
  dpo::PreferenceLogps logps = to_logps(batch, /*requires_grad=*/true);
  const at::Tensor losses = dpo::preference_losses(logps, options(type, k));
  const std::vector<double> expected = trl_batch_loss(type, batch, k);
  REQUIRE(losses.size(0) == static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    CHECK(losses[static_cast<int64_t>(i)].item<double>() == Approx(expected[i]).epsilon(1e-10).margin(1e-12));
  }
  losses.sum().backward();
  const auto total = [&](const Batch& b) {
    const std::vector<double> l = trl_batch_loss(type, b, k);
    return std::accumulate(l.begin(), l.end(), 0.0);
  };
  const double step = 1e-6;
  for (size_t i = 0; i < batch.pairs.size(); ++i) {
    const std::vector<std::pair<const char*, std::function<double&(Batch&)>>> fields = {
        {"policy_chosen", [i](Batch& b) -> double& { return b.pairs[i].pc; }},
        {"policy_rejected", [i](Batch& b) -> double& { return b.pairs[i].pr; }},
        {"rejected_unlikelihood", [i](Batch& b) -> double& { return b.unlikelihood[i]; }},
    };
    const at::Tensor grads[] = {logps.policy_chosen.grad(), logps.policy_rejected.grad(),
                                logps.rejected_unlikelihood.grad()};
    for (size_t f = 0; f < fields.size(); ++f) {
      Batch plus = batch, minus = batch;
      fields[f].second(plus) += step;
      fields[f].second(minus) -= step;
      const double numeric = (total(plus) - total(minus)) / (2 * step);
      const double analytic = grads[f].defined() ? grads[f][static_cast<int64_t>(i)].item<double>() : 0.0;
      CAPTURE(i, fields[f].first);
      const double rounding = 4 * std::abs(total(batch)) * DBL_EPSILON / step;
      CHECK(analytic == Approx(numeric).epsilon(1e-6).margin(1e-8 + rounding));
    }
  }
}

}  // namespace

TEST_CASE("bco_pair, aot, aot_unpaired, sft, simpo, cpo and unlikelihood equal their formulas in double", "[loss]") {
  const Batch batch = random_batch(21, 9);
  for (const std::string type : {"bco_pair", "aot", "aot_unpaired", "sft", "simpo", "cpo", "unlikelihood"}) {
    for (const Knobs& k : {Knobs{}, Knobs{0.5, 0.2, "reverse_kl", 0.5, 1.5, 0.3}}) {
      CAPTURE(type, k.beta, k.eps);
      check_against_formula(type, batch, k);
    }
  }
}

TEST_CASE("loss.f_divergence scores the log-ratios as TRL's f_divergence_type", "[loss]") {
  Batch batch = random_batch(33, 7);
  for (Pair& p : batch.pairs) {  // keep exp(-x) of forward_kl in a range where the sums stay tame
    p.pc = p.rc + (p.pc - p.rc) / 4;
    p.pr = p.rr + (p.pr - p.rr) / 4;
  }
  for (const std::string f : {"forward_kl", "js_divergence", "alpha_divergence"}) {
    for (const double alpha : {0.5, 1.0, 2.0}) {
      if (f != "alpha_divergence" && alpha != 0.5) continue;
      for (const std::string type : {"sigmoid", "bco_pair", "ipo"}) {
        Knobs k;
        k.f = f;
        k.f_alpha = alpha;
        CAPTURE(f, alpha, type);
        check_against_formula(type, batch, k);
      }
    }
  }
}

TEST_CASE("aot's loss depends on the batch only through its sorted values", "[loss]") {
  Batch batch = random_batch(45, 8);
  Batch shuffled = batch;
  std::reverse(shuffled.pairs.begin(), shuffled.pairs.end());
  for (const std::string type : {"aot", "aot_unpaired"}) {
    const double a = dpo::preference_losses(to_logps(batch, false), options(type, {})).sum().item<double>();
    const double b = dpo::preference_losses(to_logps(shuffled, false), options(type, {})).sum().item<double>();
    CHECK(a == Approx(b).epsilon(1e-14));
  }
  CHECK(dpo::couples_pairs(options("sigmoid,aot", {})));
  CHECK_FALSE(dpo::couples_pairs(options("sigmoid,bco_pair", {})));
}

TEST_CASE("a list of loss types is the weighted sum of each, and rpo_alpha adds the chosen NLL", "[loss]") {
  const Batch batch = random_batch(57, 6);
  const Knobs k;
  dpo::LossOptions mpo = options("sigmoid,bco_pair,sft", k);
  mpo.weights = "0.8,0.2,1.0";  // TRL's MPO example
  const at::Tensor mixed = dpo::preference_losses(to_logps(batch, false), mpo);
  const auto single = [&](const std::string& type) { return trl_batch_loss(type, batch, k); };
  const std::vector<double> s = single("sigmoid"), b = single("bco_pair"), f = single("sft");
  for (size_t i = 0; i < s.size(); ++i)
    CHECK(mixed[static_cast<int64_t>(i)].item<double>() == Approx(0.8 * s[i] + 0.2 * b[i] + f[i]).epsilon(1e-12));

  dpo::LossOptions rpo = options("sigmoid", k);
  rpo.rpo_alpha = 0.5;
  dpo::LossOptions listed = options("sigmoid,sft", k);
  listed.weights = "1,0.5";
  CHECK(at::allclose(dpo::preference_losses(to_logps(batch, false), rpo),
                     dpo::preference_losses(to_logps(batch, false), listed), 1e-14, 0));
  const auto terms = dpo::loss_terms(rpo);
  REQUIRE(terms.size() == 2);
  CHECK(terms[1].type == dpo::LossType::Sft);
  CHECK(terms[1].weight == 0.5);
  dpo::LossOptions bad = options("sigmoid,sft", k);
  bad.weights = "1";
  CHECK_THROWS_WITH(dpo::loss_terms(bad), Catch::Contains("loss.weights") && Catch::Contains("2 loss types"));
}

TEST_CASE("use_weighting multiplies each pair's loss by WPO's weight of both responses", "[loss]") {
  const Batch batch = random_batch(69, 6);
  dpo::LossOptions o = options("sigmoid,bco_pair", {});
  o.use_weighting = true;
  dpo::PreferenceLogps logps = to_logps(batch, true);
  const at::Tensor losses = dpo::preference_losses(logps, o);
  const std::vector<double> s = trl_batch_loss("sigmoid", batch, {}), b = trl_batch_loss("bco_pair", batch, {});
  for (size_t i = 0; i < s.size(); ++i) {
    const double w = std::exp(batch.chosen_weight[i]) * std::exp(batch.rejected_weight[i]);
    CHECK(losses[static_cast<int64_t>(i)].item<double>() == Approx(w * (s[i] + b[i])).epsilon(1e-12));
  }
  // The weights are constants of the loss (TRL computes them under no_grad).
  losses.sum().backward();
  CHECK_FALSE(logps.chosen_weight_logps.requires_grad());
}

TEST_CASE("sft's token mean divides by the totals given, so a batch split in parts adds up to the whole", "[loss]") {
  const Batch batch = random_batch(81, 8);
  dpo::PreferenceLogps all = to_logps(batch, false);
  const dpo::LossOptions o = options("sft", {});
  const double whole = dpo::preference_losses(all, o).sum().item<double>();
  dpo::BatchTotals totals{8.0, all.chosen_tokens.sum().item<double>()};
  double parts = 0;
  for (int64_t start : {0, 3}) {
    const int64_t n = start == 0 ? 3 : 5;
    dpo::PreferenceLogps part;
    part.policy_chosen = all.policy_chosen.narrow(0, start, n);
    part.policy_rejected = all.policy_rejected.narrow(0, start, n);
    part.chosen_tokens = all.chosen_tokens.narrow(0, start, n);
    part.rejected_tokens = all.rejected_tokens.narrow(0, start, n);
    parts += dpo::preference_losses(part, o, totals).sum().item<double>();
  }
  CHECK(parts == Approx(whole).epsilon(1e-13));
}

TEST_CASE("the reference-free losses need no reference log-probs, and the others refuse their absence", "[loss]") {
  const Batch batch = random_batch(93, 5);
  dpo::PreferenceLogps logps = to_logps(batch, false);
  logps.reference_chosen = at::Tensor();
  logps.reference_rejected = at::Tensor();
  for (const std::string type : {"simpo", "cpo", "sft", "unlikelihood", "simpo,sft"}) {
    CAPTURE(type);
    CHECK_FALSE(dpo::uses_reference(options(type, {})));
    CHECK(at::isfinite(dpo::preference_losses(logps, options(type, {}))).all().item<bool>());
    // Metrics read the rewards as beta * log-prob (as TRL's CPOTrainer).
    const dpo::PairMetrics m = dpo::pair_metrics(logps, dpo::preference_losses(logps, options(type, {})), options(type, {}));
    CHECK(m.rewards_chosen[0].item<double>() == Approx(0.1 * batch.pairs[0].pc).epsilon(1e-12));
  }
  CHECK(dpo::uses_reference(options("simpo,bco_pair", {})));
  CHECK_THROWS_WITH(dpo::preference_losses(logps, options("sigmoid", {})),
                    Catch::Contains("sigmoid") && Catch::Contains("reference"));
}

TEST_CASE("options no listed loss type reads are named in one warning", "[loss]") {
  dpo::LossOptions o = options("ipo", {});
  CHECK(dpo::unread_loss_options(o).empty());
  o.label_smoothing = 0.1;
  o.simpo_gamma = 1.0;
  const std::string warning = dpo::unread_loss_options(o);
  CHECK_THAT(warning, Catch::Contains("loss.label_smoothing 0.1") && Catch::Contains("loss.simpo_gamma 1") &&
                          Catch::Contains("loss.type ipo"));
  o.type = "ipo,sigmoid,simpo";  // sigmoid reads label_smoothing, simpo its gamma
  CHECK(dpo::unread_loss_options(o).empty());
}
