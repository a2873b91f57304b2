// Ranks agree on what they run, under mpiexec with 2 and 3 ranks: a rank whose value, dataset or
// weights differ from rank 0's makes every rank throw the first differing rank's message (none is
// left waiting in a collective); a stop signal on one rank between micro-batches stops every rank
// at the same point with a checkpoint of the last completed step, and the resumed run ends
// bit-identical to an uninterrupted one; an srun step of N tasks that MPI sees as a world of one
// is refused.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"
#include <fmt/format.h>

#include "dpo/config/config.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/model/model.h"
#include "dpo/reference/precompute.h"
#include "dpo/reference/reference_store.h"
#include "dpo/runtime/preemption.h"
#include "dpo/train/trainer.h"
#include "mpi_world.h"
#include "stop_signal.h"
#include "tiny_llama.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

std::vector<dpo::RawPreferencePair> synthetic_pairs(int64_t pairs, uint64_t seed) {
  dpo::SyntheticTaskOptions task;
  task.pairs = pairs;
  task.vocab_size = 32;
  task.seed = seed;
  return dpo::make_synthetic_pairs(task);
}

std::map<std::string, at::Tensor> parameters_of(const fs::path& model_dir) {
  const dpo::CausalLM model = dpo::load_model(model_dir.string(), at::kFloat);
  std::map<std::string, at::Tensor> out;
  for (const auto& item : model->named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

bool identical(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, tensor] : a)
    if (!b.count(name) || !at::equal(tensor, b.at(name))) return false;
  return true;
}

}  // namespace

TEST_CASE("ranks holding the same value pass the agreement check", "[mpi][agreement]") {
  auto comm = world();
  REQUIRE_NOTHROW(dpo::require_same_on_all_ranks(*comm, "data.train /p", "12 pairs, fingerprint ab12"));
}

TEST_CASE("a rank holding another value makes every rank throw, naming the first such rank and both values",
          "[mpi][agreement]") {
  auto comm = world();
  if (comm->world_size() < 2) return;
  const std::string value = comm->rank() == 0 ? "12 pairs, fingerprint ab12" : fmt::format("{} pairs, fingerprint cd34", 10 + comm->rank());
  REQUIRE_THROWS_WITH(dpo::require_same_on_all_ranks(*comm, "data.train /p", value),
                      "rank 1: data.train /p: 11 pairs, fingerprint cd34 but rank 0 has 12 pairs, fingerprint ab12");
  comm->barrier();  // every rank is past the check: the ranks are in step
}

