// `dpo eval`: preference metrics of the policy against the reference over data.eval.
#pragma once
#include <map>
#include <string>

#include "dpo/config.h"
#include "dpo/metrics.h"
#include "dpo/model.h"
#include "dpo/preference_data.h"

namespace dpo {

// The truncation settings of data.* as a rule.
TruncationRule truncation_rule(const DataOptions& data);

// Metric sums of `policy` vs `reference` over every pair of `dataset`, in batches of
// `batch_size` pairs, under inference mode.
MetricSums evaluate_pairs(CausalLMImpl& policy, CausalLMImpl& reference, const PreferenceDataset& dataset,
                          const LossOptions& loss, int64_t batch_size);

// Loads the models and data.eval named by `config`, evaluates, writes
// `<run.output_dir>/eval_metrics.json` and returns the means (plus "pairs").
std::map<std::string, double> run_eval(const Config& config);

}  // namespace dpo
