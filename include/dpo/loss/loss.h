// The preference losses (formulas of TRL's DPOTrainer._compute_loss, and the reference-free ones of
// its CPOTrainer and the DPO paper's baselines) and their per-pair metrics. Pure functions of the
// log-prob vectors of a batch (and token counts) and the loss options.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "dpo/config/config.h"
#include "dpo/loss/logps.h"

namespace dpo {

// docs/losses.md has each formula and TRL's source line.
enum class LossType {
  Sigmoid, Ipo, IpoSum, Hinge, Robust, ExoPair, NcaPair, BcoPair, SppoHard, Aot, AotUnpaired, ApoZero, ApoDown,
  Discopop, Sft, SigmoidNorm, Simpo, Cpo, Unlikelihood, PlackettLuce
};
LossType parse_loss_type(const std::string& name);

// One summand of the loss: loss.type's items with loss.weights, and loss.rpo_alpha as an sft term.
struct LossTerm {
  LossType type;
  std::string name;
  double weight = 1.0;
};
std::vector<LossTerm> loss_terms(const LossOptions& options);

// Whether any term reads the reference log-probs (simpo, cpo, sft and unlikelihood do not: with
// only those, no reference model is loaded and no reference file is needed).
bool uses_reference(const LossOptions& options);
// The loss options this config sets that none of its loss types reads (e.g. label_smoothing with
// ipo), as one warning line; "" when every option set is read.
std::string unread_loss_options(const LossOptions& options);

// Whether the loss is the DPO paper's Plackett-Luce objective over K >= 2 ranked responses (the one
// loss that reads ranked data; refused in a list with others by the config's validation).
bool ranks_responses(const LossOptions& options);

// Whether a pair's loss depends on the other pairs of its batch (aot, aot_unpaired sort the batch):
// such losses are computed over the global batch at once (see DpoObjective).
bool couples_pairs(const LossOptions& options);

struct PreferenceLogps {
  PreferenceLogps() = default;
  PreferenceLogps(at::Tensor pc, at::Tensor pr, at::Tensor rc, at::Tensor rr, at::Tensor nc, at::Tensor nr)
      : policy_chosen(std::move(pc)), policy_rejected(std::move(pr)), reference_chosen(std::move(rc)),
        reference_rejected(std::move(rr)), chosen_tokens(std::move(nc)), rejected_tokens(std::move(nr)) {}

  at::Tensor policy_chosen, policy_rejected;        // [B]
  at::Tensor reference_chosen, reference_rejected;  // [B]; undefined without a reference (read as 0)
  at::Tensor chosen_tokens, rejected_tokens;        // [B] scored token counts
  // Only for the terms that read them (PairLogps has the same fields, filled on request):
  at::Tensor rejected_unlikelihood;                     // [B] sum over rejected tokens of log(1 - p)
  at::Tensor chosen_weight_logps, rejected_weight_logps;  // [B] WPO: mean over tokens of log p - log sum_v p_v^2
  // [B, M] the responses ranked below rejected (ranked data, as PairLogps::more): the policy's and
  // the reference's log-probs and the scored tokens, 0 where a pair has fewer than M.
  at::Tensor policy_more, reference_more, more_tokens;
};

// The policy's log-probs and the reference's (null: none) of one batch, as the loss reads them.
PreferenceLogps preference_logps(const PairLogps& policy, const PairLogps* reference);

// What the forwards of the policy must compute for these losses (LD-DPO's weighting, the
// unlikelihood sums, WPO's weights); the reference's forward needs only ld_alpha.
ResponseScoring response_scoring(const LossOptions& options);

// What the sft term's token mean divides by: TRL takes the chosen tokens of its batch; dpo takes
// those of the global batch (the eval set in evaluation), so ranks and micro-batches change nothing.
// Unset (0): the tokens of the batch passed in.
struct BatchTotals {
  double pairs = 0;
  double chosen_tokens = 0;
};

// Per-pair losses [B] (differentiable w.r.t. the policy log-probs): the weighted sum of the terms,
// each as docs/losses.md writes it. The sorting losses (aot, aot_unpaired) pair the sorted values
// of the batch passed in: pass the whole global batch.
at::Tensor preference_losses(const PreferenceLogps& logps, const LossOptions& options, const BatchTotals& totals = {});

// The DPO paper's Plackett-Luce loss (its Appendix A.3, eq. 18) of each row of `rewards` [B, K], the
// implicit rewards beta * (log pi - log pi_ref) of K responses best first, of which `valid` [B, K]
// (bool) marks the real ones (a prefix of each row: rows may rank fewer than K):
//   -sum_{k < K_b} ( r_k - log sum_{j >= k} exp(r_j) ).
// For K = 2 this is -log sigmoid(r_1 - r_2), the sigmoid DPO loss.
at::Tensor plackett_luce_losses(const at::Tensor& rewards, const at::Tensor& valid);

// The implicit rewards of PreferenceLogps as [B, K] (chosen, rejected, more...) and which are real.
struct RankedRewards {
  at::Tensor rewards, valid;
};
RankedRewards ranked_rewards(const PreferenceLogps& logps, double beta);

// Per-pair values of the metrics (TRL names), detached, float64, each [B]:
//   rewards/chosen = beta (pi_c - ref_c), rewards/rejected = beta (pi_r - ref_r) (ref = 0 without
//   a reference, as TRL's CPOTrainer), rewards/accuracies = 1 if rewards/chosen > rewards/rejected
//   (strictly), rewards/margins, logps/chosen = pi_c, logps/rejected = pi_r, loss = the per-pair loss.
// With ranked responses (plackett_luce), "rejected" is the mean over every response below the best,
// an accuracy counts when the best response's reward beats each other's, and two more metrics are
// filled: rewards/ranking_accuracy_pairwise (the share of a row's response pairs in the right order)
// and rewards/ranking_accuracy_full (1 when the whole order is right); for K = 2 both equal the accuracy.
// Added as sums into `sums` (see metrics.h) by the callers.
struct PairMetrics {
  at::Tensor loss, rewards_chosen, rewards_rejected, accuracies, margins, logps_chosen, logps_rejected;
  at::Tensor ranking_pairwise, ranking_full;  // plackett_luce only
};
PairMetrics pair_metrics(const PreferenceLogps& logps, const at::Tensor& losses, const LossOptions& options);

}  // namespace dpo
