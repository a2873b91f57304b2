// The preference losses (formulas of TRL's DPOTrainer.dpo_loss) and their per-pair
// metrics. Pure functions of four log-prob vectors (and token counts) and the loss options.
#pragma once
#include <ATen/ATen.h>

#include "dpo/config/config.h"

namespace dpo {

enum class LossType { Sigmoid, Ipo, IpoSum, Hinge, Robust };
LossType parse_loss_type(const std::string& name);

struct PreferenceLogps {
  at::Tensor policy_chosen, policy_rejected;        // [B]
  at::Tensor reference_chosen, reference_rejected;  // [B]
  at::Tensor chosen_tokens, rejected_tokens;        // [B] scored token counts (used by ipo)
};

// Per-pair losses [B] (differentiable w.r.t. the policy log-probs). With
// h = (pi_c - ref_c) - (pi_r - ref_r):
//   sigmoid = -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
//   robust  = [-(1-eps) log sigmoid(beta h) + eps log sigmoid(-beta h)] / (1 - 2 eps)
//   hinge   = max(0, 1 - beta h)
//   ipo     = (h_avg - 1/(2 beta))^2, each log-ratio divided by its response's token count
//   ipo_sum = (h - 1/(2 beta))^2
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
