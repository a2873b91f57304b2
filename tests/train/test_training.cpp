// The training loop's contract, end to end on a tiny Llama and the synthetic preference task:
// the DPO loss starts at ln 2 and falls, micro-batch accumulation does not change the update,
// resuming continues bit-identically, checkpoints reload exactly, SFT lowers the NLL (checked
// against a float64 recomputation), non-finite steps stop or are skipped, changed resume keys are
// refused, and the logged learning rate follows the schedule.
#include <atomic>
#include <csignal>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <ATen/ATen.h>
#include "catch2_api.h"
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/autograd.h>

#include "dpo/config/config.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/io/json_input.h"
#include "dpo/dist/dist.h"
#include "dpo/model/model.h"
#include "dpo/runtime/preemption.h"
#include "dpo/train/optimization.h"
#include "dpo/train/trainer.h"
#include "float_rounding.h"
#include "scratch_dir.h"
#include "stop_signal.h"
#include "tiny_llama.h"
#include "toy_run.h"

namespace fs = std::filesystem;
using namespace toy;  // ToyRun and the readers of what a run wrote (toy_run.h)

namespace {

// Mean NLL per scored response token of prompt+chosen, recomputed in float64 one example at a
// time (no padding, no batching): the independent check of what SFT minimises.
double chosen_nll_float64(const fs::path& model_dir, const fs::path& data_path) {
  const dpo::CausalLM model = dpo::load_model(model_dir.string(), at::kFloat);
  model->eval();
  at::NoGradGuard no_grad;
  std::ifstream in(data_path);
  double nll = 0, tokens = 0;
  std::string text;
  while (std::getline(in, text)) {
    if (text.empty()) continue;
    const nlohmann::json row = nlohmann::json::parse(text);
    const auto prompt = row.at("prompt_input_ids").get<std::vector<int64_t>>();
    const auto chosen = row.at("chosen_input_ids").get<std::vector<int64_t>>();
    std::vector<int64_t> ids = prompt;
    ids.insert(ids.end(), chosen.begin(), chosen.end());
    const at::Tensor logits = model->forward(at::tensor(ids, at::kLong).unsqueeze(0)).squeeze(0).to(at::kDouble);
    const at::Tensor logp = at::log_softmax(logits, -1);
    for (size_t t = std::max<size_t>(prompt.size(), 1); t < ids.size(); ++t) {
      nll -= logp[static_cast<int64_t>(t - 1)][ids[t]].item<double>();
      tokens += 1;
    }
  }
  REQUIRE(tokens > 0);
  return nll / tokens;
}

bool any_done_marker(const fs::path& output_dir) {
  const fs::path checkpoints = output_dir / "checkpoints";
  if (!fs::exists(checkpoints)) return false;
  for (const auto& entry : fs::recursive_directory_iterator(checkpoints))
    if (entry.path().filename() == "DONE") return true;
  return false;
}

}  // namespace

TEST_CASE("DPO loss falls on a toy set", "[training]") {
  const ToyRun toy("loss-falls", 32);
  const dpo::TrainSummary summary = dpo::run_training(toy.config("out", {"train.epochs=4"}), dpo::Objective::Dpo);
  REQUIRE(summary.steps == 16);  // 32 pairs / 8 per step x 4 epochs
  CHECK(summary.resumed_from == 0);

  const std::vector<nlohmann::json> lines = step_lines(toy.output("out"));
  REQUIRE(lines.size() == 16);
  for (size_t i = 0; i < lines.size(); ++i) CHECK(lines[i].at("step").get<int64_t>() == static_cast<int64_t>(i + 1));

  // Step 1's metrics are computed before its update, with the policy equal to the reference: the
  // same forward twice, so the log-ratios are exactly 0 (docs/numerics.md: bit-identical).
  const nlohmann::json& first = lines.front();
  CHECK(first.at("loss").get<double>() == Approx(std::log(2.0)).margin(1e-6));
  CHECK(first.at("rewards/margins").get<double>() == 0.0);
  CHECK(first.at("rewards/chosen").get<double>() == 0.0);
  CHECK(first.at("rewards/rejected").get<double>() == 0.0);
  CHECK(first.at("rewards/accuracies").get<double>() == 0.0);  // a tie is not a win

  double last_epoch = 0;
  for (size_t i = 12; i < 16; ++i) last_epoch += lines[i].at("loss").get<double>() / 4.0;
  INFO("first step loss " << first.at("loss").get<double>() << ", mean of the last epoch " << last_epoch);
  CHECK(last_epoch < first.at("loss").get<double>() - 0.05);
  CHECK(lines.back().at("rewards/margins").get<double>() > 0.0);
}

