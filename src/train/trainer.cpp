#include "dpo/train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/autograd.h>

#include "dpo/data/batch_plan.h"
#include "dpo/data/collate.h"
#include "dpo/data/preference_data.h"
#include "dpo/dist/dist.h"
#include "dpo/dist/grad_buckets.h"
#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/json_input.h"
#include "dpo/loss/logps.h"
#include "dpo/loss/loss.h"
#include "dpo/model/model.h"
#include "dpo/reference/reference_store.h"
#include "dpo/runtime/preemption.h"
#include "dpo/runtime/runtime.h"
#include "dpo/train/checkpoint.h"
#include "dpo/train/evaluate.h"
#include "dpo/train/metrics.h"
#include "dpo/train/optimization.h"
#include "dpo/train/throughput.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string objective_name(Objective o) { return o == Objective::Dpo ? "dpo" : "sft"; }

// Tokens the forward of these examples processes (prompt + response of each row, no padding).
int64_t forward_tokens(const PreferenceDataset& data, const std::vector<int64_t>& indices, Objective objective) {
  int64_t tokens = 0;
  for (const int64_t i : indices) {
    const auto& p = data[static_cast<size_t>(i)];
    tokens += static_cast<int64_t>(p.prompt.size() + p.chosen.size());
    if (objective == Objective::Dpo) tokens += static_cast<int64_t>(p.prompt.size() + p.rejected.size());
  }
  return tokens;
}

// What the loss of one global batch is divided by, so that the gradient does not depend on how
// the batch is split: pairs for DPO (a mean over pairs), scored chosen tokens for SFT (a mean over
// tokens, as maximum likelihood training does).
double loss_denominator(const PreferenceDataset& data, const std::vector<int64_t>& global, Objective objective) {
  if (objective == Objective::Dpo) return static_cast<double>(global.size());
  int64_t tokens = 0;
  for (const int64_t i : global) {
    const auto& p = data[static_cast<size_t>(i)];
    tokens += scored_token_count(p.prompt.size(), p.chosen.size());
  }
  return static_cast<double>(std::max<int64_t>(tokens, 1));
}

// The keys a resumed run must share with the run that wrote the checkpoint.
nlohmann::json resume_keys(const Config& c, Objective objective) {
  nlohmann::json keys = {{"model.policy", c.model.policy},
                         {"data.train", c.data.train},
                         {"data.max_length", c.data.max_length},
                         {"data.max_prompt_length", c.data.max_prompt_length},
                         {"data.truncation", c.data.truncation},
                         {"run.seed", c.run.seed},
                         {"train.global_batch_size", c.train.global_batch_size},
                         {"train.shuffle", c.train.shuffle},
                         {"train.optimizer", c.train.optimizer}};
  if (objective == Objective::Dpo) {
    keys["model.reference"] = c.model.reference;
    keys["loss.type"] = c.loss.type;
    keys["loss.beta"] = c.loss.beta;
    keys["loss.label_smoothing"] = c.loss.label_smoothing;
  }
  return keys;
}

// metrics.jsonl keeps exactly the lines of steps up to `step`, so a resumed run's file equals an
// uninterrupted one's (lines written after the checkpoint by the interrupted run are dropped).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j;  // a line that is not (bounded, well-formed) JSON is dropped like a later step's
    try {
      j = parse_json(line, path);
    } catch (const Error&) {
    }
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  write_file_durably(path, kept);
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

class Trainer {
 public:
  Trainer(const Config& config, Objective objective, Communicator& communicator, MicroBatchHook after_micro_batch)
      : config_(config), objective_(objective), comm_(communicator), after_micro_batch_(std::move(after_micro_batch)) {}
  TrainSummary run();

 private:
  void load_models_and_resume();
  MetricSums micro_step(const std::vector<int64_t>& indices, double scale, bool last_backward);
  const std::vector<std::string>& metric_names() const;
  bool is_root() const { return comm_.rank() == 0; }
  std::map<std::string, double> step_means(const MetricSums& sums) const;
  std::map<std::string, double> evaluate();
  void write_metrics(const nlohmann::json& line);
  // Rank 0 writes the checkpoint (every rank holds the same parameters); it counts for all once
  // every rank has passed the barrier after it.
  void save() {
    if (is_root()) save_checkpoint(config_.run.output_dir, *policy_, *optimizer_, state_, config_.train.keep_checkpoints);
    comm_.barrier();
  }
  void print_progress(const std::map<std::string, double>& m, int64_t total_steps, double elapsed, int64_t done_here);
  size_t stop_points_before_last_backward(size_t global_pairs) const;
  TrainSummary stop(int64_t abandoned_step);
  void check_stored_reference(const std::vector<int64_t>& first_micro_batch);
  PairLogps reference_logps(const PairBatch& batch);

