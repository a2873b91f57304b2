// Precomputed reference log-probs: `precompute-ref` stores what the reference model computes
// (checked against a float64 recomputation), training and eval with the stored file equal
// training with the live reference, files computed from other inputs are refused naming what
// differs, unfinished work resumes from the .partial file, and damaged or foreign files are
// refused cleanly.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include "catch2_api.h"
#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/config/config.h"
#include "dpo/data/collate.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/io/hdf5_handles.h"
#include "dpo/loss/logps.h"
#include "dpo/model/model.h"
#include "dpo/reference/precompute.h"
#include "dpo/reference/reference_store.h"
#include "dpo/runtime/preemption.h"
#include "dpo/train/evaluate.h"
#include "dpo/train/trainer.h"
#include "float_rounding.h"
#include "scratch_dir.h"
#include "stop_signal.h"
#include "tiny_llama.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

constexpr int64_t kVocab = 32;

void write_pairs(const fs::path& path, int64_t pairs, uint64_t seed) {
  dpo::SyntheticTaskOptions task;
  task.pairs = pairs;
  task.vocab_size = kVocab;
  task.seed = seed;
  dpo::write_preference_jsonl(path.string(), dpo::make_synthetic_pairs(task));
}

// A policy (`policy/`, also the reference unless a test sets one), 24 training and 10 eval pairs.
struct Toy {
  ScratchDir dir;
  fs::path policy, train, eval, logps;
  explicit Toy(const std::string& name) : dir(name) {
    policy = dir.path / "policy";
    train = dir.path / "train.jsonl";
    eval = dir.path / "eval.jsonl";
    logps = dir.path / "ref.h5";
    dpo::save_model(*tiny_llama(7), policy.string());
    write_pairs(train, 24, 11);
    write_pairs(eval, 10, 12);
  }
  dpo::Config config(const std::string& output, const std::vector<std::string>& overrides = {}) const {
    const std::string yaml = fmt::format(
        "run: {{output_dir: '{}', seed: 3}}\n"
        "model: {{policy: '{}'}}\n"
        "data: {{train: '{}', eval: '{}', max_length: 24, max_prompt_length: 12}}\n"
        "reference: {{logps_path: '{}', batch_size: 5}}\n"
        "train: {{global_batch_size: 8, micro_batch_size: 4, epochs: 2, optimizer: sgd, lr: 0.5,\n"
        "         warmup_steps: 0, eval_every: 3}}\n",
        (dir.path / output).string(), policy.string(), train.string(), eval.string(), logps.string());
    return dpo::config_from_yaml_text(yaml, overrides, "reference toy");
  }
};

dpo::PrecomputeSummary precompute(const dpo::Config& config) {
  const auto alone = dpo::make_single_process_communicator();
  return dpo::precompute_reference(config, *alone, at::kCPU);
}

dpo::ReferenceStore open_store(const dpo::Config& config, bool train = true, bool eval = false) {
  const auto alone = dpo::make_single_process_communicator();
  return dpo::ReferenceStore::open(config, train, eval, *alone);
}

// Sum of log p(response token) of prompt+response, one example alone, log-softmax in float64.
std::pair<double, int32_t> response_logp_float64(dpo::CausalLMImpl& model, const dpo::TokenIds& prompt,
                                                 const dpo::TokenIds& response) {
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  ids.insert(ids.end(), response.begin(), response.end());
  const at::Tensor logp =
      at::log_softmax(model.forward(at::tensor(ids, at::kLong).unsqueeze(0)).squeeze(0).to(at::kDouble), -1);
  double sum = 0;
  int32_t count = 0;
  for (size_t t = std::max<size_t>(prompt.size(), 1); t < ids.size(); ++t, ++count)
    sum += logp[static_cast<int64_t>(t - 1)][ids[t]].item<double>();
  return {sum, count};
}

std::vector<nlohmann::json> metric_lines(const fs::path& output_dir) {
  std::ifstream in(output_dir / "metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string text; std::getline(in, text);)
    if (!text.empty()) lines.push_back(nlohmann::json::parse(text));
  return lines;
}

std::string refusal(const std::function<void()>& run) {
  try {
    run();
  } catch (const dpo::Error& e) {
    return e.what();
  }
  return "<not refused>";
}

}  // namespace

