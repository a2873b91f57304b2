#include "dpo/reference/stored_reference_check.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>

#include "dpo/data/collate.h"
#include "dpo/dist/dist.h"
#include "dpo/loss/logps.h"
#include "dpo/model/precision.h"
#include "dpo/reference/fingerprint.h"

namespace dpo {
namespace {

// Whether model.policy is the model the file was computed from; every rank gets rank 0's answer.
bool policy_is_stored_reference(const Config& config, const ReferenceStore& store, Communicator& communicator) {
  if (std::filesystem::equivalent(config.model.policy, config.model.reference)) return true;
  bool equal_weights = false;
  if (communicator.rank() == 0)
    equal_weights = model_fingerprint(config.model.policy) == store.file().provenance.model_fingerprint;
  return communicator.any(equal_weights);
}

// The largest relative difference between the policy's log-probs of `micro_batch` and the stored ones.
double largest_relative_difference(const ReferenceStore& store, CausalLMImpl& policy, const PreferenceDataset& train,
                                   const std::vector<int64_t>& micro_batch, const ResponseScoring& scoring,
                                   PairLayout layout) {
  policy.eval();
  c10::InferenceMode no_grad;
  const PairBatch batch = collate_pairs(train, micro_batch, layout);
  const PairLogps pol = pair_logps(policy, batch, scoring);
  const PairLogps ref = store.logps(Split::Train, batch.example_indices, policy.device(), batch.more_columns());
  const auto relative = [](const at::Tensor& a, const at::Tensor& b) {
    return ((a.to(at::kDouble) - b.to(at::kDouble)).abs() / b.to(at::kDouble).abs().clamp_min(1.0)).max().item<double>();
  };
  double worst = std::max(relative(pol.chosen, ref.chosen), relative(pol.rejected, ref.rejected));
  if (pol.more.defined() && pol.more.numel() > 0) worst = std::max(worst, relative(pol.more, ref.more));
  policy.train();
  return worst;
}

}  // namespace

void warn_if_stored_reference_differs(const Config& config, const ReferenceStore& store, CausalLMImpl& policy,
                                      const PreferenceDataset& train, const std::vector<int64_t>& micro_batch,
                                      Communicator& communicator) {
  if (!policy_is_stored_reference(config, store, communicator)) return;
  double worst = micro_batch.empty() ? 0.0 : largest_relative_difference(store, policy, train, micro_batch,
                                                                      ResponseScoring{config.loss.ld_alpha},
                                                                      pair_layout_of(config.train));
  worst = communicator.all_reduce_max(worst);
  const double tolerance = logp_relative_tolerance(precision_of(config));
  const ReferenceProvenance& made = store.file().provenance;
  if (worst > tolerance && communicator.rank() == 0)
    fmt::print(stderr,
               "dpo: warning: {}: model.policy == model.reference but stored reference log-probs differ by {:.3g} "
               "(relative, more than {}'s {:g}) from the policy's: was the file computed with other numerics ({} "
               "precision, {} on {})?\n",
               store.path(), worst, config.train.precision, tolerance, made.precision.empty() ? "unrecorded" : made.precision,
               made.dtype, made.device);
}

}  // namespace dpo
