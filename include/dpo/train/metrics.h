// Metrics reduced as sums over pairs and a pair count, then divided: means are per pair, never
// per batch, whatever the split into micro-batches or ranks. And the run's metrics.jsonl.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dpo/loss/loss.h"

namespace dpo {

class Communicator;

class MetricSums {
 public:
  void add(const PairMetrics& metrics);        // adds each pair's values under TRL's names
  void add(const std::string& name, double sum);  // a raw sum (count not touched)
  void add(const MetricSums& other);              // another batch's sums and pairs
  void add_pairs(int64_t count) { pairs_ += count; }
  int64_t pairs() const { return pairs_; }
  const std::map<std::string, double>& sums() const { return sums_; }
  double sum(const std::string& name) const;      // 0 for a name never added
  std::map<std::string, double> means() const;  // sum / pairs for each name
  // Names in output order: loss, rewards/chosen, rewards/rejected, rewards/accuracies,
  // rewards/margins, logps/chosen, logps/rejected.
  static const std::vector<std::string>& preference_metric_names();
  // plackett_luce's two more: rewards/ranking_accuracy_pairwise, rewards/ranking_accuracy_full.
  static const std::vector<std::string>& ranking_metric_names();
  // The names the loss's metrics carry: the preference names, and the ranking ones for plackett_luce.
  static std::vector<std::string> metric_names(const LossOptions& loss);

 private:
  std::map<std::string, double> sums_;
  int64_t pairs_ = 0;
};

// Sums the metrics `names` and the pair count across ranks, in place. A name a rank never saw
// (a rank with no pairs in a partial batch) counts as 0 there; every rank passes the same names.
void all_reduce(MetricSums& sums, const std::vector<std::string>& names, Communicator& communicator);

// `<output_dir>/metrics.jsonl`: one JSON object per logged step and per evaluation, appended
// durably. Only the writer (rank 0) touches the file; the other ranks' calls do nothing.
class MetricsLog {
 public:
  // The writer keeps exactly the lines of steps up to `resumed_step`, so that a resumed run's file
  // equals an uninterrupted one's (lines written after the checkpoint by the interrupted run go).
  MetricsLog(const std::string& output_dir, int64_t resumed_step, bool writer);
  // {"step": step, "epoch": epoch, <metrics>..., "skipped": true when the update was skipped}
  void append_step(int64_t step, double epoch, const std::map<std::string, double>& metrics, bool skipped) const;
  // {"step": step, "eval_<name>": value...}
  void append_eval(int64_t step, const std::map<std::string, double>& means) const;
  // The lines of steps up to `step` as Hugging Face Trainer's log_history (`lr` is named
  // `learning_rate` there); empty on the ranks that do not write.
  nlohmann::json log_history(int64_t step) const;

 private:
  void append(const nlohmann::json& line) const;
  std::string path_;
  bool writer_;
};

}  // namespace dpo
