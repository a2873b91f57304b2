// Data-parallel training's contract, run under mpiexec with 2 and 3 ranks: N ranks give the
// parameters and the metrics of 1 rank on the same global batches (within float rounding),
// including micro-batch accumulation and a partial last batch; evaluation over ranks equals
// evaluation alone; precompute-ref over N ranks writes the values of a 1-rank precompute, and
// training on them equals training with the live reference.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/config.h"
#include "dpo/dist.h"
#include "dpo/evaluate.h"
#include "dpo/model.h"
#include "dpo/preference_data.h"
#include "dpo/reference_store.h"
#include "dpo/synthetic_task.h"
#include "dpo/trainer.h"
#include "tiny_llama.h"

extern dpo::MpiRuntime* g_mpi_runtime;

namespace fs = std::filesystem;

namespace {

std::unique_ptr<dpo::Communicator> world() {
  return g_mpi_runtime->active() ? dpo::make_mpi_communicator() : dpo::make_single_process_communicator();
}

// Rank 0 makes the scratch directory, the model and the data; every rank gets the path.
fs::path shared_scratch(dpo::Communicator& comm, const std::string& name) {
  std::string path;
  if (comm.rank() == 0) {
    path = (fs::temp_directory_path() / fmt::format("dpo-dist-{}-{}", name, static_cast<long>(getpid()))).string();
    fs::remove_all(path);
    fs::create_directories(path);
    dpo::save_model(*tiny_llama(5), path + "/model");
    dpo::SyntheticTaskOptions task;
    task.pairs = 30;  // 12-pair global batches: the third is partial (6 pairs)
    task.vocab_size = 32;
    task.seed = 4;
    const auto pairs = dpo::make_synthetic_pairs(task);
    dpo::write_preference_jsonl(path + "/train.jsonl", pairs);
    dpo::write_preference_jsonl(path + "/eval.jsonl", std::vector<dpo::RawPreferencePair>(pairs.begin(), pairs.begin() + 11));
  }
  comm.broadcast_string(path, 0);
  return path;
}

// SGD at a large rate, and AdamW at a moderate one: adaptive optimizers divide by the root of the
// squared gradient, which turns float-rounding differences in near-zero gradient entries into
// steps of order lr, so their runs agree only to that order.
dpo::Config run_config(const fs::path& dir, const std::string& output, int64_t micro, const std::string& optimizer) {
  const double lr = optimizer == "sgd" ? 0.05 : 1e-3;
  return dpo::config_from_yaml_text(
      fmt::format("run: {{output_dir: '{}', seed: 1}}\n"
                  "model: {{policy: '{}'}}\n"
                  "data: {{train: '{}', eval: '{}', max_length: 32, max_prompt_length: 16}}\n"
                  "train: {{global_batch_size: 12, micro_batch_size: {}, epochs: 2, optimizer: {}, lr: {},\n"
                  "         warmup_steps: 0, eval_every: 3}}\n",
                  (dir / output).string(), (dir / "model").string(), (dir / "train.jsonl").string(),
                  (dir / "eval.jsonl").string(), micro, optimizer, lr),
      {}, "dist test");
}

std::vector<nlohmann::json> metric_lines(const fs::path& output_dir) {
  std::ifstream in(output_dir / "metrics.jsonl");
  std::vector<nlohmann::json> lines;
  std::string text;
  while (std::getline(in, text))
    if (!text.empty()) lines.push_back(nlohmann::json::parse(text));
  return lines;
}

}  // namespace