TEST_CASE("precompute-ref stores the reference model's log-probs of every pair in dataset order", "[reference]") {
  const Toy toy("values");
  const dpo::Config config = toy.config("out");
  const dpo::PrecomputeSummary summary = precompute(config);
  CHECK(summary.examples == 24);
  CHECK(summary.eval_examples == 10);
  CHECK(summary.computed == 34);
  CHECK(summary.resumed == 0);
  CHECK_FALSE(fs::exists(toy.logps.string() + ".partial"));

  const dpo::ReferenceFile file = dpo::read_reference_file(toy.logps.string(), true);
  CHECK(file.provenance.dataset_fingerprint == dpo::file_fingerprint(toy.train.string()));
  CHECK(file.provenance.eval_dataset_fingerprint == dpo::file_fingerprint(toy.eval.string()));
  CHECK(file.provenance.model_fingerprint == dpo::model_fingerprint(toy.policy.string()));
  CHECK(file.provenance.truncation == "max_length=24 max_prompt_length=12 truncation=keep_end");
  CHECK(file.provenance.dtype == "float32");
  CHECK(dpo::is_reference_file(toy.logps.string()));

  const dpo::CausalLM model = dpo::load_model(toy.policy.string(), at::kFloat);
  model->eval();
  c10::InferenceMode no_grad;
  const dpo::TruncationRule rule = dpo::truncation_rule(config.data);
  for (const auto& [path, split] : {std::make_pair(toy.train, &file.train), std::make_pair(toy.eval, &*file.eval)}) {
    const auto data = dpo::PreferenceDataset::load(path.string(), rule, kVocab);
    REQUIRE(split->size() == data.size());
    for (size_t i = 0; i < data.size(); ++i) {
      // The live path's function on the example alone: batching must not change the value beyond
      // float rounding (a batch of 5 vs 1: other batch composition, docs/numerics.md).
      const dpo::PairLogps live = dpo::pair_logps(*model, dpo::collate_pairs(data, {static_cast<int64_t>(i)}));
      CHECK(split->chosen[i] == Approx(live.chosen.item<double>()).epsilon(float_rounding::kForwardRelative));
      CHECK(split->rejected[i] == Approx(live.rejected.item<double>()).epsilon(float_rounding::kForwardRelative));
      // And independent math: log-softmax in float64 over the same float32 logits (values ~30, so
      // 1e-4 is ~3e-6 relative: float32 log-softmax rounding, not a scoring difference).
      const auto [chosen, chosen_count] = response_logp_float64(*model, data[i].prompt, data[i].chosen);
      const auto [rejected, rejected_count] = response_logp_float64(*model, data[i].prompt, data[i].rejected);
      CHECK(split->chosen[i] == Approx(chosen).margin(1e-4));
      CHECK(split->rejected[i] == Approx(rejected).margin(1e-4));
      CHECK(split->chosen_lengths[i] == chosen_count);
      CHECK(split->rejected_lengths[i] == rejected_count);
    }
  }
  CHECK_THAT(dpo::describe_reference_file(toy.logps.string()), Contains("complete") && Contains("chosen_logps"));
}