TEST_CASE("a global batch of 8 as 1x8 and as 4x2 micro-batches gives the same parameters", "[training]") {
  const ToyRun toy("accumulation", 24);
  // 1x8 and 4x2 are other batch compositions (other padding, other matrix shapes), so the results
  // are equal to float rounding, not bit-identical (docs/numerics.md). SGD: its update is linear in
  // the gradient, so it stays within the gradients' tolerance. Adam and RMSprop divide by sqrt(v)
  // and turn the rounding of near-zero gradient entries into differences of up to lr (seen here:
  // 1e-6 at lr 1e-2 after 3 steps), which says nothing about accumulation.
  const std::vector<std::string> common = {"train.max_steps=3", "train.optimizer=sgd", "train.lr=1.0"};
  auto whole_overrides = common, split_overrides = common;
  whole_overrides.push_back("train.micro_batch_size=8");
  split_overrides.push_back("train.micro_batch_size=2");
  dpo::run_training(toy.config("whole", whole_overrides), dpo::Objective::Dpo);
  dpo::run_training(toy.config("split", split_overrides), dpo::Objective::Dpo);

  const auto whole = parameters_of(toy.output("whole") / "final");
  const auto split = parameters_of(toy.output("split") / "final");
  const auto initial = parameters_of(toy.model_dir);
  REQUIRE(split.size() == whole.size());
  for (const auto& [name, tensor] : whole) {
    INFO(name);
    // The updates (parameters - initial) agree per tensor in the 2-norm.
    CHECK(float_rounding::normwise_relative_difference(split.at(name) - initial.at(name), tensor - initial.at(name)) <
          float_rounding::kGradientRelative);
  }
  // The runs did move the parameters, so the comparison above says something.
  CHECK(not_close(whole, initial).size() > whole.size() / 2);

  const auto a = step_lines(toy.output("whole"));
  const auto b = step_lines(toy.output("split"));
  REQUIRE(a.size() == 3);
  REQUIRE(b.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    for (const char* key : {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                            "logps/chosen", "logps/rejected"}) {
      INFO("step " << i + 1 << " " << key);
      CHECK(a[i].at(key).get<double>() == Approx(b[i].at(key).get<double>())
                                              .epsilon(float_rounding::kForwardRelative)
                                              .margin(float_rounding::kForwardAbsolute));
    }
    // The norm of the whole gradient: within the gradients' tolerance.
    CHECK(a[i].at("grad_norm").get<double>() ==
          Approx(b[i].at("grad_norm").get<double>()).epsilon(float_rounding::kGradientRelative));
  }
}

