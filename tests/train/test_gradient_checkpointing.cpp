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
#include "dpo/model/model.h"
#include "dpo/train/trainer.h"
#include "toy_run.h"

namespace fs = std::filesystem;
using toy::parameters_of;
using toy::ToyRun;

namespace {

// Two micro-batches per step, so that gradients also accumulate across checkpointed backwards.
dpo::Config run_config(const ToyRun& toy, const std::string& output_name, bool checkpointing) {
  return toy.config(output_name, {"train.micro_batch_size=4", "train.max_steps=3",
                                  fmt::format("train.gradient_checkpointing={}", checkpointing)});
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
  const ToyRun toy("checkpointing_dpo", 24);
  dpo::run_training(run_config(toy, "plain", false), dpo::Objective::Dpo);
  dpo::run_training(run_config(toy, "checkpointed", true), dpo::Objective::Dpo);
  require_identical_runs(toy, "plain", "checkpointed");
}

TEST_CASE("SFT steps with gradient checkpointing give the parameters of the plain run, bit for bit",
          "[training][checkpointing]") {
  const ToyRun toy("checkpointing_sft", 24);
  dpo::run_training(run_config(toy, "plain", false), dpo::Objective::Sft);
  dpo::run_training(run_config(toy, "checkpointed", true), dpo::Objective::Sft);
  require_identical_runs(toy, "plain", "checkpointed");
}
