#include "dpo/train/tensorboard_log.h"

#include <filesystem>
#include <sstream>
#include <utility>
#include <vector>

namespace dpo {
namespace {

// Each line indented by four spaces: the text plugin renders Markdown, where that is a code block,
// so the YAML keeps its lines and indentation.
std::string as_markdown_code(const std::string& text) {
  std::istringstream lines(text);
  std::string out, line;
  while (std::getline(lines, line)) out += "    " + line + "\n";
  return out;
}

std::vector<std::pair<std::string, double>> prefixed(const std::string& prefix,
                                                     const std::map<std::string, double>& values) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& [name, value] : values) out.emplace_back(prefix + name, value);
  return out;
}

}  // namespace

std::string tensorboard_dir(const std::string& output_dir) {
  return (std::filesystem::path(output_dir) / "tensorboard").string();
}

TensorBoardLog::TensorBoardLog(const Config& config, int64_t resumed_step, bool writer) {
  if (!writer || !config.run.tensorboard) return;
  events_.emplace(tensorboard_dir(config.run.output_dir));
  if (resumed_step > 0) events_->add_session_start(resumed_step + 1);
  events_->add_text(resumed_step, "config", as_markdown_code(dump_config(config)));
}

void TensorBoardLog::log_step(int64_t step, double epoch, const std::map<std::string, double>& metrics) const {
  if (!events_) return;
  auto values = prefixed("train/", metrics);
  values.emplace_back("train/epoch", epoch);
  events_->add_scalars(step, values);
}

void TensorBoardLog::log_eval(int64_t step, const std::map<std::string, double>& means) const {
  if (events_) events_->add_scalars(step, prefixed("eval/", means));
}

}  // namespace dpo