TEST_CASE("resuming equals an uninterrupted run (bit-identical on CPU)", "[training]") {
  const ToyRun toy("resume", 24);
  const std::vector<std::string> base = {"train.save_every=2", "train.epochs=2"};
  auto with_steps = [&](int64_t steps) {
    auto overrides = base;
    overrides.push_back(fmt::format("train.max_steps={}", steps));
    return overrides;
  };
  // The interrupted runs are modelled as shorter runs continued to 4 steps: a change of max_steps
  // that resume refuses unless named (as --allow-changed train.max_steps does).
  auto continued = [&](const char* name) {
    dpo::Config config = toy.config(name, with_steps(4));
    config.allow_changed = {"train.max_steps"};
    return config;
  };

  const dpo::TrainSummary uninterrupted = dpo::run_training(toy.config("a", with_steps(4)), dpo::Objective::Dpo);
  CHECK(uninterrupted.resumed_from == 0);
  CHECK(uninterrupted.steps == 4);

  const dpo::TrainSummary first_half = dpo::run_training(toy.config("b", with_steps(2)), dpo::Objective::Dpo);
  CHECK(first_half.steps == 2);
  CHECK_THROWS_WITH(dpo::run_training(toy.config("b", with_steps(4)), dpo::Objective::Dpo),
                    Catch::Contains("train.max_steps 2 -> 4"));
  const dpo::TrainSummary resumed = dpo::run_training(continued("b"), dpo::Objective::Dpo);
  CHECK(resumed.resumed_from == 2);
  CHECK(resumed.steps == 4);

  // A run killed after step 3 but before its checkpoint: metrics.jsonl already has step 3's line,
  // the newest checkpoint is step 2. The resumed run must drop that line and log step 3 again.
  const dpo::TrainSummary killed = dpo::run_training(toy.config("c", with_steps(3)), dpo::Objective::Dpo);
  CHECK(killed.steps == 3);
  fs::remove_all(toy.output("c") / "checkpoints" / "step-3");
  fs::remove_all(toy.output("c") / "final");
  CHECK(step_lines(toy.output("c")).size() == 3);
  const dpo::TrainSummary after_kill = dpo::run_training(continued("c"), dpo::Objective::Dpo);
  CHECK(after_kill.resumed_from == 2);

  const auto final_a = parameters_of(toy.output("a") / "final");
  const auto a = step_lines(toy.output("a"));
  REQUIRE(a.size() == 4);
  const std::set<std::string> timing = {"tokens_per_s", "mfu", "peak_memory_mib", "step_time_s", "grad_sync_s"};
  for (const char* run : {"b", "c"}) {
    INFO("run " << run);
    CHECK(not_identical(final_a, parameters_of(toy.output(run) / "final")).empty());
    const auto b = step_lines(toy.output(run));
    REQUIRE(b.size() == 4);  // no step duplicated or missing in the resumed run's file
    for (size_t i = 0; i < 4; ++i) {
      CHECK(b[i].at("step").get<int64_t>() == static_cast<int64_t>(i + 1));
      std::set<std::string> keys_a, keys_b;
      for (const auto& item : a[i].items()) keys_a.insert(item.key());
      for (const auto& item : b[i].items()) keys_b.insert(item.key());
      CHECK(keys_a == keys_b);
      for (const auto& key : keys_a) {
        if (timing.count(key) || !b[i].contains(key)) continue;
        INFO("step " << i + 1 << " " << key << ": " << a[i][key].dump() << " vs " << b[i][key].dump());
        CHECK(a[i][key] == b[i][key]);
      }
    }
  }
  // Hugging Face's running totals (trainer_state.json) go on counting across a resume.
  auto totals = [&](const char* run) {
    const nlohmann::json state =
        dpo::read_json_file((toy.output(run) / "checkpoints" / "step-4" / "trainer_state.json").string());
    return std::make_pair(state.at("num_input_tokens_seen").get<int64_t>(), state.at("total_flos").get<double>());
  };
  CHECK(totals("a").first > 0);
  CHECK(totals("a").second > 0);
  CHECK(totals("b") == totals("a"));
  CHECK(totals("c") == totals("a"));
}

TEST_CASE("a checkpoint reloads to identical parameters", "[training]") {
  const ToyRun toy("reload", 24);
  const dpo::TrainSummary summary =
      dpo::run_training(toy.config("out", {"train.save_every=1", "train.epochs=1"}), dpo::Objective::Dpo);
  REQUIRE(summary.steps == 3);
  const fs::path checkpoints = toy.output("out") / "checkpoints";
  REQUIRE(fs::exists(checkpoints / "step-3" / "DONE"));
  const auto final_parameters = parameters_of(summary.final_model_dir);
  CHECK(not_identical(parameters_of(checkpoints / "step-3"), final_parameters).empty());
  // The previous checkpoint (kept: keep_checkpoints defaults to 2) holds other, earlier parameters.
  REQUIRE(fs::exists(checkpoints / "step-2" / "DONE"));
  CHECK(not_identical(parameters_of(checkpoints / "step-2"), final_parameters).size() > final_parameters.size() / 2);
  CHECK_FALSE(fs::exists(checkpoints / "step-1"));
}

