#include "dpo/loss/loss.h"

#include <cmath>

#include "dpo/error.h"

namespace dpo {

namespace {

// TRL's names (and ipo_sum), in the order of docs/losses.md.
const std::pair<const char*, LossType> kLossNames[] = {
    {"sigmoid", LossType::Sigmoid},   {"ipo", LossType::Ipo},           {"ipo_sum", LossType::IpoSum},
    {"hinge", LossType::Hinge},       {"robust", LossType::Robust},     {"exo_pair", LossType::ExoPair},
    {"nca_pair", LossType::NcaPair},  {"sppo_hard", LossType::SppoHard}, {"apo_zero", LossType::ApoZero},
    {"apo_down", LossType::ApoDown},  {"discopop", LossType::Discopop}, {"sigmoid_norm", LossType::SigmoidNorm},
};

}  // namespace

LossType parse_loss_type(const std::string& name) {
  std::string known;
  for (const auto& [loss_name, type] : kLossNames) {
    if (name == loss_name) return type;
    known += (known.empty() ? "" : ", ") + std::string(loss_name);
  }
  fail("loss.type: unknown loss '{}' (expected one of {})", name, known);
}

namespace {

void check_shapes(const PreferenceLogps& logps) {
  const at::Tensor& reference = logps.policy_chosen;
  if (!reference.defined() || reference.dim() != 1) fail("policy_chosen: expected a [B] tensor");
  const std::pair<const char*, const at::Tensor*> named[] = {
      {"policy_rejected", &logps.policy_rejected},
      {"reference_chosen", &logps.reference_chosen},
      {"reference_rejected", &logps.reference_rejected},
  };
  for (const auto& [name, tensor] : named)
    if (!tensor->defined() || tensor->sizes() != reference.sizes())
      fail("{}: expected [{}] like policy_chosen", name, reference.size(0));
}

// Log-prob divided by its response's token count (TRL's ipo averages every log-prob this way).
at::Tensor per_token(const at::Tensor& logp, const at::Tensor& tokens, const char* name) {
  if (!tokens.defined() || tokens.sizes() != logp.sizes())
    fail("{}: expected [{}] token counts for the length-normalised losses", name, logp.size(0));
  // A response with no scored token has log-prob 0; dividing by 1 keeps it 0 instead of nan.
  return logp / tokens.to(logp.device(), logp.scalar_type()).clamp_min(1);
}

// Chosen-minus-rejected of the per-token log-ratios (TRL's ipo and sigmoid_norm divide each score
// by its completion's token count).
at::Tensor per_token_margin(const PreferenceLogps& logps, const at::Tensor& reference_chosen,
                            const at::Tensor& reference_rejected) {
  return (per_token(logps.policy_chosen, logps.chosen_tokens, "chosen_tokens") -
          per_token(reference_chosen, logps.chosen_tokens, "chosen_tokens")) -
         (per_token(logps.policy_rejected, logps.rejected_tokens, "rejected_tokens") -
          per_token(reference_rejected, logps.rejected_tokens, "rejected_tokens"));
}

// The types that read the chosen and rejected log-ratios c and r separately, not only h = c - r.
at::Tensor per_response_loss(LossType type, const at::Tensor& c, const at::Tensor& r, double beta) {
  switch (type) {
    case LossType::NcaPair:
      return -at::log_sigmoid(beta * c) - 0.5 * at::log_sigmoid(-beta * c) - 0.5 * at::log_sigmoid(-beta * r);
    case LossType::SppoHard:
      return (c - 0.5 / beta).pow(2) + (r + 0.5 / beta).pow(2);
    case LossType::ApoZero:
      return (1.0 - at::sigmoid(beta * c)) + at::sigmoid(beta * r);
    case LossType::ApoDown:
      return at::sigmoid(beta * c) + (1.0 - at::sigmoid(beta * (c - r)));
    default:
      fail("loss.type: internal error, not a per-response loss");
  }
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

}  // namespace

at::Tensor preference_losses(const PreferenceLogps& logps, const LossOptions& options) {
  check_shapes(logps);
  const LossType type = parse_loss_type(options.type);
  const double beta = options.beta;
  const double eps = options.label_smoothing;
  // The reference is a constant of the loss; it never carries gradient back into a model. It may
  // come from the CPU-side store while the policy's log-probs live on the GPU.
  const at::Device device = logps.policy_chosen.device();
  const at::Tensor reference_chosen = logps.reference_chosen.detach().to(device);
  const at::Tensor reference_rejected = logps.reference_rejected.detach().to(device);

  if (type == LossType::Ipo || type == LossType::SigmoidNorm) {
    const at::Tensor h_avg = per_token_margin(logps, reference_chosen, reference_rejected);
    return type == LossType::Ipo ? (h_avg - 1.0 / (2.0 * beta)).pow(2) : -at::log_sigmoid(beta * h_avg);
  }

  const at::Tensor c = logps.policy_chosen - reference_chosen;
  const at::Tensor r = logps.policy_rejected - reference_rejected;
  const at::Tensor h = c - r;
  switch (type) {
    case LossType::Sigmoid:
      return -(1.0 - eps) * at::log_sigmoid(beta * h) - eps * at::log_sigmoid(-beta * h);
    case LossType::Robust:
      return (-(1.0 - eps) * at::log_sigmoid(beta * h) + eps * at::log_sigmoid(-beta * h)) / (1.0 - 2.0 * eps);
    case LossType::Hinge:
      return at::relu(1.0 - beta * h);
    case LossType::IpoSum:
      return (h - 1.0 / (2.0 * beta)).pow(2);
    case LossType::ExoPair:
      if (!(eps > 0)) fail("loss.label_smoothing: must be greater than 0 for loss.type exo_pair, got {}", eps);
      return exo_pair_loss(beta * h, eps);
    case LossType::Discopop:
      return discopop_loss(beta * h, options.discopop_tau);
    case LossType::NcaPair:
    case LossType::SppoHard:
    case LossType::ApoZero:
    case LossType::ApoDown:
      return per_response_loss(type, c, r, beta);
    case LossType::Ipo:
    case LossType::SigmoidNorm:
      break;  // handled above
  }
  fail("loss.type: '{}' has no formula", options.type);
}

PairMetrics pair_metrics(const PreferenceLogps& logps, const at::Tensor& losses, const LossOptions& options) {
  check_shapes(logps);
  // Metrics use the summed log-probs for every loss type (as TRL: rewards are beta * log-ratio).
  const auto as_double = [](const at::Tensor& t) { return t.detach().to(at::kDouble); };
  PairMetrics m;
  m.logps_chosen = as_double(logps.policy_chosen);
  m.logps_rejected = as_double(logps.policy_rejected);
  m.rewards_chosen = options.beta * (m.logps_chosen - as_double(logps.reference_chosen).to(m.logps_chosen.device()));
  m.rewards_rejected =
      options.beta * (m.logps_rejected - as_double(logps.reference_rejected).to(m.logps_rejected.device()));
  m.margins = m.rewards_chosen - m.rewards_rejected;
  m.accuracies = m.rewards_chosen.gt(m.rewards_rejected).to(at::kDouble);
  m.loss = as_double(losses);
  return m;
}

}  // namespace dpo