TEST_CASE("N ranks train the parameters and metrics of 1 rank on the same global batches", "[mpi][training]") {
  auto comm = world();
  const int ranks = comm->world_size();
  const fs::path dir = shared_scratch(*comm, "train");
  // 12 pairs per step: micro-batches of 2 give 6, 3 or 2 accumulation steps on 1, 2 or 3 ranks.
  for (const std::string optimizer : {"sgd", "adamw"}) {
    const dpo::TrainSummary many = dpo::run_training(run_config(dir, "many-" + optimizer, 2, optimizer), dpo::Objective::Dpo, *comm);
    REQUIRE(many.steps == 6);
    if (comm->rank() == 0) {
      // The same run alone, as one rank with the whole global batch accumulated in micro-batches.
      dpo::run_training(run_config(dir, "one-" + optimizer, 2, optimizer), dpo::Objective::Dpo);
      const auto one = dpo::load_model((dir / ("one-" + optimizer) / "final").string(), at::kFloat);
      const auto n = dpo::load_model((dir / ("many-" + optimizer) / "final").string(), at::kFloat);
      const auto initial = dpo::load_model((dir / "model").string(), at::kFloat);
      auto a = one->named_parameters(), b = n->named_parameters(), c = initial->named_parameters();
      for (const auto& item : a) {
        INFO(optimizer << " " << ranks << " ranks: " << item.key());
        CHECK(at::allclose(item.value(), b[item.key()], 1e-4, 1e-6));
        CHECK_FALSE(at::equal(item.value(), c[item.key()]));  // training moved it
      }
      const auto lines_one = metric_lines(dir / ("one-" + optimizer));
      const auto lines_many = metric_lines(dir / ("many-" + optimizer));
      REQUIRE(lines_one.size() == lines_many.size());
      for (size_t i = 0; i < lines_one.size(); ++i) {
        for (const auto& [key, value] : lines_one[i].items()) {
          if (key == "tokens_per_s" || key == "mfu" || key == "peak_memory_mib" || key == "step_time_s" ||
              key == "grad_sync_s")
            continue;
          INFO(optimizer << " line " << i << " " << key);
          REQUIRE(lines_many[i].contains(key));
          CHECK(lines_many[i][key].get<double>() == Approx(value.get<double>()).epsilon(1e-4).margin(1e-6));
        }
      }
    }
    comm->barrier();
  }
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST_CASE("evaluation over ranks equals evaluation alone", "[mpi][eval]") {
  auto comm = world();
  const fs::path dir = shared_scratch(*comm, "eval");
  dpo::Config config = run_config(dir, "eval", 2, "sgd");
  dpo::CausalLM policy = dpo::load_model((dir / "model").string(), at::kFloat);
  nlohmann::json other_config = nlohmann::json::parse(std::ifstream(dir / "model" / "config.json"));
  dpo::CausalLM reference = dpo::build_model(dpo::model_spec_from_hf_config(other_config, "reference"), 9);
  const auto data = dpo::PreferenceDataset::load((dir / "eval.jsonl").string(), dpo::truncation_rule(config.data), 32);
  const auto many = dpo::evaluate_pairs(*policy, *reference, data, config.loss, 2, *comm);
  const auto alone = dpo::make_single_process_communicator();
  const auto one = dpo::evaluate_pairs(*policy, *reference, data, config.loss, 3, *alone);
  CHECK(many.pairs() == 11);
  CHECK(one.pairs() == 11);
  for (const auto& [name, value] : one.means()) CHECK(many.means().at(name) == Approx(value).epsilon(1e-5).margin(1e-7));
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST_CASE("precompute-ref over N ranks writes the values of a 1-rank precompute", "[mpi][reference]") {
  auto comm = world();
  const fs::path dir = shared_scratch(*comm, "reference");
  const auto with = [&](const std::string& file) {
    dpo::Config c = run_config(dir, "out-" + file, 2, "sgd");
    c.reference.logps_path = (dir / file).string();
    c.reference.batch_size = 4;
    c.train.epochs = 1;
    return c;
  };
  const dpo::PrecomputeSummary many = dpo::precompute_reference(with("many.h5"), *comm);
  CHECK(many.examples == 30);
  CHECK(many.eval_examples == 11);
  CHECK(many.computed == 41);
  if (comm->rank() == 0) {
    const auto alone = dpo::make_single_process_communicator();
    dpo::precompute_reference(with("one.h5"), *alone);
    const dpo::ReferenceFile a = dpo::read_reference_file((dir / "many.h5").string(), true);
    const dpo::ReferenceFile b = dpo::read_reference_file((dir / "one.h5").string(), true);
    for (const auto& [x, y] : {std::make_pair(&a.train, &b.train), std::make_pair(&*a.eval, &*b.eval)}) {
      REQUIRE(x->size() == y->size());
      for (size_t i = 0; i < x->size(); ++i) {
        CHECK(x->chosen[i] == Approx(y->chosen[i]).margin(1e-6));
        CHECK(x->rejected[i] == Approx(y->rejected[i]).margin(1e-6));
      }
      CHECK(x->chosen_lengths == y->chosen_lengths);
      CHECK(x->rejected_lengths == y->rejected_lengths);
    }
    CHECK(a.provenance.model_fingerprint == b.provenance.model_fingerprint);
  }
  comm->barrier();

  // Resuming over N ranks from a half-filled .partial (rank 0 owns it) scores only the rest.
  if (comm->rank() == 0) {
    dpo::ReferenceFile half = dpo::read_reference_file((dir / "many.h5").string(), true);
    for (size_t i = 1; i < half.train.size(); i += 2) {
      half.train.filled[i] = 0;
      half.train.chosen[i] = 0;
    }
    dpo::write_reference_file((dir / "resumed.h5.partial").string(), half, true);
  }
  comm->barrier();
  const dpo::PrecomputeSummary resumed = dpo::precompute_reference(with("resumed.h5"), *comm);
  CHECK(resumed.resumed == 15 + 11);
  CHECK(resumed.computed == 15);
  if (comm->rank() == 0) {
    CHECK(dpo::read_reference_file((dir / "resumed.h5").string(), true).train.chosen ==
          dpo::read_reference_file((dir / "many.h5").string(), true).train.chosen);
    CHECK_FALSE(fs::exists(dir / "resumed.h5.partial"));
  }
  comm->barrier();

  // N ranks training from the file step like N ranks with the live reference (policy == reference).
  dpo::Config stored = with("many.h5");
  stored.run.output_dir = (dir / "stored").string();
  dpo::Config live = with("");
  live.reference.logps_path.clear();
  live.run.output_dir = (dir / "live").string();
  dpo::run_training(stored, dpo::Objective::Dpo, *comm);
  dpo::run_training(live, dpo::Objective::Dpo, *comm);
  if (comm->rank() == 0) {
    const auto p = dpo::load_model((dir / "stored" / "final").string(), at::kFloat);
    const auto q = dpo::load_model((dir / "live" / "final").string(), at::kFloat);
    auto qp = q->named_parameters();
    for (const auto& item : p->named_parameters()) CHECK(at::allclose(item.value(), qp[item.key()], 1e-5, 1e-6));
  }
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}