TEST_CASE("SFT lowers the NLL on its data", "[training]") {
  const ToyRun toy("sft", 32);
  const dpo::Config config = toy.config(
      "out", {"train.epochs=8", "train.eval_every=32", fmt::format("data.eval={}", toy.train_path.string())});
  const double before = chosen_nll_float64(toy.model_dir, toy.train_path);
  const dpo::TrainSummary summary = dpo::run_training(config, dpo::Objective::Sft);
  REQUIRE(summary.steps == 32);
  const double after = chosen_nll_float64(summary.final_model_dir, toy.train_path);
  INFO("NLL per token before " << before << ", after " << after);
  CHECK(before == Approx(std::log(static_cast<double>(kVocab))).margin(0.2));  // a fresh model is near uniform
  CHECK(after < 0.7 * before);

  // Step 1's loss is the NLL of its batch before any update; the eval at the end is the NLL of
  // the trained model on the whole set, as recomputed here.
  const auto lines = step_lines(toy.output("out"));
  REQUIRE(lines.size() == 32);
  CHECK(lines.front().at("loss").get<double>() == Approx(before).margin(0.2));
  CHECK(lines.back().at("loss").get<double>() < lines.front().at("loss").get<double>());
  const auto evals = eval_lines(toy.output("out"));
  REQUIRE(evals.size() == 1);
  CHECK(evals.front().at("step").get<int64_t>() == 32);
  // Eval in batches in float32 vs one example at a time with log-softmax in float64: equal to float
  // rounding (docs/numerics.md).
  CHECK(evals.front().at("eval_loss").get<double>() == Approx(after).epsilon(float_rounding::kForwardRelative));
}

TEST_CASE("a non-finite loss stops the run naming the step", "[training]") {
  ToyRun toy("nonfinite", 24);
  {
    dpo::CausalLM broken = tiny_llama(7);
    at::NoGradGuard no_grad;
    broken->named_parameters()["model.norm.weight"][0].fill_(std::numeric_limits<double>::quiet_NaN());
    dpo::save_model(*broken, toy.model_dir.string());  // replaces the healthy model
  }

  using Catch::Contains;
  REQUIRE_THROWS_WITH(dpo::run_training(toy.config("stopped", {"train.save_every=1"}), dpo::Objective::Dpo),
                      Contains("step 1") && Contains("non-finite"));
  CHECK_FALSE(any_done_marker(toy.output("stopped")));
  CHECK_FALSE(fs::exists(toy.output("stopped") / "final"));

  const dpo::TrainSummary summary = dpo::run_training(
      toy.config("skipping", {"train.skip_nonfinite=true", "train.epochs=2"}), dpo::Objective::Dpo);
  CHECK(summary.steps == 6);
  CHECK(summary.skipped_steps == 6);
  const auto lines = step_lines(toy.output("skipping"));
  REQUIRE(lines.size() == 6);
  for (const auto& line : lines) CHECK(line.value("skipped", false) == true);
  // Skipped steps leave the parameters as they were: still the one NaN, everything else unchanged.
  const auto start = parameters_of(toy.model_dir);
  const auto end = parameters_of(summary.final_model_dir);
  CHECK(differing(start, end, [](const at::Tensor& x, const at::Tensor& y) {
          return at::equal(at::nan_to_num(x, 0.0), at::nan_to_num(y, 0.0)) && at::equal(at::isnan(x), at::isnan(y));
        }).empty());
}

