// Checkpoints a Hugging Face user recognises: trainer_state.json carries Hugging Face Trainer's
// fields (global_step, epoch as a fraction, log_history, ...) with dpo's resume state under
// stateful_callbacks.dpo, the optimizer state is not named like a PyTorch pickle, checkpoints of
// the earlier layout still resume, and the final model keeps the dtype the policy is stored in
// unless train.save_dtype says otherwise.
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "catch2_api.h"

#include "dpo/io/json_input.h"
#include "dpo/model/model.h"
#include "dpo/model/safetensors.h"
#include "dpo/train/checkpoint.h"
#include "dpo/train/trainer.h"
#include "toy_run.h"

namespace fs = std::filesystem;
using toy::ToyRun;

namespace {

// The fields of transformers' TrainerState dataclass (src/transformers/trainer_callback.py, as of
// 4.4x-5.x; best_global_step is newer and left out so that older versions load the file too).
const std::set<std::string> kHfTrainerStateFields = {
    "epoch",          "global_step",        "max_steps",          "logging_steps",        "eval_steps",
    "save_steps",     "train_batch_size",   "num_train_epochs",   "num_input_tokens_seen", "total_flos",
    "log_history",    "best_metric",        "best_model_checkpoint", "is_local_process_zero",
    "is_world_process_zero", "is_hyper_param_search", "trial_name", "trial_params", "stateful_callbacks"};

// metrics.jsonl's lines up to `step`, as Hugging Face names them in log_history.
nlohmann::json metrics_up_to(const fs::path& output_dir, int64_t step) {
  std::ifstream in(output_dir / "metrics.jsonl");
  nlohmann::json lines = nlohmann::json::array();
  std::string text;
  while (std::getline(in, text)) {
    nlohmann::json line = nlohmann::json::parse(text);
    if (line["step"].get<int64_t>() > step) continue;
    if (line.contains("lr")) {
      line["learning_rate"] = line["lr"];
      line.erase("lr");
    }
    lines.push_back(line);
  }
  return lines;
}

at::ScalarType stored_dtype(const fs::path& dir) {
  return dpo::read_safetensors((dir / "model.safetensors").string()).tensors.front().second.scalar_type();
}

}  // namespace

TEST_CASE("trainer_state.json has Hugging Face Trainer's fields, and the optimizer state is not named like a pickle",
          "[checkpoint][training]") {
  const ToyRun toy("hf-state", 32);  // 4 steps per epoch
  const std::vector<std::string> run = {"train.max_steps=6", "train.save_every=3", "train.eval_every=3",
                                        "data.eval=" + toy.train_path.string()};
  dpo::run_training(toy.config("out", run), dpo::Objective::Dpo);
  const fs::path step3 = toy.output("out") / "checkpoints" / "step-3";
  const nlohmann::json state = dpo::read_json_file((step3 / "trainer_state.json").string());

  for (const auto& item : state.items()) {
    INFO(item.key());
    CHECK(kHfTrainerStateFields.count(item.key()) == 1);
  }
  CHECK(state.at("global_step") == 3);
  CHECK(state.at("epoch") == 0.75);
  CHECK(state.at("max_steps") == 6);
  CHECK(state.at("num_train_epochs") == 2);  // 6 steps of 4 per epoch span 2 epochs
  CHECK(state.at("logging_steps") == 1);
  CHECK(state.at("eval_steps") == 3);
  CHECK(state.at("save_steps") == 3);
  CHECK(state.at("train_batch_size") == 8);
  CHECK(state.at("is_world_process_zero") == true);
  // log_history: metrics.jsonl up to the checkpoint's step, the eval at step 3 included.
  const nlohmann::json& history = state.at("log_history");
  CHECK(history == metrics_up_to(toy.output("out"), 3));
  REQUIRE(history.size() == 4);
  CHECK(history[0].contains("learning_rate"));
  CHECK(history[3].contains("eval_loss"));
  // Hugging Face's running totals: the tokens each step's metrics count (tokens_per_s x
  // step_time_s), summed; the FLOPs likewise, and more by step 6.
  double tokens = 0;
  for (const nlohmann::json& line : history)
    if (line.contains("tokens_per_s")) tokens += line["tokens_per_s"].get<double>() * line["step_time_s"].get<double>();
  CHECK(state.at("num_input_tokens_seen").get<double>() == Approx(tokens).epsilon(1e-9));
  const nlohmann::json step6 = dpo::read_json_file((toy.output("out") / "checkpoints" / "step-6" / "trainer_state.json").string());
  CHECK(state.at("total_flos").get<double>() > 0);
  CHECK(step6.at("total_flos").get<double>() > state.at("total_flos").get<double>());
  CHECK(step6.at("num_input_tokens_seen").get<int64_t>() > state.at("num_input_tokens_seen").get<int64_t>());
  // What resume needs, where Hugging Face keeps callbacks' state.
  const nlohmann::json& own = state.at("stateful_callbacks").at("dpo").at("attributes");
  CHECK(own.at("step") == 3);
  CHECK(own.at("objective") == "dpo");
  CHECK(dpo::load_trainer_state(step3.string()).step == 3);

  CHECK(fs::is_regular_file(step3 / "optimizer.libtorch"));
  CHECK_FALSE(fs::exists(step3 / "optimizer.pt"));
}