  const Config& config_;
  const Objective objective_;
  Communicator& comm_;
  std::unique_ptr<GradientBuckets> buckets_;
  at::ScalarType dtype_ = at::kFloat;
  std::unique_ptr<PreferenceDataset> train_data_, eval_data_;
  CausalLM policy_, reference_;  // reference_ stays empty when its log-probs come from store_
  std::unique_ptr<ReferenceStore> store_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<at::Tensor> parameters_;
  TrainerState state_;
  TrainSummary summary_;
  std::string metrics_path_;
  int64_t last_saved_ = 0;  // step of the newest checkpoint (or of the start)
  MicroBatchHook after_micro_batch_;
};

void Trainer::load_models_and_resume() {
  const auto checkpoint = newest_checkpoint(config_.run.output_dir);
  state_.objective = objective_name(objective_);
  state_.extra["resume_keys"] = resume_keys(config_, objective_);
  if (checkpoint) {
    const TrainerState saved = load_trainer_state(*checkpoint);
    if (saved.objective != state_.objective)
      fail("{}: checkpoint of a '{}' run, but this is a '{}' run; use another run.output_dir", *checkpoint,
           saved.objective, state_.objective);
    const nlohmann::json& was = saved.extra.value("resume_keys", nlohmann::json::object());
    for (const auto& [key, value] : state_.extra["resume_keys"].items())
      if (was.contains(key) && was[key] != value)
        fail("{}: cannot resume: {} was {} in the run that wrote this checkpoint, now {}", *checkpoint, key,
             was[key].dump(), value.dump());
    state_.step = saved.step;
    state_.epoch = saved.epoch;
    state_.step_in_epoch = saved.step_in_epoch;
    state_.extra["skipped_steps"] = saved.extra.value("skipped_steps", 0);
    policy_ = load_model(*checkpoint, dtype_, config_.model.device);
    summary_.resumed_from = saved.step;
    fmt::print("resuming from {} (step {})\n", *checkpoint, saved.step);
  } else {
    policy_ = load_model(config_.model.policy, dtype_, config_.model.device);
    state_.extra["skipped_steps"] = 0;
  }
  policy_->train();
  parameters_ = policy_->parameters();
  // Every rank must start from the same weights (a stale node-local copy, or a node that does not
  // see rank 0's checkpoints, would otherwise train on silently and every replica diverge).
  require_same_weights_on_all_ranks(comm_, "model.policy", checkpoint ? *checkpoint : config_.model.policy, parameters_);
  optimizer_ = make_optimizer(config_.train, parameters_);
  if (checkpoint) load_optimizer_state(*checkpoint, *optimizer_);
  // Gradients live in flat buckets so that summing them across ranks is one collective per bucket.
  buckets_ = std::make_unique<GradientBuckets>(
      parameters_, BucketLimits{int64_t{1} << 20, config_.dist.bucket_mb << 20});

  if (objective_ == Objective::Dpo && !store_) {
    // Always a separate, frozen copy: the policy moves away from it as it trains.
    reference_ = load_model(config_.model.reference, dtype_, config_.model.device);
    reference_->eval();
    for (auto& p : reference_->parameters()) p.set_requires_grad(false);
    require_same_weights_on_all_ranks(comm_, "model.reference", config_.model.reference, reference_->parameters());
  }
}

const std::vector<std::string>& Trainer::metric_names() const {
  static const std::vector<std::string> sft = {"nll", "scored_tokens", "logps/chosen"};
  return objective_ == Objective::Dpo ? MetricSums::preference_metric_names() : sft;
}

