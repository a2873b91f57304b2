#include "dpo/loss/loss.h"

#include <cmath>
#include <cstdlib>
#include <sstream>

#include <fmt/format.h>

#include "dpo/error.h"

namespace dpo {

namespace {

// The names of loss.type, in the order of docs/losses.md: TRL's DPOTrainer's, ipo_sum, then the
// reference-free ones.
const std::pair<const char*, LossType> kLossNames[] = {
    {"sigmoid", LossType::Sigmoid},     {"ipo", LossType::Ipo},
    {"ipo_sum", LossType::IpoSum},      {"hinge", LossType::Hinge},
    {"robust", LossType::Robust},       {"exo_pair", LossType::ExoPair},
    {"nca_pair", LossType::NcaPair},    {"bco_pair", LossType::BcoPair},
    {"sppo_hard", LossType::SppoHard},  {"aot", LossType::Aot},
    {"aot_unpaired", LossType::AotUnpaired}, {"apo_zero", LossType::ApoZero},
    {"apo_down", LossType::ApoDown},    {"discopop", LossType::Discopop},
    {"sft", LossType::Sft},             {"sigmoid_norm", LossType::SigmoidNorm},
    {"simpo", LossType::Simpo},         {"cpo", LossType::Cpo},
    {"unlikelihood", LossType::Unlikelihood}, {"plackett_luce", LossType::PlackettLuce},
};

std::vector<std::string> comma_items(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  return items;
}

}  // namespace

LossType parse_loss_type(const std::string& name) {
  std::string known;
  for (const auto& [loss_name, type] : kLossNames) {
    if (name == loss_name) return type;
    known += (known.empty() ? "" : ", ") + std::string(loss_name);
  }
  fail("loss.type: unknown loss '{}' (expected one of {})", name, known);
}

std::vector<LossTerm> loss_terms(const LossOptions& options) {
  const std::vector<std::string> names = comma_items(options.type);
  const std::vector<std::string> weights = comma_items(options.weights);
  if (names.empty()) fail("loss.type: no loss named");
  if (!weights.empty() && weights.size() != names.size())
    fail("loss.weights: {} weights for the {} loss types of loss.type", weights.size(), names.size());
  std::vector<LossTerm> terms;
  for (size_t i = 0; i < names.size(); ++i) {
    LossTerm term{parse_loss_type(names[i]), names[i], 1.0};
    if (!weights.empty()) {
      char* end = nullptr;
      term.weight = std::strtod(weights[i].c_str(), &end);
      if (end != weights[i].c_str() + weights[i].size()) fail("loss.weights: '{}' is not a number", weights[i]);
    }
    terms.push_back(term);
  }
  // RPO (TRL before its loss lists): the chosen response's NLL, token mean, times rpo_alpha.
  if (options.rpo_alpha > 0) terms.push_back({LossType::Sft, "rpo_alpha", options.rpo_alpha});
  return terms;
}

namespace {

bool reads_reference(LossType type) {
  return type != LossType::Simpo && type != LossType::Cpo && type != LossType::Sft && type != LossType::Unlikelihood;
}

}  // namespace

bool uses_reference(const LossOptions& options) {
  for (const LossTerm& term : loss_terms(options))
    if (reads_reference(term.type)) return true;
  return false;
}

std::string unread_loss_options(const LossOptions& options) {
  const std::vector<LossTerm> terms = loss_terms(options);
  const auto any_of = [&](std::initializer_list<LossType> types) {
    for (const LossTerm& term : terms)
      for (const LossType t : types)
        if (term.type == t) return true;
    return false;
  };
  std::vector<std::string> unread;
  if (options.label_smoothing != 0 &&
      !any_of({LossType::Sigmoid, LossType::Robust, LossType::ExoPair, LossType::Aot, LossType::AotUnpaired,
               LossType::Simpo, LossType::Cpo}))
    unread.push_back(fmt::format("loss.label_smoothing {}", options.label_smoothing));
  if (options.simpo_gamma != 0.5 && !any_of({LossType::Simpo}))
    unread.push_back(fmt::format("loss.simpo_gamma {}", options.simpo_gamma));
  if (options.cpo_alpha != 1.0 && !any_of({LossType::Cpo})) unread.push_back(fmt::format("loss.cpo_alpha {}", options.cpo_alpha));
  if (options.discopop_tau != 0.05 && !any_of({LossType::Discopop}))
    unread.push_back(fmt::format("loss.discopop_tau {}", options.discopop_tau));
  if (options.f_alpha != 0.5 && options.f_divergence != "alpha_divergence")
    unread.push_back(fmt::format("loss.f_alpha {} (read only by loss.f_divergence alpha_divergence)", options.f_alpha));
  if (unread.empty()) return "";
  std::string list;
  for (const std::string& u : unread) list += (list.empty() ? "" : ", ") + u;
  return fmt::format("{} set but not read by loss.type {}: no effect", list, options.type);
}

bool ranks_responses(const LossOptions& options) {
  for (const LossTerm& term : loss_terms(options))
    if (term.type == LossType::PlackettLuce) return true;
  return false;
}

bool couples_pairs(const LossOptions& options) {
  for (const LossTerm& term : loss_terms(options))
    if (term.type == LossType::Aot || term.type == LossType::AotUnpaired) return true;
  return false;
}

namespace {

void check_shapes(const PreferenceLogps& logps) {
  const at::Tensor& reference = logps.policy_chosen;
  if (!reference.defined() || reference.dim() != 1) fail("policy_chosen: expected a [B] tensor");
  if (!logps.policy_rejected.defined() || logps.policy_rejected.sizes() != reference.sizes())
    fail("policy_rejected: expected [{}] like policy_chosen", reference.size(0));
  const std::pair<const char*, const at::Tensor*> optional[] = {
      {"reference_chosen", &logps.reference_chosen},
      {"reference_rejected", &logps.reference_rejected},
  };
  for (const auto& [name, tensor] : optional)
    if (tensor->defined() && tensor->sizes() != reference.sizes())
      fail("{}: expected [{}] like policy_chosen", name, reference.size(0));
}

// A field a term needs, checked: defined and [B].
const at::Tensor& needed(const at::Tensor& tensor, const at::Tensor& like, const char* name, const char* for_what) {
  if (!tensor.defined() || tensor.sizes() != like.sizes())
    fail("{}: expected [{}] values for {}", name, like.size(0), for_what);
  return tensor;
}

// The reference side as a constant of the loss: it never carries gradient back into a model, may
// come from the CPU-side store while the policy's log-probs live on the GPU, and is 0 without one.
at::Tensor reference_of(const at::Tensor& reference, const at::Tensor& policy) {
  return reference.defined() ? reference.detach().to(policy.device(), policy.scalar_type()) : at::zeros_like(policy);
}

// Divided by the response's token count; a response with no scored token has log-prob 0, and
// dividing by 1 keeps it 0 instead of nan.
at::Tensor per_token(const at::Tensor& value, const at::Tensor& tokens, const char* name) {
  return value / needed(tokens, value, name, "the length-normalised losses").to(value.device(), value.scalar_type()).clamp_min(1);
}

// The scored tokens of the more_rejected responses ([B, M] like `more`): 0 marks a missing one.
const at::Tensor& needed_more_tokens(const PreferenceLogps& logps, const at::Tensor& more) {
  if (!logps.more_tokens.defined() || logps.more_tokens.sizes() != more.sizes())
    fail("more_tokens: expected [{}, {}] token counts for the ranked responses", more.size(0), more.size(1));
  return logps.more_tokens;
}

// f-DPO: the score of a log-ratio x is f'(exp x) up to constants (TRL's f_divergence_type).
at::Tensor divergence_score(const at::Tensor& x, const LossOptions& options) {
  const std::string& f = options.f_divergence;
  if (f == "reverse_kl") return x;
  if (f == "forward_kl") return -at::exp(-x);
  if (f == "js_divergence") return at::log_sigmoid(x);
  if (f != "alpha_divergence") fail("loss.f_divergence: unknown '{}'", f);
  const double a = options.f_alpha;
  if (std::fabs(a - 1.0) < 1e-6) return x;  // the limit alpha -> 1 is reverse_kl
  // TRL clamps the exponent at 80 so that exp stays finite in float32.
  return at::exp(((a - 1.0) * x).clamp_max(80.0)) / (a - 1.0);
}

// -(1-eps) log sigmoid(beta x) - eps log sigmoid(-beta x): cDPO's label-smoothed logistic loss.
at::Tensor smoothed_logistic(const at::Tensor& x, double beta, double eps) {
  return -(1.0 - eps) * at::log_sigmoid(beta * x) - eps * at::log_sigmoid(-beta * x);
}

// exo_pair: KL from softmax(beta * log-ratios) over {chosen, rejected} to the target (1 - eps, eps).
at::Tensor exo_pair_loss(const at::Tensor& x, double eps) {
  return at::sigmoid(x) * (at::log_sigmoid(x) - std::log1p(-eps)) +
         at::sigmoid(-x) * (at::log_sigmoid(-x) - std::log(eps));
}

// discopop: -log sigmoid(x) (1 - m) + exp(-x) m with m = sigmoid(x / tau). The exponential term is
// computed in log space, exp(-x + log m), so that a large negative x whose weight m underflows to 0
// gives its (tiny) value instead of 0 * inf = nan; the value is TRL's wherever TRL's is finite.
at::Tensor discopop_loss(const at::Tensor& x, double tau) {
  return -at::log_sigmoid(x) * at::sigmoid(-x / tau) + at::exp(-x + at::log_sigmoid(x / tau));
}

// The ascending sort of a batch's values (TRL's aot pairs the k-th smallest with the k-th smallest).
at::Tensor sorted(const at::Tensor& values) { return std::get<0>(values.sort(0)); }

// What every term reads, computed once per call.
struct LossInputs {
  at::Tensor pi_c, pi_r, ref_c, ref_r;  // log-probs
  at::Tensor c, r;                      // log-ratios
  at::Tensor cs, rs, delta;             // their f-divergence scores and the score margin
  double sft_scale = 0;                 // pairs / chosen tokens of the batch the sft term averages over
};

// The chosen response's NLL as a per-pair share of TRL's token mean: -pi_c * pairs / tokens, whose
// mean over the pairs is -sum pi_c / tokens.
at::Tensor sft_term(const LossInputs& in) { return -in.pi_c * in.sft_scale; }

// The terms that read the chosen and rejected log-probs separately, without a reference.
at::Tensor reference_free_term(LossType type, const LossInputs& in, const PreferenceLogps& logps,
                               const LossOptions& options) {
  const double beta = options.beta, eps = options.label_smoothing;
  switch (type) {
    case LossType::Sft:
      return sft_term(in);
    case LossType::Simpo:  // CPOTrainer's simpo: length-normalised log-probs, margin gamma / beta
      return smoothed_logistic(per_token(in.pi_c, logps.chosen_tokens, "chosen_tokens") -
                                   per_token(in.pi_r, logps.rejected_tokens, "rejected_tokens") -
                                   options.simpo_gamma / beta,
                               beta, eps);
    case LossType::Cpo:  // CPOTrainer's sigmoid with its NLL term
      return smoothed_logistic(in.pi_c - in.pi_r, beta, eps) + options.cpo_alpha * sft_term(in);
    case LossType::Unlikelihood:  // the DPO paper's baseline (C.3): log p(chosen) + sum log(1 - p(rejected token))
      return -in.pi_c - needed(logps.rejected_unlikelihood, in.pi_c, "rejected_unlikelihood", "loss.type unlikelihood")
                            .to(in.pi_c.scalar_type());
    default:
      fail("loss.type: internal error, not a reference-free loss");
  }
}

// The terms of the batch's sorted log-ratios (aot, aot_unpaired): per sorted rank, not per pair.
at::Tensor sorted_term(LossType type, const LossInputs& in, const LossOptions& options) {
  const at::Tensor delta = type == LossType::Aot ? sorted(in.pi_c - in.pi_r) - sorted(in.ref_c - in.ref_r)
                                                 : sorted(in.c) - sorted(in.r);
  return smoothed_logistic(delta, options.beta, options.label_smoothing);
}

at::Tensor term_loss(LossType type, const LossInputs& in, const PreferenceLogps& logps, const LossOptions& options) {
  const double beta = options.beta, eps = options.label_smoothing;
  const at::Tensor& d = in.delta;
  switch (type) {
    case LossType::Sigmoid: return smoothed_logistic(d, beta, eps);
    case LossType::Robust:
      return (-(1.0 - eps) * at::log_sigmoid(beta * d) + eps * at::log_sigmoid(-beta * d)) / (1.0 - 2.0 * eps);
    case LossType::Hinge: return at::relu(1.0 - beta * d);
    case LossType::IpoSum: return (d - 1.0 / (2.0 * beta)).pow(2);
    case LossType::Ipo:
    case LossType::SigmoidNorm: {
      const at::Tensor d_avg = per_token(in.cs, logps.chosen_tokens, "chosen_tokens") -
                               per_token(in.rs, logps.rejected_tokens, "rejected_tokens");
      return type == LossType::Ipo ? (d_avg - 1.0 / (2.0 * beta)).pow(2) : -at::log_sigmoid(beta * d_avg);
    }
    case LossType::ExoPair:
      if (!(eps > 0)) fail("loss.label_smoothing: must be greater than 0 for loss.type exo_pair, got {}", eps);
      return exo_pair_loss(beta * d, eps);
    case LossType::Discopop: return discopop_loss(beta * d, options.discopop_tau);
    case LossType::NcaPair:
      return -at::log_sigmoid(beta * in.cs) - 0.5 * at::log_sigmoid(-beta * in.cs) - 0.5 * at::log_sigmoid(-beta * in.rs);
    case LossType::BcoPair: return -at::log_sigmoid(beta * in.cs) - at::log_sigmoid(-beta * in.rs);
    case LossType::SppoHard: return (in.cs - 0.5 / beta).pow(2) + (in.rs + 0.5 / beta).pow(2);
    // The APO terms read the plain log-ratios (apo_down's margin is the score margin), as TRL.
    case LossType::ApoZero: return (1.0 - at::sigmoid(beta * in.c)) + at::sigmoid(beta * in.r);
    case LossType::ApoDown: return at::sigmoid(beta * in.c) + (1.0 - at::sigmoid(beta * d));
    case LossType::Aot:
    case LossType::AotUnpaired: return sorted_term(type, in, options);
    case LossType::Sft:
    case LossType::Simpo:
    case LossType::Cpo:
    case LossType::Unlikelihood: return reference_free_term(type, in, logps, options);
    case LossType::PlackettLuce: {
      const RankedRewards ranked = ranked_rewards(logps, beta);
      return plackett_luce_losses(ranked.rewards, ranked.valid);
    }
  }
  fail("loss.type: '{}' has no formula", options.type);
}

LossInputs loss_inputs(const PreferenceLogps& logps, const LossOptions& options, const BatchTotals& totals) {
  LossInputs in;
  in.pi_c = logps.policy_chosen;
  in.pi_r = logps.policy_rejected;
  in.ref_c = reference_of(logps.reference_chosen, in.pi_c);
  in.ref_r = reference_of(logps.reference_rejected, in.pi_r);
  in.c = in.pi_c - in.ref_c;
  in.r = in.pi_r - in.ref_r;
  in.cs = divergence_score(in.c, options);
  in.rs = divergence_score(in.r, options);
  in.delta = in.cs - in.rs;
  double pairs = totals.pairs, tokens = totals.chosen_tokens;
  if (pairs <= 0 && logps.chosen_tokens.defined()) {
    pairs = static_cast<double>(in.pi_c.size(0));
    tokens = logps.chosen_tokens.sum().item<double>();
  }
  in.sft_scale = tokens > 0 ? pairs / tokens : 0.0;
  return in;
}

// WPO: exp(mean log p - log sum p^2) of each response, a constant weight of the pair's loss.
at::Tensor wpo_weights(const PreferenceLogps& logps, const at::Tensor& like) {
  const at::Tensor wc = needed(logps.chosen_weight_logps, like, "chosen_weight_logps", "loss.use_weighting");
  const at::Tensor wr = needed(logps.rejected_weight_logps, like, "rejected_weight_logps", "loss.use_weighting");
  return (wc.detach() + wr.detach()).exp().to(like.device(), like.scalar_type());
}

}  // namespace

at::Tensor plackett_luce_losses(const at::Tensor& rewards, const at::Tensor& valid) {
  if (rewards.dim() != 2 || rewards.size(1) < 2 || valid.sizes() != rewards.sizes())
    fail("plackett_luce: expected rewards [B, K >= 2] and a valid mask of the same shape, got {} and {}",
         shape_text(rewards.sizes()), shape_text(valid.sizes()));
  // A missing response gets a reward so low that exp() of it is 0 next to any real one, so the
  // tail sums below add nothing for it; its own term is masked. (Not -inf: 0 * inf in the backward.)
  const at::Tensor real = valid.to(rewards.device(), at::kBool);
  const at::Tensor r = rewards.masked_fill(real.logical_not(), -1e9);
  // log sum_{j >= k} exp(r_j): a cumulative log-sum-exp from the last response backwards.
  const at::Tensor tails = r.flip({1}).logcumsumexp(1).flip({1});
  return -((r - tails) * real.to(rewards.scalar_type())).sum(1);
}

RankedRewards ranked_rewards(const PreferenceLogps& logps, double beta) {
  const at::Tensor& pc = logps.policy_chosen;
  std::vector<at::Tensor> policy = {pc.unsqueeze(1), logps.policy_rejected.unsqueeze(1)};
  std::vector<at::Tensor> reference = {reference_of(logps.reference_chosen, pc).unsqueeze(1),
                                       reference_of(logps.reference_rejected, pc).unsqueeze(1)};
  std::vector<at::Tensor> valid = {at::ones({pc.size(0), 2}, pc.options().dtype(at::kBool))};
  if (logps.policy_more.defined() && logps.policy_more.size(1) > 0) {
    const at::Tensor& more = logps.policy_more;
    if (more.dim() != 2 || more.size(0) != pc.size(0)) fail("policy_more: expected [{}, M]", pc.size(0));
    policy.push_back(more.to(pc.scalar_type()));
    reference.push_back(reference_of(logps.reference_more, more.to(pc.scalar_type())));
    valid.push_back(needed_more_tokens(logps, more).to(pc.device()).gt(0));
  }
  return {beta * (at::cat(policy, 1) - at::cat(reference, 1)), at::cat(valid, 1)};
}

PreferenceLogps preference_logps(const PairLogps& policy, const PairLogps* reference) {
  PreferenceLogps logps;
  logps.policy_chosen = policy.chosen;
  logps.policy_rejected = policy.rejected;
  if (reference) {
    logps.reference_chosen = reference->chosen;
    logps.reference_rejected = reference->rejected;
  }
  logps.chosen_tokens = policy.chosen_tokens;
  logps.rejected_tokens = policy.rejected_tokens;
  logps.rejected_unlikelihood = policy.rejected_unlikelihood;
  logps.chosen_weight_logps = policy.chosen_weight_logps;
  logps.rejected_weight_logps = policy.rejected_weight_logps;
  logps.policy_more = policy.more;
  logps.more_tokens = policy.more_tokens;
  if (reference) logps.reference_more = reference->more;
  return logps;
}

ResponseScoring response_scoring(const LossOptions& options) {
  ResponseScoring scoring;
  scoring.ld_alpha = options.ld_alpha;
  scoring.wpo_weights = options.use_weighting;
  for (const LossTerm& term : loss_terms(options))
    if (term.type == LossType::Unlikelihood) scoring.unlikelihood = true;
  return scoring;
}

at::Tensor preference_losses(const PreferenceLogps& logps, const LossOptions& options, const BatchTotals& totals) {
  check_shapes(logps);
  const LossInputs in = loss_inputs(logps, options, totals);
  at::Tensor total;
  for (const LossTerm& term : loss_terms(options)) {
    if (reads_reference(term.type) && !logps.reference_chosen.defined())
      fail("loss.type {}: needs reference log-probs, none given", term.name);
    at::Tensor loss = term_loss(term.type, in, logps, options);
    if (options.use_weighting) loss = loss * wpo_weights(logps, loss);
    loss = term.weight * loss;
    total = total.defined() ? total + loss : loss;
  }
  return total;
}

namespace {

// The metrics of ranked responses (see PairMetrics): "rejected" is every response below the best.
void add_ranking_metrics(const PreferenceLogps& logps, const LossOptions& options, PairMetrics& m) {
  PreferenceLogps detached = logps;
  for (at::Tensor* t : {&detached.policy_chosen, &detached.policy_rejected, &detached.policy_more})
    if (t->defined()) *t = t->detach().to(at::kCPU, at::kDouble);
  for (at::Tensor* t : {&detached.reference_chosen, &detached.reference_rejected, &detached.reference_more, &detached.more_tokens})
    if (t->defined()) *t = t->detach().to(at::kCPU);
  const RankedRewards ranked = ranked_rewards(detached, options.beta);
  const at::Tensor& r = ranked.rewards;                     // [B, K]
  const at::Tensor real = ranked.valid.to(at::kDouble);     // [B, K]
  const int64_t k = r.size(1);
  const at::Tensor below = real.narrow(1, 1, k - 1);        // the responses below the best
  const at::Tensor count = below.sum(1);
  m.rewards_rejected = (r.narrow(1, 1, k - 1) * below).sum(1) / count;
  const at::Tensor policy = at::cat({detached.policy_rejected.unsqueeze(1),
                                     detached.policy_more.defined() ? detached.policy_more : at::zeros({r.size(0), 0}, at::kDouble)}, 1);
  m.logps_rejected = (policy * below).sum(1) / count;
  m.margins = m.rewards_chosen - m.rewards_rejected;
  // Ordered pairs (i < j, both real): right when r_i > r_j strictly.
  const at::Tensor both = real.unsqueeze(2) * real.unsqueeze(1);                 // [B, K, K]
  const at::Tensor upper = at::ones({k, k}, at::kDouble).triu(1).unsqueeze(0);   // i < j
  const at::Tensor pairs = both * upper;
  const at::Tensor right = r.unsqueeze(2).gt(r.unsqueeze(1)).to(at::kDouble) * pairs;
  const at::Tensor first = right.select(1, 0).sum(1);  // pairs (best, j) in order
  m.accuracies = first.eq(count).to(at::kDouble);
  m.ranking_pairwise = right.sum({1, 2}) / pairs.sum({1, 2});
  m.ranking_full = right.sum({1, 2}).eq(pairs.sum({1, 2})).to(at::kDouble);
}

}  // namespace

PairMetrics pair_metrics(const PreferenceLogps& logps, const at::Tensor& losses, const LossOptions& options) {
  check_shapes(logps);
  // Metrics use the summed log-probs for every loss type (as TRL: rewards are beta * log-ratio).
  const auto as_double = [](const at::Tensor& t) { return t.detach().to(at::kDouble); };
  PairMetrics m;
  m.logps_chosen = as_double(logps.policy_chosen);
  m.logps_rejected = as_double(logps.policy_rejected);
  m.rewards_chosen = options.beta * (m.logps_chosen - as_double(reference_of(logps.reference_chosen, m.logps_chosen)));
  m.rewards_rejected =
      options.beta * (m.logps_rejected - as_double(reference_of(logps.reference_rejected, m.logps_rejected)));
  m.margins = m.rewards_chosen - m.rewards_rejected;
  m.accuracies = m.rewards_chosen.gt(m.rewards_rejected).to(at::kDouble);
  m.loss = as_double(losses);
  if (ranks_responses(options)) add_ranking_metrics(logps, options, m);
  return m;
}

}  // namespace dpo