TEST_CASE("training with the stored reference log-probs equals training with the live reference", "[reference]") {
  const Toy toy("equal-training");
  dpo::save_model(*tiny_llama(8), (toy.dir.path / "reference").string());
  const std::string reference = "model.reference=" + (toy.dir.path / "reference").string();
  precompute(toy.config("pre", {reference}));
  const dpo::TrainSummary live = dpo::run_training(toy.config("live", {reference, "reference.logps_path=''"}), dpo::Objective::Dpo);
  const dpo::TrainSummary stored = dpo::run_training(toy.config("stored", {reference}), dpo::Objective::Dpo);
  REQUIRE(live.steps == 6);
  REQUIRE(stored.steps == 6);

  // The stored values were scored in batches of 5, the live ones in micro-batches of 4: equal to
  // float rounding (docs/numerics.md). SGD's update is lr x the gradient, so the updates agree to
  // the gradients' tolerance, measured per tensor against the update.
  const dpo::CausalLM a = dpo::load_model(live.final_model_dir, at::kFloat), b = dpo::load_model(stored.final_model_dir, at::kFloat);
  const dpo::CausalLM initial = dpo::load_model(toy.policy.string(), at::kFloat);
  const auto pa = a->named_parameters(), pb = b->named_parameters(), p0 = initial->named_parameters();
  for (const auto& item : pa) {
    INFO(item.key());
    CHECK(float_rounding::normwise_relative_difference(pb[item.key()] - p0[item.key()], item.value() - p0[item.key()]) <
          float_rounding::kGradientRelative);
  }

  const auto la = metric_lines(toy.dir.path / "live"), lb = metric_lines(toy.dir.path / "stored");
  REQUIRE(la.size() == lb.size());
  REQUIRE(la.size() == 6 + 2);  // six steps, eval at steps 3 and 6
  for (size_t i = 0; i < la.size(); ++i)
    for (const auto& [key, value] : la[i].items()) {
      if (key == "tokens_per_s" || key == "mfu" || key == "step_time_s" || key == "grad_sync_s" || key == "peak_memory_mib")
        continue;
      INFO("line " << i << " key " << key);
      REQUIRE(lb[i].contains(key));
      CHECK(lb[i][key].get<double>() ==
            Approx(value.get<double>()).epsilon(float_rounding::kForwardRelative).margin(float_rounding::kForwardAbsolute));
    }
}

TEST_CASE("a reference file computed from other inputs is refused, naming what differs", "[reference]") {
  const Toy toy("mismatch");
  precompute(toy.config("pre"));

  SECTION("different dataset content") {
    write_pairs(toy.train, 24, 99);
    CHECK_THAT(refusal([&] { dpo::run_training(toy.config("out"), dpo::Objective::Dpo); }),
               Contains(toy.logps.string()) && Contains("different dataset (data.train fingerprint"));
  }
  SECTION("different eval dataset content") {
    write_pairs(toy.eval, 10, 98);
    CHECK_THAT(refusal([&] { open_store(toy.config("out"), false, true); }), Contains("different eval dataset"));
  }
  SECTION("different model weights") {
    dpo::save_model(*tiny_llama(9), toy.policy.string());
    CHECK_THAT(refusal([&] { dpo::run_training(toy.config("out"), dpo::Objective::Dpo); }),
               Contains("different reference model (model.reference fingerprint"));
  }
  SECTION("different truncation") {
    CHECK_THAT(refusal([&] { dpo::run_training(toy.config("out", {"data.max_length=20"}), dpo::Objective::Dpo); }),
               Contains("different truncation settings (max_length=20 max_prompt_length=12 truncation=keep_end now vs "
                        "max_length=24"));
  }
  SECTION("a different number of examples") {
    dpo::ReferenceFile file = dpo::read_reference_file(toy.logps.string(), true);
    for (auto* v : {&file.train.chosen, &file.train.rejected}) v->pop_back();
    for (auto* v : {&file.train.chosen_lengths, &file.train.rejected_lengths}) v->pop_back();
    file.train.filled.pop_back();
    dpo::write_reference_file(toy.logps.string(), file, false);
    CHECK_THAT(refusal([&] { dpo::run_training(toy.config("out"), dpo::Objective::Dpo); }),
               Contains("holds 23 examples but") && Contains("has 24 after truncation"));
  }
  SECTION("eval with a file that has no eval group") {
    precompute(toy.config("pre", {"data.eval=''"}));
    const auto alone = dpo::make_single_process_communicator();
    CHECK_THAT(refusal([&] { dpo::run_eval(toy.config("out"), *alone, at::kCPU); }), Contains("has no eval group"));
  }
}