MetricSums Trainer::micro_step(const std::vector<int64_t>& indices, double scale, bool last_backward) {
  // The last backward of the step launches each gradient bucket's reduction as soon as it is full.
  if (last_backward) buckets_->prepare_for_backward(comm_);
  MetricSums sums;
  if (objective_ == Objective::Dpo) {
    const PairBatch batch = collate_pairs(*train_data_, indices);
    const PairLogps ref = reference_logps(batch);
    const PairLogps pol = pair_logps(*policy_, batch);
    const PreferenceLogps logps{pol.chosen, pol.rejected, ref.chosen, ref.rejected, pol.chosen_tokens,
                                pol.rejected_tokens};
    const at::Tensor losses = preference_losses(logps, config_.loss);
    (losses.sum() * scale).backward();
    sums.add(pair_metrics(logps, losses, config_.loss));
  } else {
    const PairBatch batch = collate_chosen(*train_data_, indices);
    const at::Device device = parameters_.front().device();
    const SequenceLogps s =
        sequence_logps(policy_->forward(batch.input_ids.to(device)), batch.input_ids.to(device), batch.response_mask.to(device));
    const at::Tensor nll = -s.logps.sum();
    (nll * scale).backward();
    sums.add("nll", nll.item<double>());
    sums.add("scored_tokens", static_cast<double>(s.token_counts.sum().item<int64_t>()));
    sums.add("logps/chosen", s.logps.detach().sum().item<double>());
    sums.add_pairs(batch.num_pairs);
  }
  return sums;
}

PairLogps Trainer::reference_logps(const PairBatch& batch) {
  if (store_) return store_->logps(Split::Train, batch.example_indices, parameters_.front().device());
  at::NoGradGuard no_grad;  // not InferenceMode: these tensors meet autograd in the loss
  return pair_logps(*reference_, batch);
}

// With policy == reference, the stored values must be what the policy computes now; a difference
// means the file was made under other numerics (dtype, device, kernels). Worth a loud warning,
// not a refusal: the run is still a valid DPO run against those values.
void Trainer::check_stored_reference(const std::vector<int64_t>& first_micro_batch) {
  bool same = std::filesystem::equivalent(config_.model.policy, config_.model.reference);
  if (!same) {
    bool equal_weights = false;
    if (is_root()) equal_weights = model_fingerprint(config_.model.policy) == store_->file().provenance.model_fingerprint;
    same = comm_.any(equal_weights);
  }
  if (!same) return;
  double worst = 0.0;
  if (!first_micro_batch.empty()) {
    policy_->eval();
    c10::InferenceMode no_grad;
    const PairBatch batch = collate_pairs(*train_data_, first_micro_batch);
    const PairLogps pol = pair_logps(*policy_, batch);
    const PairLogps ref = store_->logps(Split::Train, batch.example_indices, pol.chosen.device());
    const auto relative = [](const at::Tensor& a, const at::Tensor& b) {
      return ((a.to(at::kDouble) - b.to(at::kDouble)).abs() / b.to(at::kDouble).abs().clamp_min(1.0)).max().item<double>();
    };
    worst = std::max(relative(pol.chosen, ref.chosen), relative(pol.rejected, ref.rejected));
    policy_->train();
  }
  worst = comm_.all_reduce_max(worst);
  if (worst > 1e-3 && is_root())
    fmt::print(stderr,
               "dpo: warning: {}: model.policy == model.reference but stored reference log-probs differ by {:.3g} "
               "(relative) from the policy's: was the file computed with another dtype/device ({} on {})?\n",
               store_->path(), worst, store_->file().provenance.dtype, store_->file().provenance.device);
}

std::map<std::string, double> Trainer::step_means(const MetricSums& sums) const {
  if (objective_ == Objective::Dpo) return sums.means();
  const double tokens = std::max(1.0, sums.sums().count("scored_tokens") ? sums.sums().at("scored_tokens") : 0.0);
  const double nll = sums.sums().count("nll") ? sums.sums().at("nll") : 0.0;
  return {{"loss", nll / tokens}, {"logps/chosen", sums.means().count("logps/chosen") ? sums.means().at("logps/chosen") : 0.0}};
}

std::map<std::string, double> Trainer::evaluate() {
  policy_->eval();
  std::map<std::string, double> out;
  if (objective_ == Objective::Dpo) {
    out = (store_ ? evaluate_pairs(*policy_, *store_, Split::Eval, *eval_data_, config_.loss,
                                   config_.train.micro_batch_size, comm_)
                  : evaluate_pairs(*policy_, *reference_, *eval_data_, config_.loss, config_.train.micro_batch_size,
                                   comm_))
              .means();
  } else {
    c10::InferenceMode no_grad;
    std::vector<double> nll_tokens = {0.0, 0.0};
    double& nll = nll_tokens[0];
    double& tokens = nll_tokens[1];
    const auto n = static_cast<int64_t>(eval_data_->size());
    const int64_t world = comm_.world_size(), batch = config_.train.micro_batch_size;
    const at::Device device = parameters_.front().device();
    for (int64_t begin = comm_.rank(); begin < n; begin += batch * world) {
      std::vector<int64_t> indices;
      for (int64_t i = begin; i < std::min(n, begin + batch * world); i += world) indices.push_back(i);
      const PairBatch batch = collate_chosen(*eval_data_, indices);
      const SequenceLogps s = sequence_logps(policy_->forward(batch.input_ids.to(device)), batch.input_ids.to(device),
                                             batch.response_mask.to(device));
      nll -= s.logps.sum().item<double>();
      tokens += static_cast<double>(s.token_counts.sum().item<int64_t>());
    }
    comm_.all_reduce_sum(nll_tokens);
    out["loss"] = nll / std::max(tokens, 1.0);
  }
  policy_->train();
  return out;
}

