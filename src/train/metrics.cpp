#include "dpo/train/metrics.h"

#include "dpo/dist/dist.h"

#include <cmath>

namespace dpo {

namespace {
double sum_of(const at::Tensor& t) { return t.to(at::kDouble).sum().item<double>(); }
}  // namespace

const std::vector<std::string>& MetricSums::preference_metric_names() {
  static const std::vector<std::string> names = {"loss",           "rewards/chosen", "rewards/rejected",
                                                 "rewards/accuracies", "rewards/margins", "logps/chosen",
                                                 "logps/rejected"};
  return names;
}

void MetricSums::add(const PairMetrics& m) {
  const at::Tensor* values[] = {&m.loss,    &m.rewards_chosen, &m.rewards_rejected, &m.accuracies,
                                &m.margins, &m.logps_chosen,   &m.logps_rejected};
  const auto& names = preference_metric_names();
  for (size_t i = 0; i < names.size(); ++i) sums_[names[i]] += sum_of(*values[i]);
  pairs_ += m.loss.numel();
}

void MetricSums::add(const std::string& name, double sum) { sums_[name] += sum; }

std::map<std::string, double> MetricSums::means() const {
  std::map<std::string, double> out;
  for (const auto& [name, sum] : sums_) out[name] = pairs_ > 0 ? sum / static_cast<double>(pairs_) : 0.0;
  return out;
}

void all_reduce(MetricSums& sums, const std::vector<std::string>& names, Communicator& communicator) {
  std::vector<double> values;
  for (const auto& name : names) values.push_back(sums.sums().count(name) ? sums.sums().at(name) : 0.0);
  values.push_back(static_cast<double>(sums.pairs()));
  communicator.all_reduce_sum(values);
  MetricSums reduced;
  for (size_t i = 0; i < names.size(); ++i) reduced.add(names[i], values[i]);
  reduced.add_pairs(static_cast<int64_t>(std::llround(values.back())));
  sums = reduced;
}

}  // namespace dpo