TEST_CASE("a rank that loaded another data file or other weights stops every rank, naming the rank and the file",
          "[mpi][agreement]") {
  auto comm = world();
  if (comm->world_size() < 2) return;
  const fs::path dir = shared_directory(*comm, "inputs");
  const fs::path mine = dir / fmt::format("train-{}.jsonl", comm->rank());
  // Rank 1 holds a copy with two pairs fewer; rank 2 (when present) the same data as rank 0.
  auto pairs = synthetic_pairs(12, 3);
  if (comm->rank() == 1) pairs.resize(10);
  dpo::write_preference_jsonl(mine.string(), pairs);
  const dpo::PreferenceDataset data = dpo::PreferenceDataset::load(mine.string(), dpo::TruncationRule{}, 32);
  try {
    dpo::require_same_dataset_on_all_ranks(*comm, "data.train", data);
    FAIL("no rank refused");
  } catch (const dpo::Error& e) {
    CHECK_THAT(e.what(), Contains(fmt::format("rank 1: data.train {}: 10 pairs, fingerprint", (dir / "train-1.jsonl").string())) &&
                             Contains("but rank 0 has 12 pairs, fingerprint"));
  }
  // The same pairs in every rank's own file: the same fingerprint.
  const fs::path same = dir / fmt::format("same-{}.jsonl", comm->rank());
  dpo::write_preference_jsonl(same.string(), synthetic_pairs(12, 3));
  CHECK_NOTHROW(dpo::require_same_dataset_on_all_ranks(
      *comm, "data.train", dpo::PreferenceDataset::load(same.string(), dpo::TruncationRule{}, 32)));

  // Other weights on rank 1 (a stale copy), the same elsewhere.
  const dpo::CausalLM model = tiny_llama(comm->rank() == 1 ? 8 : 7);
  try {
    dpo::require_same_weights_on_all_ranks(*comm, "model.policy", "/models/tiny", model->parameters());
    FAIL("no rank refused");
  } catch (const dpo::Error& e) {
    CHECK_THAT(e.what(), Contains("rank 1: model.policy: /models/tiny, weights fingerprint") &&
                             Contains("but rank 0 has /models/tiny, weights fingerprint"));
  }
  CHECK_NOTHROW(dpo::require_same_weights_on_all_ranks(*comm, "model.policy", "/models/tiny", tiny_llama(7)->parameters()));
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST_CASE("a stop signal on one rank between micro-batches stops every rank with the last completed step saved, "
          "and the resumed run ends bit-identical",
          "[mpi][agreement][preemption]") {
  auto comm = world();
  const fs::path dir = shared_directory(*comm, "preempt");
  if (comm->rank() == 0) {
    dpo::save_model(*tiny_llama(5), (dir / "model").string());
    dpo::write_preference_jsonl((dir / "train.jsonl").string(), synthetic_pairs(30, 4));
  }
  comm->barrier();
  const int64_t world_size = comm->world_size();
  // 2 micro-batches of 2 pairs per rank and step; 30 pairs make a partial third step.
  const auto config = [&](const std::string& output, const std::vector<std::string>& extra) {
    std::vector<std::string> overrides = {"run.output_dir=" + (dir / output).string()};
    overrides.insert(overrides.end(), extra.begin(), extra.end());
    return dpo::config_from_yaml_text(
        fmt::format("run: {{output_dir: x, seed: 1}}\n"
                    "model: {{policy: '{}'}}\n"
                    "data: {{train: '{}', max_length: 32, max_prompt_length: 16}}\n"
                    "train: {{global_batch_size: {}, micro_batch_size: 2, epochs: 2, optimizer: adamw, lr: 1.0e-3,\n"
                    "         warmup_steps: 0}}\n",
                    (dir / "model").string(), (dir / "train.jsonl").string(), 4 * world_size),
        overrides, "agreement test");
  };
  const dpo::TrainSummary uninterrupted =
      dpo::run_training(config("a", {"train.save_every=1", "train.keep_checkpoints=0"}), dpo::Objective::Dpo, *comm, at::kCPU);

  // Only the last rank gets the signal, after micro-batch 0 of step 2.
  dpo::watch_stop_signals();
  const bool receiver = comm->rank() == comm->world_size() - 1;
  int64_t micro_batches_after_signal = 0;
  bool signalled = false;
  const dpo::TrainSummary stopped =
      dpo::run_training(config("b", {}), dpo::Objective::Dpo, *comm, at::kCPU, [&](int64_t step, int64_t micro) {
        if (signalled) ++micro_batches_after_signal;
        if (receiver && step == 2 && micro == 0) {
          send_stop_signal(SIGUSR1);
          signalled = true;
        }
      });
  dpo::clear_stop_request();
  CHECK(stopped.preempted);
  CHECK(stopped.steps == 1);
  CHECK(micro_batches_after_signal == 0);
  comm->barrier();
  CHECK(fs::exists(dir / "b" / "checkpoints" / "step-1" / "DONE"));
  CHECK_FALSE(fs::exists(dir / "b" / "checkpoints" / "step-2"));
  CHECK(identical(parameters_of(dir / "a" / "checkpoints" / "step-1"), parameters_of(dir / "b" / "checkpoints" / "step-1")));

  const dpo::TrainSummary resumed = dpo::run_training(config("b", {}), dpo::Objective::Dpo, *comm, at::kCPU);
  CHECK_FALSE(resumed.preempted);
  CHECK(resumed.resumed_from == 1);
  CHECK(resumed.steps == uninterrupted.steps);
  CHECK(identical(parameters_of(dir / "a" / "final"), parameters_of(dir / "b" / "final")));
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST_CASE("a stop signal on one rank ends precompute-ref on every rank after the same batch, saving what was scored",
          "[mpi][agreement][preemption]") {
  auto comm = world();
  const fs::path dir = shared_directory(*comm, "precompute");
  if (comm->rank() == 0) {
    dpo::save_model(*tiny_llama(5), (dir / "model").string());
    dpo::write_preference_jsonl((dir / "train.jsonl").string(), synthetic_pairs(30, 4));
  }
  comm->barrier();
  const auto config = [&](const std::string& file) {
    return dpo::config_from_yaml_text(
        fmt::format("run: {{output_dir: '{}'}}\n"
                    "model: {{policy: '{}'}}\n"
                    "data: {{train: '{}', max_length: 32, max_prompt_length: 16}}\n"
                    "reference: {{logps_path: '{}', batch_size: 1}}\n",
                    (dir / "out").string(), (dir / "model").string(), (dir / "train.jsonl").string(), (dir / file).string()),
        {}, "agreement test");
  };
  dpo::precompute_reference(config("fresh.h5"), *comm, at::kCPU);

  // One pair per batch: rounds of several batches; only the last rank gets the signal.
  dpo::watch_stop_signals();
  if (comm->rank() == comm->world_size() - 1) send_stop_signal(SIGUSR1);
  const dpo::PrecomputeSummary stopped = dpo::precompute_reference(config("ref.h5"), *comm, at::kCPU);
  dpo::clear_stop_request();
  CHECK(stopped.preempted);
  CHECK(stopped.computed == comm->world_size());  // one batch on every rank
  comm->barrier();
  CHECK(30 - dpo::read_reference_file((dir / "ref.h5.partial").string(), false).train.unfilled() == comm->world_size());

  const dpo::PrecomputeSummary resumed = dpo::precompute_reference(config("ref.h5"), *comm, at::kCPU);
  CHECK_FALSE(resumed.preempted);
  CHECK(resumed.resumed == comm->world_size());
  comm->barrier();
  const dpo::ReferenceFile fresh = dpo::read_reference_file((dir / "fresh.h5").string(), true);
  const dpo::ReferenceFile file = dpo::read_reference_file((dir / "ref.h5").string(), true);
  CHECK(file.train.chosen == fresh.train.chosen);
  CHECK(file.train.rejected == fresh.train.rejected);
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST_CASE("an srun step of several tasks that MPI sees as a world of one is refused with how to launch",
          "[mpi][agreement]") {
  // Environment only: the check reads Slurm's and Open MPI's variables.
  const char* ompi = std::getenv("OMPI_COMM_WORLD_SIZE");
  const std::string saved_ompi = ompi ? ompi : "";
  unsetenv("OMPI_COMM_WORLD_SIZE");
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_STEP_NUM_TASKS", "2", 1);
  const std::string refused = dpo::srun_without_mpi_reason(1);
  CHECK_THAT(refused, Contains("2 tasks") && Contains("srun --mpi=pmix") && Contains("srun --mpi=list"));
  CHECK(dpo::srun_without_mpi_reason(2).empty());  // MPI connected the step's tasks
  setenv("OMPI_COMM_WORLD_SIZE", "1", 1);          // mpirun's rank inside a step of its daemons
  CHECK(dpo::srun_without_mpi_reason(1).empty());
  unsetenv("OMPI_COMM_WORLD_SIZE");
  setenv("SLURM_STEP_NUM_TASKS", "1", 1);
  CHECK(dpo::srun_without_mpi_reason(1).empty());
  unsetenv("SLURM_STEP_NUM_TASKS");
  unsetenv("SLURM_STEP_ID");
  setenv("SLURM_NTASKS", "2", 1);  // the batch script of a 2-task job is no step
  CHECK(dpo::srun_without_mpi_reason(1).empty());
  unsetenv("SLURM_NTASKS");
  if (ompi) setenv("OMPI_COMM_WORLD_SIZE", saved_ompi.c_str(), 1);
}
