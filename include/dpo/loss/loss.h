// The preference losses (formulas of TRL's DPOTrainer.dpo_loss) and their per-pair
// metrics. Pure functions of four log-prob vectors (and token counts) and the loss options.
#pragma once
#include <ATen/ATen.h>

#include "dpo/config/config.h"

namespace dpo {

// TRL's per-pair loss types (docs/losses.md has each formula and TRL's source line), plus ipo_sum.
enum class LossType {
  Sigmoid, Ipo, IpoSum, Hinge, Robust, ExoPair, NcaPair, SppoHard, ApoZero, ApoDown, Discopop, SigmoidNorm
};
LossType parse_loss_type(const std::string& name);

struct PreferenceLogps {
  at::Tensor policy_chosen, policy_rejected;        // [B]
  at::Tensor reference_chosen, reference_rejected;  // [B]
  at::Tensor chosen_tokens, rejected_tokens;        // [B] scored token counts (ipo, sigmoid_norm)
};

// Per-pair losses [B] (differentiable w.r.t. the policy log-probs). With the log-ratios
// c = pi_c - ref_c, r = pi_r - ref_r, h = c - r, s(x) = sigmoid(x), ls(x) = log sigmoid(x):
//   sigmoid      = -(1-eps) ls(beta h) - eps ls(-beta h)
//   robust       = [-(1-eps) ls(beta h) + eps ls(-beta h)] / (1 - 2 eps)
//   hinge        = max(0, 1 - beta h)
//   ipo          = (h_avg - 1/(2 beta))^2, each log-ratio divided by its response's token count
//   ipo_sum      = (h - 1/(2 beta))^2
//   exo_pair     = s(beta h) [ls(beta h) - log(1-eps)] + s(-beta h) [ls(-beta h) - log eps]   (eps > 0)
//   nca_pair     = -ls(beta c) - ls(-beta c)/2 - ls(-beta r)/2
//   sppo_hard    = (c - 1/(2 beta))^2 + (r + 1/(2 beta))^2
//   apo_zero     = 1 - s(beta c) + s(beta r)
//   apo_down     = s(beta c) + 1 - s(beta h)
//   discopop     = -ls(beta h) (1 - m) + exp(-beta h) m, m = s(beta h / tau)
//   sigmoid_norm = -ls(beta h_avg)
at::Tensor preference_losses(const PreferenceLogps& logps, const LossOptions& options);

// Per-pair values of the metrics (TRL names), detached, float64, each [B]:
//   rewards/chosen = beta (pi_c - ref_c), rewards/rejected = beta (pi_r - ref_r),
//   rewards/accuracies = 1 if rewards/chosen > rewards/rejected (strictly), rewards/margins,
//   logps/chosen = pi_c, logps/rejected = pi_r, loss = the per-pair loss.
// Added as sums into `sums` (see metrics.h) by the callers.
struct PairMetrics {
  at::Tensor loss, rewards_chosen, rewards_rejected, accuracies, margins, logps_chosen, logps_rejected;
};
PairMetrics pair_metrics(const PreferenceLogps& logps, const at::Tensor& losses, const LossOptions& options);

}  // namespace dpo
