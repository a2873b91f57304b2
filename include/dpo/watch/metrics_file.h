// A run's metrics.jsonl read back as curves (for `dpo plot`): every numeric key of the step lines
// as one series, every `eval_<name>` key of the evaluation lines as the eval series `<name>`.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace dpo {

struct MetricSeries {
  std::vector<double> steps, values;  // in the file's order
};

struct RunMetrics {
  std::string dir;                            // the run directory, as given
  std::map<std::string, MetricSeries> train;  // by metrics.jsonl's name: "loss", "rewards/margins", ...
  std::map<std::string, MetricSeries> eval;   // "eval_loss" as "loss", ...
};

// Reads `<run_dir>/metrics.jsonl`. A missing or empty file is an error naming it; a line that is
// not a JSON object with an integer "step" is an error naming file:line. Booleans ("skipped") and
// other non-numbers are not series.
RunMetrics read_run_metrics(const std::string& run_dir);

}  // namespace dpo