TEST_CASE("a resumed run with a changed loss.beta is refused naming the key", "[training]") {
  const ToyRun toy("changed-key", 24);
  dpo::run_training(toy.config("out", {"train.save_every=2", "train.max_steps=2"}), dpo::Objective::Dpo);
  using Catch::Contains;
  CHECK_THROWS_WITH(
      dpo::run_training(toy.config("out", {"train.save_every=2", "train.max_steps=3", "loss.beta=0.2"}),
                        dpo::Objective::Dpo),
      Contains("loss.beta") && Contains("resume"));
  // The refused run wrote nothing over the first run's results.
  CHECK(step_lines(toy.output("out")).size() == 2);
  CHECK_FALSE(fs::exists(toy.output("out") / "checkpoints" / "step-3"));
}

TEST_CASE("train.max_steps beyond an epoch runs that many steps, as HF's max_steps overrides epochs", "[training]") {
  const ToyRun toy("max_steps", 32);  // 4 steps per epoch
  const dpo::Config config = toy.config("out", {"train.epochs=1", "train.max_steps=10"});
  const dpo::TrainSummary summary = dpo::run_training(config, dpo::Objective::Dpo);
  CHECK(summary.steps == 10);
  const auto lines = step_lines(toy.output("out"));
  REQUIRE(lines.size() == 10);
  CHECK(lines.back().at("epoch").get<double>() == Approx(2.5));
}

TEST_CASE("training with cosine schedule logs the scheduled lr", "[training]") {
  const ToyRun toy("cosine", 32);
  const dpo::Config config =
      toy.config("out", {"train.epochs=2", "train.lr_scheduler=cosine", "train.warmup_steps=2"});
  const dpo::TrainSummary summary = dpo::run_training(config, dpo::Objective::Dpo);
  REQUIRE(summary.steps == 8);
  const auto lines = step_lines(toy.output("out"));
  REQUIRE(lines.size() == 8);
  constexpr double kPi = 3.14159265358979323846;
  for (int64_t s = 0; s < 8; ++s) {
    // Step s (0-based) of 8: linear warm-up over 2 steps, then 1e-2 * (1 + cos(pi (s-2)/6)) / 2.
    const double expected = s < 2 ? 1e-2 * static_cast<double>(s) / 2.0
                                  : 1e-2 * 0.5 * (1.0 + std::cos(kPi * static_cast<double>(s - 2) / 6.0));
    const double logged = lines[static_cast<size_t>(s)].at("lr").get<double>();
    INFO("step " << s + 1);
    CHECK(logged == Approx(expected).epsilon(1e-12).margin(1e-18));
    CHECK(logged == dpo::learning_rate(config.train, s, 8));
  }
}

TEST_CASE("a stop signal ends the run after a complete checkpoint, and rerunning resumes to the same result",
          "[training][preemption]") {
  const ToyRun toy("preempt", 24);
  const std::vector<std::string> overrides = {"train.epochs=2", "train.max_steps=4"};
  const dpo::TrainSummary uninterrupted = dpo::run_training(toy.config("a", overrides), dpo::Objective::Dpo);
  REQUIRE(uninterrupted.steps == 4);

  // The signal arrives during step 1: the loop finishes that step, saves it and stops.
  dpo::watch_stop_signals();
  send_stop_signal(SIGUSR1);
  const dpo::TrainSummary stopped = dpo::run_training(toy.config("b", overrides), dpo::Objective::Dpo);
  dpo::clear_stop_request();
  CHECK(stopped.preempted);
  CHECK(stopped.steps == 1);
  CHECK(fs::exists(toy.output("b") / "checkpoints" / "step-1" / "DONE"));
  CHECK_FALSE(fs::exists(toy.output("b") / "final"));

  const dpo::TrainSummary resumed = dpo::run_training(toy.config("b", overrides), dpo::Objective::Dpo);
  CHECK_FALSE(resumed.preempted);
  CHECK(resumed.resumed_from == 1);
  CHECK(not_identical(parameters_of(toy.output("a") / "final"), parameters_of(toy.output("b") / "final")).empty());
  CHECK(step_lines(toy.output("b")).size() == 4);
}

