#include "dpo/train/gathered_logps.h"

#include "dpo/dist/dist.h"
#include "dpo/error.h"

namespace dpo {
namespace {

// The columns, in this order: what PreferenceLogps holds.
enum Field {
  kPolicyChosen, kPolicyRejected, kReferenceChosen, kReferenceRejected, kChosenTokens, kRejectedTokens,
  kRejectedUnlikelihood, kChosenWeight, kRejectedWeight, kFields
};

// The [N, M] blocks of the ranked responses below rejected, in this order.
enum MoreField { kPolicyMore, kReferenceMore, kMoreTokens, kMoreFields };

at::Tensor as_double_values(const at::Tensor& t) { return t.detach().to(at::kCPU, at::kDouble).contiguous(); }

}  // namespace

GatheredLogps::GatheredLogps(const std::vector<int64_t>& order, int64_t more_columns) : more_columns_(more_columns) {
  for (size_t i = 0; i < order.size(); ++i)
    if (!position_.emplace(order[i], static_cast<int64_t>(i)).second)
      fail("internal: example {} appears twice in a gathered batch", order[i]);
  values_.assign(kFields * order.size(), 0.0);
  more_.assign(static_cast<size_t>(kMoreFields * more_columns) * order.size(), 0.0);
}

void GatheredLogps::add(const std::vector<int64_t>& indices, const PairLogps& policy, const PairLogps* reference) {
  const std::pair<Field, at::Tensor> columns[] = {
      {kPolicyChosen, policy.chosen},
      {kPolicyRejected, policy.rejected},
      {kReferenceChosen, reference ? reference->chosen : at::Tensor()},
      {kReferenceRejected, reference ? reference->rejected : at::Tensor()},
      {kChosenTokens, policy.chosen_tokens},
      {kRejectedTokens, policy.rejected_tokens},
      {kRejectedUnlikelihood, policy.rejected_unlikelihood},
      {kChosenWeight, policy.chosen_weight_logps},
      {kRejectedWeight, policy.rejected_weight_logps},
  };
  const at::Tensor where = positions(indices);
  const auto n = static_cast<int64_t>(position_.size());
  for (const auto& [field, tensor] : columns) {
    if (!tensor.defined()) continue;
    const at::Tensor values = as_double_values(tensor);
    const auto value = values.accessor<double, 1>();
    const auto at = where.accessor<int64_t, 1>();
    for (int64_t i = 0; i < where.size(0); ++i) values_[static_cast<size_t>(field * n + at[i])] = value[i];
  }
  if (!policy.more.defined() || policy.more.size(1) == 0) return;
  const int64_t m = more_columns_;
  if (policy.more.size(1) > m)
    fail("internal: {} ranked responses below rejected in a batch, but the gathered set holds at most {}", policy.more.size(1), m);
  const std::pair<MoreField, at::Tensor> blocks[] = {
      {kPolicyMore, policy.more},
      {kReferenceMore, reference ? reference->more : at::Tensor()},
      {kMoreTokens, policy.more_tokens},
  };
  for (const auto& [field, tensor] : blocks) {
    if (!tensor.defined()) continue;
    const at::Tensor values = as_double_values(tensor);
    const auto value = values.accessor<double, 2>();
    const auto at = where.accessor<int64_t, 1>();
    for (int64_t i = 0; i < where.size(0); ++i)
      for (int64_t j = 0; j < values.size(1); ++j) more_[static_cast<size_t>((field * n + at[i]) * m + j)] = value[i][j];
  }
}

PreferenceLogps GatheredLogps::all_reduce(Communicator& communicator, bool with_reference) const {
  std::vector<double> summed = values_;
  communicator.all_reduce_sum(summed);
  const auto n = static_cast<int64_t>(position_.size());
  const at::Tensor all = at::tensor(summed, at::kDouble).reshape({kFields, n});
  PreferenceLogps logps;
  logps.policy_chosen = all[kPolicyChosen].clone();
  logps.policy_rejected = all[kPolicyRejected].clone();
  if (with_reference) {
    logps.reference_chosen = all[kReferenceChosen].clone();
    logps.reference_rejected = all[kReferenceRejected].clone();
  }
  logps.chosen_tokens = all[kChosenTokens].to(at::kLong);
  logps.rejected_tokens = all[kRejectedTokens].to(at::kLong);
  logps.rejected_unlikelihood = all[kRejectedUnlikelihood].clone();
  logps.chosen_weight_logps = all[kChosenWeight].clone();
  logps.rejected_weight_logps = all[kRejectedWeight].clone();
  if (more_columns_ == 0) return logps;
  std::vector<double> more = more_;
  communicator.all_reduce_sum(more);
  const at::Tensor blocks = at::tensor(more, at::kDouble).reshape({kMoreFields, n, more_columns_});
  logps.policy_more = blocks[kPolicyMore].clone();
  if (with_reference) logps.reference_more = blocks[kReferenceMore].clone();
  logps.more_tokens = blocks[kMoreTokens].to(at::kLong);
  return logps;
}

at::Tensor GatheredLogps::positions(const std::vector<int64_t>& indices) const {
  std::vector<int64_t> out;
  out.reserve(indices.size());
  for (const int64_t i : indices) {
    const auto it = position_.find(i);
    if (it == position_.end()) fail("internal: example {} is not in the gathered batch", i);
    out.push_back(it->second);
  }
  return at::tensor(out, at::kLong);
}

}  // namespace dpo
