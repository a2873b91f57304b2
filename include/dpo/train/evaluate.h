// `dpo eval`: preference metrics of the policy against the reference over data.eval.
#pragma once
#include <map>
#include <string>

#include "dpo/config/config.h"
#include "dpo/loss/loss.h"
#include "dpo/data/collate.h"
#include "dpo/data/preference_data.h"
#include "dpo/model/model.h"
#include "dpo/train/metrics.h"

namespace dpo {

class Communicator;
class ReferenceStore;
enum class Split;

// Each eval pair's log-probs (float64, in dataset order; reference fields undefined when the loss
// reads none) and its loss, for checking the losses against another implementation.
struct EvalPairValues {
  PreferenceLogps logps;
  at::Tensor losses;
};

// How evaluation batches pairs: this many per forward, collated in this layout.
struct EvalBatching {
  EvalBatching(int64_t pairs, PairLayout layout = PairLayout::Padded) : pairs(pairs), layout(layout) {}  // NOLINT: an int is a batch size
  int64_t pairs;
  PairLayout layout;
};

// Metric sums of `policy` vs `reference` over every pair of `dataset`, in batches of
// `batching.pairs` pairs, under inference mode: each rank scores pairs rank, rank+W, ... and the
// sums are reduced across ranks, so every rank returns the totals.
MetricSums evaluate_pairs(CausalLMImpl& policy, CausalLMImpl& reference, const PreferenceDataset& dataset,
                          const LossOptions& loss, EvalBatching batching, Communicator& communicator,
                          EvalPairValues* per_pair = nullptr);

// The same with the reference log-probs taken from `reference` (split `split`, indexed like
// `dataset`) instead of a reference model.
MetricSums evaluate_pairs(CausalLMImpl& policy, const ReferenceStore& reference, Split split,
                          const PreferenceDataset& dataset, const LossOptions& loss, EvalBatching batching,
                          Communicator& communicator, EvalPairValues* per_pair = nullptr);

// Refuses ranked examples (more than two responses) unless the loss ranks responses (plackett_luce),
// naming `key`, the file and the loss: a pair loss would silently drop the lower ranks.
void require_loss_reads_data(const LossOptions& loss, const char* key, const PreferenceDataset& dataset);

// Rank 0 says that the loss reads no reference, so none is loaded (nor reference.logps_path opened).
void note_reference_unused(const Config& config, Communicator& communicator);

// Loads the models and data.eval named by `config` (with reference.logps_path: the policy only,
// and the file's eval group as the reference), evaluates, writes
// `<run.output_dir>/eval_metrics.json` and `eval_pairs.jsonl` (each pair's log-probs, token counts
// and loss) (rank 0) and returns the means (plus "pairs").
std::map<std::string, double> run_eval(const Config& config, Communicator& communicator, at::Device device);

}  // namespace dpo