void Trainer::write_metrics(const nlohmann::json& line) {
  if (!is_root()) return;
  append_durably(metrics_path_, line.dump() + "\n");
}

void Trainer::print_progress(const std::map<std::string, double>& m, int64_t total_steps, double elapsed,
                             int64_t done_here) {
  if (!is_root()) return;
  const double eta = done_here > 0 ? elapsed / static_cast<double>(done_here) * static_cast<double>(total_steps - state_.step) : 0.0;
  std::string line = fmt::format("step {}/{} | loss {:.4f}", state_.step, total_steps, m.at("loss"));
  if (m.count("rewards/accuracies")) line += fmt::format(" | acc {:.3f} | margin {:.4f}", m.at("rewards/accuracies"), m.at("rewards/margins"));
  line += fmt::format(" | grad {:.3g} | lr {:.3g} | {:.0f} tok/s | ETA {}", m.at("grad_norm"), m.at("lr"),
                      m.at("tokens_per_s"), format_duration(eta));
  // A terminal gets one line rewritten in place; a log file gets one line per logged step.
  if (stdout_is_interactive()) fmt::print("\r{:<120}", line);
  else fmt::print("{}\n", line);
  std::fflush(stdout);
}

// How many of a step's micro-batch boundaries every rank reaches before any rank starts its last
// backward (which may launch non-blocking gradient reductions that a stop check must not
// interleave with): the last backward of rank r is at micro-batch ceil(pairs of r / micro) - 1,
// and the rank with the fewest pairs that has any is rank min(world, pairs) - 1.
size_t Trainer::stop_points_before_last_backward(size_t global_pairs) const {
  const auto pairs = static_cast<int64_t>(global_pairs), world = static_cast<int64_t>(comm_.world_size());
  const int64_t fewest = std::min(world, pairs) - 1;
  if (fewest < 0) return 0;
  const int64_t share = (pairs - fewest + world - 1) / world;
  const int64_t micro = config_.train.micro_batch_size;
  return static_cast<size_t>((share + micro - 1) / micro - 1);
}

// Every rank stops together: saves the last completed step unless it is saved (or is the start),
// and returns the preempted summary. `abandoned_step` > 0 when the stop came inside that step.
TrainSummary Trainer::stop(int64_t abandoned_step) {
  if (last_saved_ != state_.step) save();
  if (stdout_is_interactive()) fmt::print("\n");
  const std::string during = abandoned_step > 0 ? fmt::format(" during step {} (abandoned)", abandoned_step) : "";
  if (state_.step == 0)
    fmt::print("stop requested (SIGTERM/SIGUSR1){}: no step completed, nothing to save; rerun the same command\n", during);
  else
    fmt::print("stop requested (SIGTERM/SIGUSR1){}: checkpoint of step {} saved; rerun the same command to resume\n",
               during, state_.step);
  summary_.steps = state_.step;
  summary_.preempted = true;
  summary_.skipped_steps = state_.extra["skipped_steps"].get<int64_t>();
  return summary_;
}

