// train.gradient_checkpointing at the level of a run: DPO (and SFT) steps with the key on give the
// parameters and metrics of the same run with it off, bit for bit (the same ops on the same data;
// only when the block activations are computed changes).
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
#include "dpo/train/trainer.h"
#include "scratch_dir.h"
#include "tiny_llama.h"

namespace fs = std::filesystem;

namespace {

struct ToyRun {
  ScratchDir dir;
  fs::path model_dir, train_path;

  explicit ToyRun(const std::string& name) : dir(name) {
    model_dir = dir.path / "model";
    train_path = dir.path / "train.jsonl";
    dpo::save_model(*tiny_llama(7), model_dir.string());
    dpo::SyntheticTaskOptions task;
    task.pairs = 24;
    task.vocab_size = 32;
    task.seed = 11;
    dpo::write_preference_jsonl(train_path.string(), dpo::make_synthetic_pairs(task));
  }

  // Two micro-batches per step, so that gradients also accumulate across checkpointed backwards.
  dpo::Config config(const std::string& output_name, bool checkpointing) const {
    const std::string yaml = fmt::format(
        "run: {{output_dir: '{}', seed: 3}}\n"
        "model: {{policy: '{}'}}\n"
        "data: {{train: '{}', max_length: 32, max_prompt_length: 16}}\n"
        "train: {{global_batch_size: 8, micro_batch_size: 4, max_steps: 3, optimizer: adamw, lr: 1.0e-2,\n"
        "         warmup_steps: 0, gradient_checkpointing: {}}}\n",
        (dir.path / output_name).string(), model_dir.string(), train_path.string(), checkpointing);
    return dpo::config_from_yaml_text(yaml, {}, "toy run");
  }
};

std::map<std::string, at::Tensor> parameters_of(const fs::path& model_dir) {
  const dpo::CausalLM model = dpo::load_model(model_dir.string(), at::kFloat);
  std::map<std::string, at::Tensor> out;
  for (const auto& item : model->named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

// The metrics of each logged step, without the measured speeds and memory (which differ by design).
std::vector<nlohmann::json> step_metrics(const fs::path& output_dir) {
  std::ifstream in(output_dir / "metrics.jsonl");
  REQUIRE(in);
  std::vector<nlohmann::json> lines;
  std::string text;
  while (std::getline(in, text)) {
    if (text.empty()) continue;
    nlohmann::json line = nlohmann::json::parse(text);
    for (const char* measured : {"tokens_per_s", "mfu", "peak_memory_mib", "step_time_s", "grad_sync_s"})
      line.erase(measured);
    lines.push_back(line);
  }
  return lines;
}

void require_identical_runs(const ToyRun& toy, const std::string& plain, const std::string& checkpointed) {
  const auto a = parameters_of(toy.dir.path / plain / "final");
  const auto b = parameters_of(toy.dir.path / checkpointed / "final");
  const auto initial = parameters_of(toy.model_dir);
  REQUIRE(a.size() == b.size());
  for (const auto& [name, tensor] : a) {
    INFO(name);
    CHECK_FALSE(at::equal(tensor, initial.at(name)));  // the run moved it: the comparison says something
    CHECK(at::equal(tensor, b.at(name)));
  }
  const auto metrics_a = step_metrics(toy.dir.path / plain);
  CHECK(metrics_a.size() == 3);
  CHECK(metrics_a == step_metrics(toy.dir.path / checkpointed));
}

}  // namespace

TEST_CASE("DPO steps with gradient checkpointing give the parameters of the plain run, bit for bit",
          "[training][checkpointing]") {
  const ToyRun toy("checkpointing_dpo");
  dpo::run_training(toy.config("plain", false), dpo::Objective::Dpo);
  dpo::run_training(toy.config("checkpointed", true), dpo::Objective::Dpo);
  require_identical_runs(toy, "plain", "checkpointed");
}

TEST_CASE("SFT steps with gradient checkpointing give the parameters of the plain run, bit for bit",
          "[training][checkpointing]") {
  const ToyRun toy("checkpointing_sft");
  dpo::run_training(toy.config("plain", false), dpo::Objective::Sft);
  dpo::run_training(toy.config("checkpointed", true), dpo::Objective::Sft);
  require_identical_runs(toy, "plain", "checkpointed");
}