TEST_CASE("a checkpoint of the earlier layout (state at the top level, optimizer.pt) resumes to the same result",
          "[checkpoint][training]") {
  const ToyRun toy("hf-state-old", 32);
  const std::vector<std::string> run = {"train.max_steps=6", "train.save_every=3"};
  dpo::run_training(toy.config("whole", run), dpo::Objective::Dpo);
  dpo::run_training(toy.config("old", run), dpo::Objective::Dpo);

  // Rewrite step 3 as dpo wrote checkpoints before, and drop everything after it.
  const fs::path old = toy.output("old");
  const fs::path step3 = old / "checkpoints" / "step-3";
  const nlohmann::json state = dpo::read_json_file((step3 / "trainer_state.json").string());
  std::ofstream((step3 / "trainer_state.json").string()) << state["stateful_callbacks"]["dpo"]["attributes"].dump(2);
  fs::rename(step3 / "optimizer.libtorch", step3 / "optimizer.pt");
  fs::remove_all(old / "checkpoints" / "step-6");
  fs::remove_all(old / "final");

  const dpo::TrainSummary resumed = dpo::run_training(toy.config("old", run), dpo::Objective::Dpo);
  CHECK(resumed.resumed_from == 3);
  CHECK(toy::not_identical(toy::parameters_of(toy.output("whole") / "final"), toy::parameters_of(old / "final"))
            .empty());
}

TEST_CASE("the final model keeps the dtype the policy is stored in unless train.save_dtype says otherwise",
          "[checkpoint][training][precision]") {
  const ToyRun toy("save-dtype-auto", 16);
  const fs::path bf16_policy = toy.dir.path / "bf16-policy";
  dpo::save_model(*dpo::load_model(toy.model_dir.string(), at::kFloat), bf16_policy.string(), at::kBFloat16);
  REQUIRE(dpo::stored_weights_dtype(bf16_policy.string()) == at::kBFloat16);

  const std::vector<std::string> bf16_run = {"model.policy=" + bf16_policy.string(), "train.max_steps=2",
                                             "train.save_every=2"};
  dpo::run_training(toy.config("auto", bf16_run), dpo::Objective::Dpo);
  CHECK(stored_dtype(toy.output("auto") / "final") == at::kBFloat16);
  CHECK(dpo::read_json_file((toy.output("auto") / "final" / "config.json").string()).at("torch_dtype") == "bfloat16");
  CHECK(stored_dtype(toy.output("auto") / "checkpoints" / "step-2") == at::kFloat);  // exact resume needs these

  auto float32_run = bf16_run;
  float32_run.push_back("train.save_dtype=float32");
  dpo::run_training(toy.config("float32", float32_run), dpo::Objective::Dpo);
  CHECK(stored_dtype(toy.output("float32") / "final") == at::kFloat);

  dpo::run_training(toy.config("fp32-policy", {"train.max_steps=1"}), dpo::Objective::Dpo);
  CHECK(stored_dtype(toy.output("fp32-policy") / "final") == at::kFloat);
}