TEST_CASE("an unfinished precompute resumes from its .partial file and gives the fresh result", "[reference]") {
  const Toy toy("resume");
  const dpo::Config config = toy.config("out");
  precompute(config);
  const dpo::ReferenceFile fresh = dpo::read_reference_file(toy.logps.string(), true);

  dpo::ReferenceFile half = fresh;
  for (size_t i = 0; i < half.train.size(); i += 2) {
    half.train.filled[i] = 0;
    half.train.chosen[i] = half.train.rejected[i] = 0;
  }
  for (size_t i = 0; i < half.eval->size(); ++i) half.eval->filled[i] = 0;
  fs::remove(toy.logps);
  const std::string partial = toy.logps.string() + ".partial";

  SECTION("matching inputs: only the unfilled examples are scored") {
    dpo::write_reference_file(partial, half, true);
    const dpo::PrecomputeSummary summary = precompute(config);
    CHECK(summary.resumed == 12);
    CHECK(summary.computed == 12 + 10);
    CHECK_FALSE(fs::exists(partial));
    const dpo::ReferenceFile resumed = dpo::read_reference_file(toy.logps.string(), true);
    CHECK(resumed.train.chosen_lengths == fresh.train.chosen_lengths);
    CHECK(resumed.train.rejected_lengths == fresh.train.rejected_lengths);
    for (size_t i = 0; i < fresh.train.size(); ++i) {
      INFO("train example " << i);
      if (i % 2 == 1) {  // kept from the .partial file: copied, not recomputed, so bit-identical
        CHECK(resumed.train.chosen[i] == fresh.train.chosen[i]);
        CHECK(resumed.train.rejected[i] == fresh.train.rejected[i]);
      } else {  // rescored in batches of every other example: other batch composition (docs/numerics.md)
        CHECK(resumed.train.chosen[i] == Approx(fresh.train.chosen[i]).epsilon(float_rounding::kForwardRelative));
        CHECK(resumed.train.rejected[i] == Approx(fresh.train.rejected[i]).epsilon(float_rounding::kForwardRelative));
      }
    }
    // The eval split was wholly unfilled: rescored in the fresh run's batches, so bit-identical.
    CHECK(resumed.eval->chosen == fresh.eval->chosen);
    CHECK(resumed.eval->rejected == fresh.eval->rejected);
  }
  SECTION("a partial file of other inputs is discarded") {
    half.provenance.model_fingerprint = "0000000000000000";
    dpo::write_reference_file(partial, half, true);
    const dpo::PrecomputeSummary summary = precompute(config);
    CHECK(summary.resumed == 0);
    CHECK(summary.computed == 34);
    // Discarded, so everything is scored again as in the fresh run: bit-identical.
    CHECK(dpo::read_reference_file(toy.logps.string(), true).train.chosen == fresh.train.chosen);
  }
  SECTION("inspect's statistics of an unfinished file are over its filled examples") {
    double sum = 0, lowest = 1e300;
    for (size_t i = 0; i < half.train.size(); ++i) {
      if (half.train.filled[i]) {
        sum += half.train.chosen[i];
        lowest = std::min(lowest, half.train.chosen[i]);
      } else {
        half.train.chosen[i] = -1e30;  // what an unfilled slot holds must not matter
      }
    }
    dpo::write_reference_file(partial, half, true);
    const std::string text = dpo::describe_reference_file(partial);
    CHECK_THAT(text, Contains("train: 24 pairs, INCOMPLETE (12 unfilled)"));
    CHECK_THAT(text, Contains(fmt::format("chosen_logps      mean {:>12.4f}  min {:>12.4f}", sum / 12, lowest)));
    CHECK_THAT(text, Contains("eval: 10 pairs, INCOMPLETE (10 unfilled)\n  (no filled examples yet)"));
  }
  SECTION("an incomplete file is refused for training") {
    dpo::write_reference_file(toy.logps.string(), half, true);
    CHECK_THAT(refusal([&] { open_store(config); }), Contains("incomplete: 12 of 24 examples"));
  }
}

