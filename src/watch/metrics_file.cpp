#include "dpo/watch/metrics_file.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/error.h"
#include "dpo/io/json_input.h"

namespace dpo {

RunMetrics read_run_metrics(const std::string& run_dir) {
  const std::string path = (std::filesystem::path(run_dir) / "metrics.jsonl").string();
  std::ifstream in(path);
  if (!in) fail("{}: cannot open (is {} a run's output directory?)", path, run_dir);
  RunMetrics run;
  run.dir = run_dir;
  std::string line;
  size_t number = 0, lines = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, number);
    const nlohmann::json j = parse_json(line, where);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer())
      fail("{}: expected a JSON object with an integer \"step\"", where);
    const auto step = static_cast<double>(j["step"].get<int64_t>());
    ++lines;
    for (const auto& [key, value] : j.items()) {
      if (key == "step" || !value.is_number()) continue;  // is_number is false for booleans
      const bool eval = key.rfind("eval_", 0) == 0;
      MetricSeries& series = eval ? run.eval[key.substr(5)] : run.train[key];
      series.steps.push_back(step);
      series.values.push_back(value.get<double>());
    }
  }
  if (in.bad()) fail("{}: read error", path);
  if (lines == 0) fail("{}: no metrics yet (the file is empty)", path);
  return run;
}

}  // namespace dpo
