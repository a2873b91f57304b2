// Data-parallel training's contract, run under mpiexec with 2 and 3 ranks. N ranks sum the
// gradients of 1 rank on the same global batch and follow its loss and metrics (within float
// rounding, docs/numerics.md), including micro-batch accumulation and a partial last batch; 2 ranks
// with one pair each train bit-identically to 1 rank accumulating the same pairs; evaluation over
// ranks equals evaluation alone; precompute-ref over N ranks writes the values of a 1-rank
// precompute, and training on them equals training with the live reference.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include "catch2_api.h"
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/config/config.h"
#include "dpo/data/batch_plan.h"
#include "dpo/data/collate.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/dist/dist.h"
#include "dpo/dist/grad_buckets.h"
#include "dpo/loss/logps.h"
#include "dpo/loss/loss.h"
#include "dpo/model/model.h"
#include "dpo/reference/precompute.h"
#include "dpo/reference/reference_store.h"
#include "dpo/train/evaluate.h"
#include "dpo/train/trainer.h"
#include "float_rounding.h"
#include "mpi_world.h"
#include "tiny_llama.h"

namespace fs = std::filesystem;

namespace {

// Rank 0 makes the scratch directory, the model and the data; every rank gets the path.
fs::path shared_scratch(dpo::Communicator& comm, const std::string& name) {
  const fs::path dir = shared_directory(comm, name);
  if (comm.rank() == 0) {
    const std::string path = dir.string();
    dpo::save_model(*tiny_llama(5), path + "/model");
    dpo::SyntheticTaskOptions task;
    task.pairs = 30;  // 12-pair global batches: the third is partial (6 pairs)
    task.vocab_size = 32;
    task.seed = 4;
    const auto pairs = dpo::make_synthetic_pairs(task);
    dpo::write_preference_jsonl(path + "/train.jsonl", pairs);
    dpo::write_preference_jsonl(path + "/eval.jsonl", std::vector<dpo::RawPreferencePair>(pairs.begin(), pairs.begin() + 11));
  }
  comm.barrier();  // the files exist before any rank reads them
  return dir;
}

// SGD at a large rate, and AdamW at a moderate one (each moves the tiny model visibly in 6 steps).
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

// Measurements, and padding_share: a property of the rows, which depend on which pairs share a
// rank's micro-batch, not of the math.
bool is_timing(const std::string& key) {
  return key == "tokens_per_s" || key == "mfu" || key == "peak_memory_mib" || key == "step_time_s" ||
         key == "grad_sync_s" || key == "padding_share";
}

using NamedGradients = std::map<std::string, at::Tensor>;

// The summed gradient of one global batch, before clipping and the update, formed as the trainer
// forms it (trainer.cpp): this rank's micro-batches of the BatchPlan, each pair's loss divided by
// the pairs of the global batch, backward into flat gradient buckets, then one bucket all-reduce
// across `comm`. `policy_dir` gives the parameters, `reference_dir` the frozen reference.
NamedGradients global_batch_gradients(const dpo::Config& config, const fs::path& policy_dir,
                                      const fs::path& reference_dir, int64_t epoch, int64_t step_in_epoch,
                                      dpo::Communicator& comm) {
  dpo::CausalLM policy = dpo::load_model(policy_dir.string(), at::kFloat);
  dpo::CausalLM reference = dpo::load_model(reference_dir.string(), at::kFloat);
  policy->train();
  reference->eval();
  for (auto& p : reference->parameters()) p.set_requires_grad(false);
  const auto data = dpo::PreferenceDataset::load(config.data.train, dpo::truncation_rule(config.data),
                                                 policy->spec().vocab_size);
  const dpo::BatchPlan plan(static_cast<int64_t>(data.size()), config.train.global_batch_size,
                            config.train.micro_batch_size, comm.world_size(), static_cast<uint64_t>(config.run.seed),
                            config.train.shuffle);
  const double pairs = static_cast<double>(plan.global_batch(epoch, step_in_epoch).size());
  dpo::GradientBuckets buckets(policy->parameters(), dpo::BucketLimits{});
  buckets.zero();
  for (const auto& micro_batch : plan.rank_micro_batches(epoch, step_in_epoch, comm.rank())) {
    if (micro_batch.empty()) continue;  // a partial last batch leaves some ranks' micro-batches empty
    const dpo::PairBatch batch = dpo::collate_pairs(data, micro_batch);
    dpo::PairLogps ref;
    {
      at::NoGradGuard no_grad;
      ref = dpo::pair_logps(*reference, batch);
    }
    const dpo::PairLogps pol = dpo::pair_logps(*policy, batch);
    const dpo::PreferenceLogps logps{pol.chosen, pol.rejected, ref.chosen, ref.rejected, pol.chosen_tokens,
                                     pol.rejected_tokens};
    (dpo::preference_losses(logps, config.loss).sum() / pairs).backward();
  }
  buckets.all_reduce_sum(comm);
  NamedGradients out;
  for (const auto& item : policy->named_parameters()) out[item.key()] = item.value().grad().detach().clone();
  return out;
}

}  // namespace