TEST_CASE("a stop signal ends precompute-ref after a saved round, and rerunning finishes with the fresh values",
          "[reference][preemption]") {
  const Toy toy("stop");
  const dpo::Config config = toy.config("out");
  precompute(config);
  const dpo::ReferenceFile fresh = dpo::read_reference_file(toy.logps.string(), true);
  fs::remove(toy.logps);

  // The signal arrives during the first round: that round is saved, no further one is computed.
  dpo::watch_stop_signals();
  send_stop_signal(SIGUSR1);
  const dpo::PrecomputeSummary stopped = precompute(config);
  dpo::clear_stop_request();
  CHECK(stopped.preempted);
  CHECK(stopped.computed > 0);
  CHECK(stopped.computed < 24);
  CHECK_FALSE(fs::exists(toy.logps));
  const std::string partial = toy.logps.string() + ".partial";
  REQUIRE(fs::exists(partial));
  CHECK(24 - dpo::read_reference_file(partial, false).train.unfilled() == stopped.computed);

  const dpo::PrecomputeSummary resumed = precompute(config);
  CHECK_FALSE(resumed.preempted);
  CHECK(resumed.resumed == stopped.computed);
  CHECK(resumed.computed == 34 - stopped.computed);
  // A stop leaves whole rounds undone, and the rerun scores them in the fresh run's batches: the
  // same computation in the same shapes, so bit-identical (docs/numerics.md).
  const dpo::ReferenceFile file = dpo::read_reference_file(toy.logps.string(), true);
  CHECK(file.train.chosen == fresh.train.chosen);
  CHECK(file.eval->rejected == fresh.eval->rejected);
}

