// The training-level tests' toy run: a tiny Llama saved as a model directory, synthetic
// preference pairs as JSONL, the YAML of a run on them, and readers of what a run wrote
// (metrics.jsonl lines, saved parameters) with comparisons of parameter sets.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/config/config.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/model/model.h"
#include "scratch_dir.h"
#include "tiny_llama.h"

namespace toy {

namespace fs = std::filesystem;

constexpr int64_t kVocab = 32;

// A scratch directory with a tiny model (`model/`) and synthetic pairs (`train.jsonl`), and the
// YAML of a run on them; each test adds its own keys with `--set`-style overrides.
struct ToyRun {
  ScratchDir dir;
  fs::path model_dir, train_path;

  explicit ToyRun(const std::string& name, int64_t pairs = 32) : dir(name) {
    model_dir = dir.path / "model";
    train_path = dir.path / "train.jsonl";
    dpo::save_model(*tiny_llama(7), model_dir.string());
    dpo::SyntheticTaskOptions task;
    task.pairs = pairs;
    task.vocab_size = kVocab;
    task.seed = 11;
    dpo::write_preference_jsonl(train_path.string(), dpo::make_synthetic_pairs(task));
  }

  fs::path output(const std::string& name) const { return dir.path / name; }

  dpo::Config config(const std::string& output_name, const std::vector<std::string>& overrides = {}) const {
    const std::string yaml = fmt::format(
        "run: {{output_dir: '{}', seed: 3}}\n"
        "model: {{policy: '{}'}}\n"
        "data: {{train: '{}', max_length: 32, max_prompt_length: 16}}\n"
        "train: {{global_batch_size: 8, micro_batch_size: 8, epochs: 1, optimizer: adamw, lr: 1.0e-2,\n"
        "         warmup_steps: 0, lr_scheduler: constant, shuffle: true}}\n",
        output(output_name).string(), model_dir.string(), train_path.string());
    return dpo::config_from_yaml_text(yaml, overrides, "toy run");
  }
};

// The training-step lines of metrics.jsonl (eval lines carry eval_* keys and no loss).
inline std::vector<nlohmann::json> step_lines(const fs::path& output_dir) {
  std::ifstream in(output_dir / "metrics.jsonl");
  REQUIRE(in);
  std::vector<nlohmann::json> lines;
  std::string text;
  while (std::getline(in, text)) {
    if (text.empty()) continue;
    const nlohmann::json line = nlohmann::json::parse(text);
    if (line.contains("loss")) lines.push_back(line);
  }
  return lines;
}

inline std::vector<nlohmann::json> eval_lines(const fs::path& output_dir) {
  std::ifstream in(output_dir / "metrics.jsonl");
  std::vector<nlohmann::json> lines;
  std::string text;
  while (std::getline(in, text)) {
    if (text.empty()) continue;
    const nlohmann::json line = nlohmann::json::parse(text);
    if (line.contains("eval_loss")) lines.push_back(line);
  }
  return lines;
}

inline std::map<std::string, at::Tensor> parameters_of(const fs::path& model_dir) {
  const dpo::CausalLM model = dpo::load_model(model_dir.string(), at::kFloat);
  std::map<std::string, at::Tensor> out;
  for (const auto& item : model->named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

// Names of the tensors that differ between two parameter sets (empty when all match); a size
// mismatch of the sets shows as a "<count>" entry.
template <typename Same>
std::vector<std::string> differing(const std::map<std::string, at::Tensor>& a,
                                   const std::map<std::string, at::Tensor>& b, Same same) {
  std::vector<std::string> names;
  if (a.size() != b.size()) names.push_back("<count>");
  for (const auto& [name, tensor] : a) {
    const auto other = b.find(name);
    if (other == b.end() || !same(tensor, other->second)) names.push_back(name);
  }
  return names;
}

inline std::vector<std::string> not_identical(const std::map<std::string, at::Tensor>& a,
                                       const std::map<std::string, at::Tensor>& b) {
  return differing(a, b, [](const at::Tensor& x, const at::Tensor& y) { return at::equal(x, y); });
}

inline std::vector<std::string> not_close(const std::map<std::string, at::Tensor>& a,
                                   const std::map<std::string, at::Tensor>& b) {
  return differing(a, b, [](const at::Tensor& x, const at::Tensor& y) { return at::allclose(x, y, 1e-5, 1e-6); });
}

}  // namespace toy
