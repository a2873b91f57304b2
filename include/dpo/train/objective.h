// What one training objective computes: the loss of a micro-batch and its metrics. `dpo train`
// (DPO: the preference loss against a frozen reference) and `dpo sft` (maximum likelihood on
// prompt+chosen with the prompt masked) are the two implementations; everything else of a step
// (batch plan, gradient sync, clipping, the optimizer, checkpoints) is the trainer's (trainer.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dpo/config/config.h"
#include "dpo/data/preference_data.h"
#include "dpo/model/model.h"
#include "dpo/train/metrics.h"

namespace dpo {

class Communicator;

// The forward work of a batch, for the throughput metrics.
struct ForwardWork {
  int64_t tokens = 0;  // prompt + response tokens of every forward row, no padding
  double flops = 0;    // of the whole step: forward, backward and any reference forward
};

class TrainingObjective {
 public:
  virtual ~TrainingObjective() = default;

  // "dpo" | "sft": recorded in checkpoints, which refuse a run of the other objective.
  virtual std::string name() const = 0;
  // The config keys of this objective (beyond those of every run, checkpoint.h's resume_keys)
  // that a resumed run must share with the run that wrote its checkpoint.
  virtual nlohmann::json resume_keys() const = 0;

  // The policy being trained and the datasets, once loaded; kept by reference until the end. DPO
  // loads its frozen reference model here, or checks that the stored reference covers the datasets.
  virtual void attach(CausalLMImpl& policy, const PreferenceDataset& train, const PreferenceDataset* eval) = 0;
  // Called once before the first step of a fresh run with this rank's first micro-batch.
  virtual void before_first_step(const std::vector<int64_t>& first_micro_batch) = 0;

  // Called on every rank at the start of each step with the global batch and this rank's
  // micro-batches of it, before any micro_step: an objective whose loss reads the whole global
  // batch prepares it here (a collective call when it needs the other ranks' values).
  virtual void begin_step(const std::vector<int64_t>& global, const std::vector<std::vector<int64_t>>& micro_batches) {
    (void)global, (void)micro_batches;
  }
  // What the loss of global batch `global` is divided by, so that the gradient does not depend on
  // how the batch is split into micro-batches and ranks.
  virtual double loss_denominator(const std::vector<int64_t>& global) const = 0;
  // Forward, loss (multiplied by `scale`) and backward of the training examples `indices`;
  // returns the metric sums of these examples.
  virtual MetricSums micro_step(const std::vector<int64_t>& indices, double scale) = 0;
  // The names micro_step's sums carry, summed across ranks in this order.
  virtual const std::vector<std::string>& metric_names() const = 0;
  // The step's metrics from the sums of its whole global batch.
  virtual std::map<std::string, double> step_means(const MetricSums& sums) const = 0;
  // The tokens and FLOPs of the step of global batch `global` (for tokens_per_s and mfu).
  virtual ForwardWork forward_work(const std::vector<int64_t>& global) const = 0;

  // The objective's metrics over the whole eval dataset (every rank calls this; every rank gets
  // the totals), under inference mode.
  virtual std::map<std::string, double> evaluate() = 0;
};

// The work of `tokens` forward tokens in `rows` rows (their mean length sets the attention FLOPs),
// each token costing `passes` forwards (a forward and its backward: about 3).
inline ForwardWork forward_work_of(const CausalLMImpl& policy, int64_t tokens, int64_t rows, double passes) {
  const auto mean_row = static_cast<int64_t>(std::lround(static_cast<double>(tokens) / static_cast<double>(rows)));
  return {tokens, passes * policy.forward_flops_per_token(mean_row) * static_cast<double>(tokens)};
}

// DPO: opens the stored reference log-probs, when reference.logps_path is set (refused at once
// unless they match this config: made before the policy is loaded).
std::unique_ptr<TrainingObjective> make_dpo_objective(const Config& config, Communicator& communicator);
std::unique_ptr<TrainingObjective> make_sft_objective(const Config& config, Communicator& communicator);

}  // namespace dpo
