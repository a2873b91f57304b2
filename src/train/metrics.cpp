#include "dpo/train/metrics.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/json_input.h"

namespace dpo {

namespace {

double sum_of(const at::Tensor& t) { return t.to(at::kDouble).sum().item<double>(); }

// Keeps exactly the lines of `path` of steps up to `step`.
void truncate_metrics(const std::string& path, int64_t step) {
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j;  // a line that is not (bounded, well-formed) JSON is dropped like a later step's
    try {
      j = parse_json(line, path);
    } catch (const Error&) {
    }
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  write_file_durably(path, kept);
}

}  // namespace

const std::vector<std::string>& MetricSums::preference_metric_names() {
  static const std::vector<std::string> names = {"loss",           "rewards/chosen", "rewards/rejected",
                                                 "rewards/accuracies", "rewards/margins", "logps/chosen",
                                                 "logps/rejected"};
  return names;
}

const std::vector<std::string>& MetricSums::ranking_metric_names() {
  static const std::vector<std::string> names = {"rewards/ranking_accuracy_pairwise", "rewards/ranking_accuracy_full"};
  return names;
}

std::vector<std::string> MetricSums::metric_names(const LossOptions& loss) {
  std::vector<std::string> names = preference_metric_names();
  if (ranks_responses(loss)) names.insert(names.end(), ranking_metric_names().begin(), ranking_metric_names().end());
  return names;
}

void MetricSums::add(const PairMetrics& m) {
  const at::Tensor* values[] = {&m.loss,    &m.rewards_chosen, &m.rewards_rejected, &m.accuracies,
                                &m.margins, &m.logps_chosen,   &m.logps_rejected};
  const auto& names = preference_metric_names();
  for (size_t i = 0; i < names.size(); ++i) sums_[names[i]] += sum_of(*values[i]);
  const at::Tensor* ranking[] = {&m.ranking_pairwise, &m.ranking_full};
  for (size_t i = 0; i < 2; ++i)
    if (ranking[i]->defined()) sums_[ranking_metric_names()[i]] += sum_of(*ranking[i]);
  pairs_ += m.loss.numel();
}

void MetricSums::add(const std::string& name, double sum) { sums_[name] += sum; }

void MetricSums::add(const MetricSums& other) {
  for (const auto& [name, sum] : other.sums_) sums_[name] += sum;
  pairs_ += other.pairs_;
}

double MetricSums::sum(const std::string& name) const {
  const auto it = sums_.find(name);
  return it == sums_.end() ? 0.0 : it->second;
}

std::map<std::string, double> MetricSums::means() const {
  std::map<std::string, double> out;
  for (const auto& [name, sum] : sums_) out[name] = pairs_ > 0 ? sum / static_cast<double>(pairs_) : 0.0;
  return out;
}

void all_reduce(MetricSums& sums, const std::vector<std::string>& names, Communicator& communicator) {
  std::vector<double> values;
  for (const auto& name : names) values.push_back(sums.sum(name));
  values.push_back(static_cast<double>(sums.pairs()));
  communicator.all_reduce_sum(values);
  MetricSums reduced;
  for (size_t i = 0; i < names.size(); ++i) reduced.add(names[i], values[i]);
  reduced.add_pairs(static_cast<int64_t>(std::llround(values.back())));
  sums = reduced;
}

MetricsLog::MetricsLog(const std::string& output_dir, int64_t resumed_step, bool writer)
    : path_((std::filesystem::path(output_dir) / "metrics.jsonl").string()), writer_(writer) {
  if (writer_) truncate_metrics(path_, resumed_step);
}

void MetricsLog::append_step(int64_t step, double epoch, const std::map<std::string, double>& metrics,
                             bool skipped) const {
  nlohmann::json line = {{"step", step}, {"epoch", epoch}};
  for (const auto& [name, value] : metrics) line[name] = value;
  if (skipped) line["skipped"] = true;
  append(line);
}

void MetricsLog::append_eval(int64_t step, const std::map<std::string, double>& means) const {
  nlohmann::json line = {{"step", step}};
  for (const auto& [name, value] : means) line["eval_" + name] = value;
  append(line);
}

nlohmann::json MetricsLog::log_history(int64_t step) const {
  nlohmann::json history = nlohmann::json::array();
  if (!writer_ || !std::filesystem::exists(path_)) return history;
  std::ifstream in(path_);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json entry;  // a line that is not (bounded, well-formed) JSON is left out, as on resume
    try {
      entry = parse_json(line, path_);
    } catch (const Error&) {
      continue;
    }
    if (!entry.is_object() || !entry.contains("step") || !entry["step"].is_number_integer() ||
        entry["step"].get<int64_t>() > step)
      continue;
    if (entry.contains("lr")) {
      entry["learning_rate"] = entry["lr"];
      entry.erase("lr");
    }
    history.push_back(std::move(entry));
  }
  return history;
}

void MetricsLog::append(const nlohmann::json& line) const {
  if (writer_) append_durably(path_, line.dump() + "\n");
}

}  // namespace dpo