TEST_CASE("N ranks sum the gradients of 1 rank on the same global batch", "[mpi][training]") {
  auto comm = world();
  const int ranks = comm->world_size();
  const fs::path dir = shared_scratch(*comm, "gradients");
  const dpo::Config config = run_config(dir, "unused", 2, "sgd");
  // Parameters that training moved, so that the policy differs from the reference (at the initial
  // parameters every pair's log-ratio difference is 0).
  if (comm->rank() == 0) {
    dpo::Config moved = config;
    moved.train.max_steps = 3;
    moved.run.output_dir = (dir / "moved").string();
    dpo::run_training(moved, dpo::Objective::Dpo);
  }
  comm->barrier();
  struct Point {
    std::string what;
    fs::path policy;
    int64_t epoch, step_in_epoch;
  };
  // 12 pairs per step in micro-batches of 2: 6, 3 or 2 accumulation steps on 1, 2 or 3 ranks; the
  // third step of an epoch is partial (6 pairs), so some ranks' micro-batches are empty.
  const std::vector<Point> points = {{"initial parameters, first batch", dir / "model", 0, 0},
                                     {"trained parameters, partial last batch", dir / "moved" / "final", 0, 2},
                                     {"trained parameters, a batch of epoch 2", dir / "moved" / "final", 1, 1}};
  const auto alone = dpo::make_single_process_communicator();
  for (const Point& point : points) {
    const NamedGradients many = global_batch_gradients(config, point.policy, dir / "model", point.epoch,
                                                       point.step_in_epoch, *comm);
    if (comm->rank() != 0) continue;
    const NamedGradients one = global_batch_gradients(config, point.policy, dir / "model", point.epoch,
                                                      point.step_in_epoch, *alone);
    REQUIRE(many.size() == one.size());
    for (const auto& [name, gradient] : one) {
      INFO(ranks << " ranks, " << point.what << ": " << name);
      REQUIRE(gradient.norm().item<double>() > 0);  // every parameter gets a gradient, so the check means something
      // Other micro-batch composition and summation order: equal to float rounding, compared
      // normwise per tensor (docs/numerics.md).
      CHECK(float_rounding::normwise_relative_difference(many.at(name), gradient) < float_rounding::kGradientRelative);
    }
  }
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST_CASE("N ranks train the loss and metrics of 1 rank on the same global batches", "[mpi][training]") {
  auto comm = world();
  const int ranks = comm->world_size();
  const fs::path dir = shared_scratch(*comm, "train");
  for (const std::string optimizer : {"sgd", "adamw"}) {
    const dpo::TrainSummary many = dpo::run_training(run_config(dir, "many-" + optimizer, 2, optimizer), dpo::Objective::Dpo, *comm, at::kCPU);
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
        CHECK_FALSE(at::equal(item.value(), c[item.key()]));  // training moved it
        // SGD's update is lr x the gradient, so 6 steps of it stay within the gradients' rounding
        // (the test above), measured against the update itself. AdamW's parameters are not
        // compared: it divides by sqrt(v), which turns rounding-level differences in near-zero
        // gradient entries into steps of order lr (docs/numerics.md); its gradients are compared
        // above and its trajectory below.
        if (optimizer == "sgd")
          CHECK(float_rounding::normwise_relative_difference(b[item.key()] - c[item.key()], item.value() - c[item.key()]) <
                float_rounding::kGradientRelative);
      }
      // Loss, rewards, log-probs and grad_norm of every step and eval: rounding-equal forward values
      // (docs/numerics.md). For AdamW this holds although its parameters may differ by ~lr in some
      // entries: those are the entries whose gradient is at rounding level, so the loss barely
      // depends on them.
      const auto lines_one = metric_lines(dir / ("one-" + optimizer));
      const auto lines_many = metric_lines(dir / ("many-" + optimizer));
      REQUIRE(lines_one.size() == lines_many.size());
      REQUIRE(lines_one.size() == 6 + 2);  // six steps, eval after steps 3 and 6
      for (size_t i = 0; i < lines_one.size(); ++i) {
        for (const auto& [key, value] : lines_one[i].items()) {
          if (is_timing(key)) continue;
          INFO(optimizer << " " << ranks << " ranks, line " << i << " " << key);
          REQUIRE(lines_many[i].contains(key));
          const bool gradient = key == "grad_norm";
          CHECK(lines_many[i][key].get<double>() ==
                Approx(value.get<double>())
                    .epsilon(gradient ? float_rounding::kGradientRelative : float_rounding::kForwardRelative)
                    .margin(float_rounding::kForwardAbsolute));
        }
      }
    }
    comm->barrier();
  }
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST_CASE("2 ranks with one pair each train bit-identically to 1 rank accumulating the same pairs", "[mpi][training]") {
  auto comm = world();
  // With micro-batches of 1 pair and a global batch of 2, rank r of 2 takes exactly the r-th
  // micro-batch of the 1-rank run: the same forwards and backwards in the same shapes, and a sum of
  // two gradients, which is the same float either way round (docs/numerics.md). With 3 ranks the
  // order of a sum of three is MPI's choice, so only 2 ranks are bit-identical.
  if (comm->world_size() != 2) {
    SUCCEED("needs exactly 2 ranks");
    return;
  }
  const fs::path dir = shared_scratch(*comm, "pairs");
  const auto config = [&](const std::string& output) {
    dpo::Config c = run_config(dir, output, 1, "adamw");
    c.train.global_batch_size = 2;
    c.train.max_steps = 4;
    c.train.eval_every = 0;  // eval sums per rank first: a different order of double additions
    return c;
  };
  dpo::run_training(config("many"), dpo::Objective::Dpo, *comm, at::kCPU);
  if (comm->rank() == 0) {
    dpo::run_training(config("one"), dpo::Objective::Dpo);
    const auto one = dpo::load_model((dir / "one" / "final").string(), at::kFloat);
    const auto two = dpo::load_model((dir / "many" / "final").string(), at::kFloat);
    auto b = two->named_parameters();
    for (const auto& item : one->named_parameters()) {
      INFO(item.key());
      CHECK(at::equal(item.value(), b[item.key()]));
    }
    const auto lines_one = metric_lines(dir / "one"), lines_two = metric_lines(dir / "many");
    REQUIRE(lines_one.size() == lines_two.size());
    for (size_t i = 0; i < lines_one.size(); ++i)
      for (const auto& [key, value] : lines_one[i].items()) {
        if (is_timing(key)) continue;
        INFO("line " << i << " " << key << ": " << value.dump() << " vs " << lines_two[i][key].dump());
        CHECK(lines_two[i][key] == value);
      }
  }
  comm->barrier();
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
  // Micro-batches of 2 per rank vs 3 alone: other batch composition, so equal to float rounding
  // (docs/numerics.md).
  for (const auto& [name, value] : one.means()) {
    INFO(name);
    CHECK(many.means().at(name) ==
          Approx(value).epsilon(float_rounding::kForwardRelative).margin(float_rounding::kForwardAbsolute));
  }
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
  const dpo::PrecomputeSummary many = dpo::precompute_reference(with("many.h5"), *comm, at::kCPU);
  CHECK(many.examples == 30);
  CHECK(many.eval_examples == 11);
  CHECK(many.computed == 41);
  if (comm->rank() == 0) {
    const auto alone = dpo::make_single_process_communicator();
    dpo::precompute_reference(with("one.h5"), *alone, at::kCPU);
    const dpo::ReferenceFile a = dpo::read_reference_file((dir / "many.h5").string(), true);
    const dpo::ReferenceFile b = dpo::read_reference_file((dir / "one.h5").string(), true);
    const std::pair<const dpo::ReferenceSplit*, const dpo::ReferenceSplit*> splits[] = {{&a.train, &b.train},
                                                                                        {&*a.eval, &*b.eval}};
    for (const auto& [x, y] : splits) {
      REQUIRE(x->size() == y->size());
      // Rank r of N scores examples r, r+N, ... in batches of 4: other batch composition than
      // alone, so equal to float rounding (docs/numerics.md).
      for (size_t i = 0; i < x->size(); ++i) {
        INFO("example " << i);
        CHECK(x->chosen[i] == Approx(y->chosen[i]).epsilon(float_rounding::kForwardRelative));
        CHECK(x->rejected[i] == Approx(y->rejected[i]).epsilon(float_rounding::kForwardRelative));
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
  const dpo::PrecomputeSummary resumed = dpo::precompute_reference(with("resumed.h5"), *comm, at::kCPU);
  CHECK(resumed.resumed == 15 + 11);
  CHECK(resumed.computed == 15);
  if (comm->rank() == 0) {
    const auto resumed_values = dpo::read_reference_file((dir / "resumed.h5").string(), true).train.chosen;
    const auto fresh_values = dpo::read_reference_file((dir / "many.h5").string(), true).train.chosen;
    REQUIRE(resumed_values.size() == fresh_values.size());
    for (size_t i = 0; i < fresh_values.size(); ++i) {
      INFO("example " << i);
      if (i % 2 == 0)
        CHECK(resumed_values[i] == fresh_values[i]);  // kept from the .partial file: copied, not recomputed
      else  // rescored in batches of other composition: equal to float rounding (docs/numerics.md)
        CHECK(resumed_values[i] == Approx(fresh_values[i]).epsilon(float_rounding::kForwardRelative));
    }
    CHECK_FALSE(fs::exists(dir / "resumed.h5.partial"));
  }
  comm->barrier();

  // N ranks training from the file step like N ranks with the live reference (policy == reference).
  dpo::Config stored = with("many.h5");
  stored.run.output_dir = (dir / "stored").string();
  dpo::Config live = with("");
  live.reference.logps_path.clear();
  live.run.output_dir = (dir / "live").string();
  dpo::run_training(stored, dpo::Objective::Dpo, *comm, at::kCPU);
  dpo::run_training(live, dpo::Objective::Dpo, *comm, at::kCPU);
  if (comm->rank() == 0) {
    const auto p = dpo::load_model((dir / "stored" / "final").string(), at::kFloat);
    const auto q = dpo::load_model((dir / "live" / "final").string(), at::kFloat);
    auto qp = q->named_parameters();
    const auto initial = dpo::load_model((dir / "model").string(), at::kFloat);
    auto c = initial->named_parameters();
    // The stored values were scored in batches of 4, the live ones in micro-batches of 2: equal to
    // float rounding, so SGD's updates (lr x gradients) agree to the gradients' tolerance
    // (docs/numerics.md).
    for (const auto& item : p->named_parameters()) {
      INFO(item.key());
      CHECK(float_rounding::normwise_relative_difference(item.value() - c[item.key()], qp[item.key()] - c[item.key()]) <
            float_rounding::kGradientRelative);
    }
  }
  comm->barrier();
  if (comm->rank() == 0) fs::remove_all(dir);
}