TrainSummary Trainer::run() {
  const Config& c = config_;
  if (c.data.train.empty()) fail("data.train: dpo {} needs a training dataset (set data.train)", objective_name(objective_));
  dtype_ = parse_dtype(c.model.dtype);
  // Checked before any model is loaded, so a mismatching file fails fast; the reference model is
  // then never loaded.
  if (objective_ == Objective::Dpo && !c.reference.logps_path.empty())
    store_ = std::make_unique<ReferenceStore>(ReferenceStore::open(c, true, !c.data.eval.empty(), comm_));
  if (store_) require_same_reference_on_all_ranks(comm_, *store_);
  fs::create_directories(c.run.output_dir);
  metrics_path_ = (fs::path(c.run.output_dir) / "metrics.jsonl").string();

  load_models_and_resume();
  const TruncationRule rule = truncation_rule(c.data);
  train_data_ = std::make_unique<PreferenceDataset>(PreferenceDataset::load(c.data.train, rule, policy_->spec().vocab_size));
  fmt::print("{}\n", train_data_->summary_line());
  require_same_dataset_on_all_ranks(comm_, "data.train", *train_data_);
  if (!c.data.eval.empty()) {
    eval_data_ = std::make_unique<PreferenceDataset>(PreferenceDataset::load(c.data.eval, rule, policy_->spec().vocab_size));
    fmt::print("{}\n", eval_data_->summary_line());
    require_same_dataset_on_all_ranks(comm_, "data.eval", *eval_data_);
  }
  if (store_) {
    store_->require_examples(Split::Train, *train_data_);
    if (eval_data_) store_->require_examples(Split::Eval, *eval_data_);
    fmt::print("reference log-probs from {} (the reference model is not loaded)\n", store_->path());
  }

  const BatchPlan plan(static_cast<int64_t>(train_data_->size()), c.train.global_batch_size, c.train.micro_batch_size,
                       comm_.world_size(), static_cast<uint64_t>(c.run.seed), c.train.shuffle);
  const int64_t epoch_steps = plan.steps_per_epoch();
  int64_t total_steps = c.train.epochs * epoch_steps;
  if (c.train.max_steps > 0) total_steps = std::min(total_steps, c.train.max_steps);
  if (is_root()) truncate_metrics(metrics_path_, state_.step);

  // Every rank measures at once, so the sum is the peak of the machine as the ranks share it.
  std::vector<double> peak = {measure_matmul_peak_flops(c.model.device, dtype_, 0.25)};
  comm_.all_reduce_sum(peak);
  const double peak_flops = peak[0];
  // Forward FLOPs per token multiplier: policy forward + backward ~ 3x, a live reference forward 1x.
  const double flops_factor = objective_ == Objective::Dpo && !store_ ? 4.0 : 3.0;
  fmt::print("dpo {}: {} pairs, {} steps/epoch, {} steps, global batch {} = {} x {} accumulation x {} ranks ({}), {} | "
             "{} on {}, matmul peak {:.1f} GFLOP/s\n",
             objective_ == Objective::Dpo ? "train" : "sft", train_data_->size(), epoch_steps, total_steps,
             c.train.global_batch_size, c.train.micro_batch_size, plan.accumulation_steps(), comm_.world_size(),
             comm_.name(), c.train.optimizer, c.model.dtype, c.model.device, peak_flops / 1e9);

  if (store_ && state_.step == 0 && total_steps > 0) {
    const auto first = plan.rank_micro_batches(state_.epoch, state_.step_in_epoch, comm_.rank());
    check_stored_reference(first.empty() ? std::vector<int64_t>{} : first.front());
  }
  const auto run_start = Clock::now();
  const int64_t first_step = state_.step;
  last_saved_ = state_.step;
  while (state_.step < total_steps) {
    const auto step_start = Clock::now();
    const std::vector<int64_t> global = plan.global_batch(state_.epoch, state_.step_in_epoch);
    const double scale = 1.0 / loss_denominator(*train_data_, global, objective_);
    const double lr = learning_rate(c.train, state_.step, total_steps);
    set_learning_rate(*optimizer_, lr);
    buckets_->zero();

    MetricSums sums;
    const auto micro_batches = plan.rank_micro_batches(state_.epoch, state_.step_in_epoch, comm_.rank());
    size_t last = micro_batches.size();
    for (size_t i = 0; i < micro_batches.size(); ++i)
      if (!micro_batches[i].empty()) last = i;
    const size_t stop_points = stop_points_before_last_backward(global.size());
    for (size_t i = 0; i < micro_batches.size(); ++i) {
      // A stop between micro-batches abandons this step: the parameters and the optimizer are
      // still those of the last completed step, which is what gets saved.
      if (i > 0 && i <= stop_points && comm_.any(stop_requested())) return stop(state_.step + 1);
      if (micro_batches[i].empty()) continue;
      const MetricSums s = micro_step(micro_batches[i], scale, i == last);
      for (const auto& [name, value] : s.sums()) sums.add(name, value);
      sums.add_pairs(s.pairs());
      if (after_micro_batch_) after_micro_batch_(state_.step + 1, static_cast<int64_t>(i));
    }
    const auto sync_start = Clock::now();
    buckets_->all_reduce_sum(comm_);
    all_reduce(sums, metric_names(), comm_);
    const double sync_seconds = std::chrono::duration<double>(Clock::now() - sync_start).count();
    const double grad_norm = clip_grad_norm(parameters_, c.train.max_grad_norm);
    std::map<std::string, double> m = step_means(sums);
    const bool finite = std::isfinite(m.at("loss")) && std::isfinite(grad_norm);
    const int64_t step_number = state_.step + 1;
    if (!finite) {
      const std::string what = fmt::format("loss {} and grad_norm {}", m.at("loss"), grad_norm);
      if (!c.train.skip_nonfinite)
        fail("step {}: non-finite {}; stopped before the update, nothing of this step was saved "
             "(set train.skip_nonfinite: true to skip such steps)", step_number, what);
      if (is_root()) fmt::print(stderr, "dpo: warning: step {}: non-finite {}; update skipped\n", step_number, what);
      buckets_->zero();
      state_.extra["skipped_steps"] = state_.extra["skipped_steps"].get<int64_t>() + 1;
    } else {
      optimizer_->step();
    }

    state_.step = step_number;
    if (++state_.step_in_epoch == epoch_steps) {
      state_.step_in_epoch = 0;
      ++state_.epoch;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - step_start).count();
    const int64_t tokens = forward_tokens(*train_data_, global, objective_);
    const double mean_row = static_cast<double>(tokens) / static_cast<double>(global.size() * (objective_ == Objective::Dpo ? 2 : 1));
    m["grad_norm"] = grad_norm;
    m["lr"] = lr;
    m["tokens_per_s"] = static_cast<double>(tokens) / seconds;
    m["mfu"] = flops_factor * policy_->forward_flops_per_token(static_cast<int64_t>(std::lround(mean_row))) *
               static_cast<double>(tokens) / seconds / peak_flops;
    m["peak_memory_mib"] = peak_memory_mib(c.model.device);
    m["step_time_s"] = seconds;
    m["grad_sync_s"] = sync_seconds;
    summary_.last_metrics = m;

    if (step_number % c.run.log_every == 0 || step_number == total_steps || !finite) {
      nlohmann::json line = {{"step", step_number},
                             {"epoch", static_cast<double>(state_.epoch) +
                                           static_cast<double>(state_.step_in_epoch) / static_cast<double>(epoch_steps)}};
      for (const auto& [name, value] : m) line[name] = value;
      if (!finite) line["skipped"] = true;
      write_metrics(line);
      print_progress(m, total_steps, std::chrono::duration<double>(Clock::now() - run_start).count(),
                     step_number - first_step);
    }
    if (eval_data_ && c.train.eval_every > 0 && step_number % c.train.eval_every == 0) {
      nlohmann::json line = {{"step", step_number}};
      for (const auto& [name, value] : evaluate()) line["eval_" + name] = value;
      write_metrics(line);
      if (is_root())
        fmt::print("eval at step {}: loss {:.4f}{}\n", step_number, line["eval_loss"].get<double>(),
                 line.contains("eval_rewards/accuracies")
                     ? fmt::format(", accuracy {:.3f}", line["eval_rewards/accuracies"].get<double>())
                     : "");
    }
    if (c.train.save_every > 0 && step_number % c.train.save_every == 0) {
      save();
      last_saved_ = step_number;
    }
    // Reduced so that every rank stops after the same step, whichever rank got the signal.
    if (comm_.any(stop_requested()) && state_.step < total_steps) return stop(0);
  }
  if (stdout_is_interactive()) fmt::print("\n");
  if (last_saved_ != state_.step) save();
  summary_.steps = state_.step;
  summary_.skipped_steps = state_.extra["skipped_steps"].get<int64_t>();
  summary_.final_model_dir = (fs::path(c.run.output_dir) / "final").string();
  if (is_root()) save_model(*policy_, summary_.final_model_dir);
  comm_.barrier();
  return summary_;
}

}  // namespace

TrainSummary run_training(const Config& config, Objective objective, Communicator& communicator,
                          MicroBatchHook after_micro_batch) {
  return Trainer(config, objective, communicator, std::move(after_micro_batch)).run();
}

TrainSummary run_training(const Config& config, Objective objective) {
  const auto alone = make_single_process_communicator();
  return run_training(config, objective, *alone);
}

}  // namespace dpo
