#include "dpo/loss/loss.h"

#include "dpo/error.h"

namespace dpo {

LossType parse_loss_type(const std::string& name) {
  if (name == "sigmoid") return LossType::Sigmoid;
  if (name == "ipo") return LossType::Ipo;
  if (name == "ipo_sum") return LossType::IpoSum;
  if (name == "hinge") return LossType::Hinge;
  if (name == "robust") return LossType::Robust;
  fail("loss.type: unknown loss '{}' (expected one of sigmoid, ipo, ipo_sum, hinge, robust)", name);
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
    fail("{}: expected [{}] token counts for the ipo loss", name, logp.size(0));
  // A response with no scored token has log-prob 0; dividing by 1 keeps it 0 instead of nan.
  return logp / tokens.to(logp.device(), logp.scalar_type()).clamp_min(1);
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

  if (type == LossType::Ipo) {
    const at::Tensor h_avg =
        (per_token(logps.policy_chosen, logps.chosen_tokens, "chosen_tokens") -
         per_token(reference_chosen, logps.chosen_tokens, "chosen_tokens")) -
        (per_token(logps.policy_rejected, logps.rejected_tokens, "rejected_tokens") -
         per_token(reference_rejected, logps.rejected_tokens, "rejected_tokens"));
    return (h_avg - 1.0 / (2.0 * beta)).pow(2);
  }

  const at::Tensor h = (logps.policy_chosen - reference_chosen) - (logps.policy_rejected - reference_rejected);
  switch (type) {
    case LossType::Sigmoid:
      return -(1.0 - eps) * at::log_sigmoid(beta * h) - eps * at::log_sigmoid(-beta * h);
    case LossType::Robust:
      return (-(1.0 - eps) * at::log_sigmoid(beta * h) + eps * at::log_sigmoid(-beta * h)) / (1.0 - 2.0 * eps);
    case LossType::Hinge:
      return at::relu(1.0 - beta * h);
    case LossType::IpoSum:
      return (h - 1.0 / (2.0 * beta)).pow(2);
    case LossType::Ipo:
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