TEST_CASE("a truncated, foreign or non-finite reference file is refused cleanly", "[reference]") {
  const Toy toy("damaged");
  const dpo::Config config = toy.config("out");
  precompute(config);
  const std::string path = toy.logps.string();

  SECTION("truncated") {
    std::string head(100, '\0');
    std::ifstream(path, std::ios::binary).read(head.data(), 100);
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(head.data(), 100);
    CHECK_THAT(refusal([&] { open_store(config); }), Contains(path) && Contains("HDF5"));
  }
  SECTION("a preference dataset instead") {
    dpo::write_preference_hdf5(path, dpo::read_preference_file(toy.train.string()));
    CHECK_THAT(refusal([&] { open_store(config); }), Contains("not a reference log-prob file"));
    CHECK_FALSE(dpo::is_reference_file(path));
  }
  SECTION("a NaN value") {
    dpo::ReferenceFile file = dpo::read_reference_file(path, true);
    file.train.rejected[5] = std::nan("");
    dpo::write_reference_file(path, file, false);
    CHECK_THAT(refusal([&] { open_store(config); }), Contains("rejected_logps[5] is not finite"));
  }
  SECTION("a version attribute holding an array") {
    // Found by fuzz/fuzz_reference_file: H5Aread wrote both elements into one int64 on the stack.
    {
      const hsize_t two = 2;
      const int64_t versions[2] = {1, 1};
      dpo::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
      dpo::Handle space(H5Screate_simple(1, &two, nullptr), H5Sclose);
      REQUIRE(H5Adelete(file, "version") >= 0);
      dpo::Handle version(H5Acreate2(file, "version", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      REQUIRE(H5Awrite(version, H5T_NATIVE_INT64, versions) >= 0);
    }
    CHECK_THAT(refusal([&] { open_store(config); }), Contains("format version ? is not supported"));
  }
  SECTION("missing") {
    fs::remove(path);
    CHECK_THAT(refusal([&] { open_store(config); }), Contains("no such reference log-prob file"));
  }
}

TEST_CASE("with policy == reference, step 1 on the stored file has loss ln 2 and zero margins", "[reference]") {
  const Toy toy("ln2");
  precompute(toy.config("pre"));
  dpo::run_training(toy.config("out", {"train.max_steps=1", "train.eval_every=0"}), dpo::Objective::Dpo);
  const auto lines = metric_lines(toy.dir.path / "out");
  REQUIRE(!lines.empty());
  // The file's values come from batches of 5, the policy's from micro-batches of 4: equal to float
  // rounding, not bit-identical (docs/numerics.md), so rewards are 0 and the loss ln 2 within it.
  CHECK(lines[0]["loss"].get<double>() == Approx(std::log(2.0)).margin(float_rounding::kForwardAbsolute));
  CHECK(lines[0]["rewards/margins"].get<double>() == Approx(0.0).margin(float_rounding::kForwardAbsolute));
  CHECK(lines[0]["rewards/chosen"].get<double>() == Approx(0.0).margin(float_rounding::kForwardAbsolute));
}

// What `run` writes to stderr (file descriptor 2), e.g. warnings.
std::string stderr_of(const fs::path& scratch, const std::function<void()>& run) {
  const fs::path capture = scratch / "stderr.txt";
  std::fflush(stderr);
  const int saved = dup(2);
  FILE* file = std::fopen(capture.string().c_str(), "w");
  dup2(fileno(file), 2);
  run();
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::fclose(file);
  std::ifstream in(capture);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_CASE("with policy == reference, stored values the policy does not reproduce draw a loud warning", "[reference]") {
  const Toy toy("numerics");
  precompute(toy.config("pre"));
  const auto train_one_step = [&](const std::string& output) {
    return stderr_of(toy.dir.path, [&] {
      dpo::run_training(toy.config(output, {"train.max_steps=1", "train.eval_every=0"}), dpo::Objective::Dpo);
    });
  };
  CHECK_THAT(train_one_step("same"), !Contains("differ by"));
  dpo::ReferenceFile file = dpo::read_reference_file(toy.logps.string(), true);
  for (double& v : file.train.chosen) v += 0.5;  // as if computed under other numerics
  dpo::write_reference_file(toy.logps.string(), file, false);
  CHECK_THAT(train_one_step("other"), Contains("dpo: warning:") && Contains("stored reference log-probs differ by") &&
                                          Contains("computed with other numerics (fp32 precision"));
}

TEST_CASE("a reference file records its precision, and training in another precision is warned about, not refused",
          "[reference][precision]") {
  const Toy toy("precision");
  precompute(toy.config("pre"));
  CHECK(dpo::read_reference_file(toy.logps.string(), true).provenance.precision == "fp32");
  CHECK_THAT(dpo::describe_reference_file(toy.logps.string()), Contains("computed with    fp32 precision"));
  const auto train_one_step = [&](const std::string& output, const std::string& precision) {
    return stderr_of(toy.dir.path, [&] {
      dpo::run_training(toy.config(output, {"train.max_steps=1", "train.eval_every=0", "train.precision=" + precision}),
                        dpo::Objective::Dpo);
    });
  };
  CHECK_THAT(train_one_step("same", "fp32"), !Contains("precision"));
  CHECK_THAT(train_one_step("mixed", "bf16-mixed"),
             Contains("computed in fp32 precision, this run computes in bf16-mixed") &&
                 Contains("--set train.precision=bf16-mixed"));
}

TEST_CASE("reference.batch_size must be positive", "[reference][config]") {
  const Toy toy("config");
  CHECK(toy.config("out").reference.batch_size == 5);
  CHECK_THROWS_WITH(toy.config("out", {"reference.batch_size=0"}), Contains("reference.batch_size"));
}

TEST_CASE("a stop signal ends precompute-ref after the batch in progress, saving the round so far",
          "[reference][preemption]") {
  const Toy toy("stop-batch");
  // One pair per batch: 24 train batches make rounds of 3 batches.
  const dpo::Config config = toy.config("out", {"reference.batch_size=1"});
  dpo::watch_stop_signals();
  send_stop_signal(SIGUSR1);
  const dpo::PrecomputeSummary stopped = precompute(config);
  dpo::clear_stop_request();
  CHECK(stopped.preempted);
  CHECK(stopped.computed == 1);
  const std::string partial = toy.logps.string() + ".partial";
  REQUIRE(fs::exists(partial));
  CHECK(dpo::read_reference_file(partial, false).train.unfilled() == 23);

  const dpo::PrecomputeSummary resumed = precompute(config);
  CHECK_FALSE(resumed.preempted);
  CHECK(resumed.resumed == 1);
  CHECK(resumed.computed == 34 - 1);
  CHECK_FALSE(fs::exists(partial));
}