TEST_CASE("a stop signal between micro-batches abandons that step: the checkpoint is the last completed step's, and "
          "the resumed run ends bit-identical",
          "[training][preemption]") {
  const ToyRun toy("preempt-micro", 24);
  // 4 micro-batches of 2 pairs per step, 3 steps per epoch.
  const std::vector<std::string> overrides = {"train.micro_batch_size=2", "train.epochs=2", "train.max_steps=4"};
  auto saving_every_step = overrides;
  saving_every_step.push_back("train.save_every=1");
  saving_every_step.push_back("train.keep_checkpoints=0");
  const dpo::TrainSummary uninterrupted = dpo::run_training(toy.config("a", saving_every_step), dpo::Objective::Dpo);
  REQUIRE(uninterrupted.steps == 4);

  // The signal arrives after micro-batch 1 of step 3: micro-batches 2 and 3 never run.
  dpo::watch_stop_signals();
  std::vector<std::pair<int64_t, int64_t>> ran;
  const auto alone = dpo::make_single_process_communicator();
  const dpo::TrainSummary stopped =
      dpo::run_training(toy.config("b", overrides), dpo::Objective::Dpo, *alone, at::kCPU, [&](int64_t step, int64_t micro) {
        ran.emplace_back(step, micro);
        if (step == 3 && micro == 1) send_stop_signal(SIGUSR1);
      });
  dpo::clear_stop_request();
  CHECK(stopped.preempted);
  CHECK(stopped.steps == 2);
  REQUIRE_FALSE(ran.empty());
  CHECK(ran.back() == std::pair<int64_t, int64_t>(3, 1));
  CHECK(ran.size() == 2 * 4 + 2);
  CHECK(fs::exists(toy.output("b") / "checkpoints" / "step-2" / "DONE"));
  CHECK_FALSE(fs::exists(toy.output("b") / "checkpoints" / "step-3"));
  CHECK(step_lines(toy.output("b")).size() == 2);
  // The parameters saved are exactly those of step 2 (the abandoned step changed nothing).
  CHECK(not_identical(parameters_of(toy.output("a") / "checkpoints" / "step-2"),
                      parameters_of(toy.output("b") / "checkpoints" / "step-2"))
            .empty());

  const dpo::TrainSummary resumed = dpo::run_training(toy.config("b", overrides), dpo::Objective::Dpo);
  CHECK_FALSE(resumed.preempted);
  CHECK(resumed.resumed_from == 2);
  CHECK(not_identical(parameters_of(toy.output("a") / "final"), parameters_of(toy.output("b") / "final")).empty());
  const auto a_lines = step_lines(toy.output("a")), b_lines = step_lines(toy.output("b"));
  REQUIRE(b_lines.size() == 4);
  for (size_t i = 0; i < 4; ++i) CHECK(b_lines[i].at("loss") == a_lines[i].at("loss"));
}

TEST_CASE("a stop signal in the first step saves nothing and the rerun starts afresh", "[training][preemption]") {
  const ToyRun toy("preempt-first", 24);
  const std::vector<std::string> overrides = {"train.micro_batch_size=2", "train.max_steps=2"};
  dpo::watch_stop_signals();
  const auto alone = dpo::make_single_process_communicator();
  const dpo::TrainSummary stopped =
      dpo::run_training(toy.config("b", overrides), dpo::Objective::Dpo, *alone, at::kCPU, [&](int64_t, int64_t micro) {
        if (micro == 0) send_stop_signal(SIGUSR1);
      });
  dpo::clear_stop_request();
  CHECK(stopped.preempted);
  CHECK(stopped.steps == 0);
  CHECK_FALSE(fs::exists(toy.output("b") / "checkpoints"));
  const dpo::TrainSummary rerun = dpo::run_training(toy.config("b", overrides), dpo::Objective::Dpo);
  CHECK(rerun.resumed_from == 0);
  CHECK(rerun.steps == 2);
}
