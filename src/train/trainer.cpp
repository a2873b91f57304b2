// The training loop, in the order of a step's data flow (docs/architecture.md): batch plan -> the objective's
// micro-steps (forward, loss, backward) -> gradient sync -> clip -> optimizer step -> metrics and
// progress -> eval -> checkpoint -> stop check. What a micro-step computes is the objective's
// (objective.h); this file owns the order, the accumulation and the run's state.
#include "dpo/train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "dpo/data/batch_plan.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/text_tokenization.h"
#include "dpo/dist/dist.h"
#include "dpo/dist/grad_buckets.h"
#include "dpo/error.h"
#include "dpo/model/model.h"
#include "dpo/model/precision.h"
#include "dpo/reference/fingerprint.h"
#include "dpo/runtime/console.h"
#include "dpo/runtime/preemption.h"
#include "dpo/train/checkpoint.h"
#include "dpo/train/loss_scaler.h"
#include "dpo/train/metrics.h"
#include "dpo/train/objective.h"
#include "dpo/train/optimization.h"
#include "dpo/train/progress.h"
#include "dpo/train/tensorboard_log.h"
#include "dpo/train/throughput.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The subcommand that trains `objective`, as messages name the run.
const char* command_of(Objective objective) { return objective == Objective::Dpo ? "train" : "sft"; }

// Every model directory the run writes carries the tokenizer and generation_config.json of these.
ServingSources serving_sources(const Config& c) { return {c.model.policy, c.model.tokenizer}; }

class Trainer {
 public:
  Trainer(const Config& config, Objective objective, Communicator& communicator, at::Device device,
          MicroBatchHook after_micro_batch)
      : config_(config),
        kind_(objective),
        comm_(communicator),
        device_(device),
        after_micro_batch_(std::move(after_micro_batch)) {}
  TrainSummary run();

 private:
  // Set-up, in this order.
  void set_up();
  void load_policy_and_resume();
  std::unique_ptr<PreferenceDataset> load_dataset(const std::string& key, const std::string& path);
  void plan_steps();
  // One step, in this order.
  std::optional<MetricSums> micro_steps(const std::vector<int64_t>& global);
  size_t stop_points_before_last_backward(size_t global_pairs) const;
  bool optimizer_step(int64_t step, double loss, double grad_norm);
  void advance_to(int64_t step);
  void add_throughput(std::map<std::string, double>& metrics, const ForwardWork& work, double seconds,
                      double sync_seconds) const;
  void count_work(const ForwardWork& work);
  void log_step(const std::map<std::string, double>& metrics, bool skipped) const;
  double epoch_progress() const;
  void evaluate();
  void save();
  // The end of a run.
  TrainSummary stop(int64_t abandoned_step);
  TrainSummary finish();

  bool is_root() const { return comm_.rank() == 0; }
  int64_t skipped_steps() const { return state_.extra.at("skipped_steps").get<int64_t>(); }

  const Config& config_;
  const Objective kind_;
  Communicator& comm_;
  const at::Device device_;  // the session's: cpu, or this rank's GPU
  MicroBatchHook after_micro_batch_;
  std::unique_ptr<TrainingObjective> objective_;
  Precision precision_;
  LossScaler loss_scaler_{false};
  CausalLM policy_;
  std::vector<at::Tensor> parameters_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<GradientBuckets> buckets_;  // the gradients, in flat buckets: one collective each
  std::unique_ptr<PreferenceDataset> train_data_, eval_data_;
  std::unique_ptr<BatchPlan> plan_;
  int64_t epoch_steps_ = 0, total_steps_ = 0;
  double peak_flops_ = 0;  // of all ranks together
  std::optional<MetricsLog> metrics_log_;
  std::optional<TensorBoardLog> tensorboard_;  // the same metrics as TensorBoard events (rank 0)
  std::optional<TrainingProgress> progress_;
  TrainerState state_;
  int64_t last_saved_ = 0;  // step of the newest checkpoint (or of the start)
  TrainSummary summary_;
};

TrainSummary Trainer::run() {
  set_up();
  const TrainOptions& c = config_.train;
  progress_.emplace(state_.step, total_steps_);
  last_saved_ = state_.step;
  while (state_.step < total_steps_) {
    const auto step_start = Clock::now();
    const int64_t step = state_.step + 1;  // the step being computed, 1-based
    const std::vector<int64_t> global = plan_->global_batch(state_.epoch, state_.step_in_epoch);  // all ranks'
    const double lr = learning_rate(c, state_.step, total_steps_);
    set_learning_rate(*optimizer_, lr);
    // This rank's share: the objective's forward, loss and backward of each of its micro-batches.
    const double loss_scale = loss_scaler_.scale();  // this step's (fp16-mixed; 1 otherwise)
    std::optional<MetricSums> sums = micro_steps(global);
    if (!sums) return stop(step);
    // Gradient sync: sums across ranks (each loss is already divided by the whole batch's
    // denominator), then the metric sums, so that metrics are means over the global batch.
    const auto sync_start = Clock::now();
    buckets_->all_reduce_sum(comm_);
    all_reduce(*sums, objective_->metric_names(), comm_);
    const double sync_seconds = seconds_since(sync_start);
    loss_scaler_.unscale(parameters_);
    const double grad_norm = clip_grad_norm(parameters_, c.max_grad_norm);
    std::map<std::string, double> metrics = objective_->step_means(*sums);
    const bool updated = optimizer_step(step, metrics.at("loss"), grad_norm);
    advance_to(step);

    // Metrics and progress, eval, checkpoint, stop check.
    metrics["grad_norm"] = grad_norm;
    metrics["lr"] = lr;
    if (loss_scaler_.enabled()) metrics["loss_scale"] = loss_scale;
    const ForwardWork work = objective_->forward_work(global);
    count_work(work);
    add_throughput(metrics, work, seconds_since(step_start), sync_seconds);
    summary_.last_metrics = metrics;
    if (step % config_.run.log_every == 0 || step == total_steps_ || !updated) log_step(metrics, !updated);
    if (eval_data_ && c.eval_every > 0 && step % c.eval_every == 0) evaluate();
    if (c.save_every > 0 && step % c.save_every == 0) save();
    // Reduced so that every rank stops after the same step, whichever rank got the signal.
    if (comm_.any(stop_requested()) && state_.step < total_steps_) return stop(0);
  }
  return finish();
}

void Trainer::set_up() {
  const Config& c = config_;
  if (c.data.train.empty()) fail("data.train: dpo {} needs a training dataset (set data.train)", command_of(kind_));
  precision_ = precision_of(c);
  require_precision_available(precision_, c.model.device);
  check_serving_sources(serving_sources(c));
  loss_scaler_ = LossScaler(precision_.needs_loss_scaling());
  // Before the policy: a stored reference that does not match this config fails fast.
  objective_ = kind_ == Objective::Dpo ? make_dpo_objective(c, comm_) : make_sft_objective(c, comm_);
  fs::create_directories(c.run.output_dir);
  load_policy_and_resume();
  train_data_ = load_dataset("data.train", c.data.train);
  if (!c.data.eval.empty()) eval_data_ = load_dataset("data.eval", c.data.eval);
  if (is_root() && c.data.eval.empty() && c.train.eval_every > 0)
    fmt::print(stderr, "dpo: warning: train.eval_every is {} but data.eval is not set: no evaluation will run\n",
               c.train.eval_every);
  objective_->attach(*policy_, *train_data_, eval_data_.get());
  plan_steps();
  if (state_.step == 0 && total_steps_ > 0) {
    const auto first = plan_->rank_micro_batches(state_.epoch, state_.step_in_epoch, comm_.rank());
    objective_->before_first_step(first.empty() ? std::vector<int64_t>{} : first.front());
  }
}

void Trainer::load_policy_and_resume() {
  const Config& c = config_;
  const auto checkpoint = newest_checkpoint(c.run.output_dir);
  state_ = starting_state(checkpoint, objective_->name(), resume_keys(c, objective_->resume_keys()), c.allow_changed);
  if (state_.extra.contains("changes_accepted") && is_root())
    fmt::print(stderr, "dpo: warning: {}: resuming with changes accepted by --allow-changed: {}\n", *checkpoint,
               state_.extra["changes_accepted"].get<std::string>());
  policy_ = load_model(checkpoint ? *checkpoint : c.model.policy, precision_, device_.str());
  if (state_.extra.contains("loss_scaler")) loss_scaler_.load_state(state_.extra["loss_scaler"]);
  if (checkpoint) {
    summary_.resumed_from = state_.step;
    fmt::print("resuming from {} (step {})\n", *checkpoint, state_.step);
  }
  policy_->train();
  policy_->set_gradient_checkpointing(c.train.gradient_checkpointing);
  parameters_ = policy_->parameters();
  const std::string lr_warning = low_precision_lr_warning(precision_, c.train.lr, parameters_);
  if (is_root() && !lr_warning.empty()) fmt::print(stderr, "dpo: warning: {}\n", lr_warning);
  // Every rank must start from the same weights (a stale node-local copy, or a node that does not
  // see rank 0's checkpoints, would otherwise train on silently and every replica diverge).
  require_same_weights_on_all_ranks(comm_, "model.policy", checkpoint ? *checkpoint : c.model.policy, parameters_);
  optimizer_ = make_optimizer(c.train, parameters_);
  if (checkpoint) load_optimizer_state(*checkpoint, *optimizer_);
  buckets_ = std::make_unique<GradientBuckets>(parameters_, BucketLimits{int64_t{1} << 20, c.dist.bucket_mb << 20});
}

std::unique_ptr<PreferenceDataset> Trainer::load_dataset(const std::string& key, const std::string& path) {
  auto data = std::make_unique<PreferenceDataset>(
      load_preference_data(key, path, config_, policy_->spec().vocab_size));
  fmt::print("{}\n", data->summary_line());
  require_same_dataset_on_all_ranks(comm_, key, *data);
  return data;
}

// The batch plan and the number of steps, the metrics logs from where the run starts, the device's
// peak and the line that describes the run.
void Trainer::plan_steps() {
  const Config& c = config_;
  plan_ = std::make_unique<BatchPlan>(static_cast<int64_t>(train_data_->size()), c.train.global_batch_size,
                                      c.train.micro_batch_size, comm_.world_size(), static_cast<uint64_t>(c.run.seed),
                                      c.train.shuffle);
  epoch_steps_ = plan_->steps_per_epoch();
  // HF's max_steps: when set, it is the run's length, whatever train.epochs says (the data repeats).
  total_steps_ = c.train.max_steps > 0 ? c.train.max_steps : c.train.epochs * epoch_steps_;
  const int64_t warmup = warmup_steps(c.train, total_steps_);
  if (is_root() && warmup > total_steps_)
    fmt::print(stderr, "dpo: warning: the warm-up ({} steps) is longer than the run ({} steps): the learning rate "
               "never reaches train.lr ({}); set train.warmup_steps or train.warmup_ratio\n", warmup, total_steps_,
               c.train.lr);
  metrics_log_.emplace(c.run.output_dir, state_.step, is_root());
  tensorboard_.emplace(c, state_.step, is_root());
  // Every rank measures at once, so the sum is the peak of the machine as the ranks share it.
  std::vector<double> peak = {measure_matmul_peak_flops(c.model.device, precision_.matmul, 0.25)};
  comm_.all_reduce_sum(peak);
  peak_flops_ = peak[0];
  fmt::print("dpo {}: {} pairs, {} steps/epoch, {} steps, global batch {} = {} x {} accumulation x {} ranks ({}), {} | "
             "{} on {}, matmul peak {:.1f} GFLOP/s\n",
             command_of(kind_), train_data_->size(), epoch_steps_, total_steps_, c.train.global_batch_size,
             c.train.micro_batch_size, plan_->accumulation_steps(), comm_.world_size(), comm_.name(), c.train.optimizer,
             precision_.describe(), device_.str(), peak_flops_ / 1e9);
}

// This rank's micro-batches of the global batch: the objective's forward, loss and backward of
// each, the gradients accumulating in the buckets. Nothing when a stop is requested between two of
// them: the step is then abandoned, and the parameters and the optimizer are still those of the
// last completed step, which is what gets saved.
std::optional<MetricSums> Trainer::micro_steps(const std::vector<int64_t>& global) {
  buckets_->zero();
  // fp16-mixed multiplies the loss by the loss scale (unscaled after the gradient sum).
  const double scale = loss_scaler_.scale() / objective_->loss_denominator(global);
  // Examples of similar length share a micro-batch: less padding, the same gradient.
  const auto micro_batches = group_by_length(
      plan_->rank_micro_batches(state_.epoch, state_.step_in_epoch, comm_.rank()),
      [&](int64_t i) { return (*train_data_)[static_cast<size_t>(i)].shared_prefix_length(); });
  objective_->begin_step(global, micro_batches);
  size_t last = micro_batches.size();
  for (size_t i = 0; i < micro_batches.size(); ++i)
    if (!micro_batches[i].empty()) last = i;
  const size_t stop_points = stop_points_before_last_backward(global.size());
  MetricSums sums;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    if (i > 0 && i <= stop_points && comm_.any(stop_requested())) return std::nullopt;
    if (micro_batches[i].empty()) continue;
    // The last backward of the step launches each gradient bucket's reduction as soon as it is full.
    if (i == last) buckets_->prepare_for_backward(comm_);
    sums.add(objective_->micro_step(micro_batches[i], scale));
    if (after_micro_batch_) after_micro_batch_(state_.step + 1, static_cast<int64_t>(i));
  }
  return sums;
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

// The update, unless the loss or the gradient norm is not finite: then the run stops before it
// (nothing of the step saved) or, with train.skip_nonfinite, skips it. Whether it updated.
bool Trainer::optimizer_step(int64_t step, double loss, double grad_norm) {
  const double loss_scale = loss_scaler_.scale();
  const bool applies = loss_scaler_.update(grad_norm);
  if (loss_scaler_.enabled()) state_.extra["loss_scaler"] = loss_scaler_.state();
  if (std::isfinite(loss) && !applies) {  // fp16 gradients overflowed: expected now and then, never fatal
    if (is_root())
      fmt::print(stderr, "dpo: step {}: float16 gradients overflowed at loss scale {:g}; update skipped, loss scale now {:g}\n",
                 step, loss_scale, loss_scaler_.scale());
    buckets_->zero();
    state_.extra["skipped_steps"] = skipped_steps() + 1;
    return false;
  }
  if (std::isfinite(loss) && std::isfinite(grad_norm)) {
    optimizer_->step();
    return true;
  }
  const std::string what = fmt::format("loss {} and grad_norm {}", loss, grad_norm);
  if (!config_.train.skip_nonfinite)
    fail("step {}: non-finite {}; stopped before the update, nothing of this step was saved "
         "(set train.skip_nonfinite: true to skip such steps)", step, what);
  if (is_root()) fmt::print(stderr, "dpo: warning: step {}: non-finite {}; update skipped\n", step, what);
  buckets_->zero();
  state_.extra["skipped_steps"] = skipped_steps() + 1;
  return false;
}

void Trainer::advance_to(int64_t step) {
  state_.step = step;
  if (++state_.step_in_epoch == epoch_steps_) {
    state_.step_in_epoch = 0;
    ++state_.epoch;
  }
}

// Hugging Face's running totals of the run (trainer_state.json's num_input_tokens_seen and
// total_flos): every step's tokens and FLOPs as the throughput metrics count them, over all ranks;
// kept in the resume state, so that a resumed run goes on counting.
void Trainer::count_work(const ForwardWork& work) {
  state_.extra["num_input_tokens_seen"] = state_.extra.value("num_input_tokens_seen", int64_t{0}) + work.tokens;
  state_.extra["total_flos"] = state_.extra.value("total_flos", 0.0) + work.flops;
}

void Trainer::add_throughput(std::map<std::string, double>& metrics, const ForwardWork& work, double seconds,
                             double sync_seconds) const {
  metrics["tokens_per_s"] = static_cast<double>(work.tokens) / seconds;
  metrics["mfu"] = work.flops / seconds / peak_flops_;
  metrics["peak_memory_mib"] = peak_memory_mib(config_.model.device);
  metrics["step_time_s"] = seconds;
  metrics["grad_sync_s"] = sync_seconds;
}

// Epochs done, as a fraction (Hugging Face's `epoch`).
double Trainer::epoch_progress() const {
  return static_cast<double>(state_.epoch) + static_cast<double>(state_.step_in_epoch) / static_cast<double>(epoch_steps_);
}

void Trainer::log_step(const std::map<std::string, double>& metrics, bool skipped) const {
  metrics_log_->append_step(state_.step, epoch_progress(), metrics, skipped);
  tensorboard_->log_step(state_.step, epoch_progress(), metrics);
  if (is_root()) progress_->print(state_.step, metrics);
}

void Trainer::evaluate() {
  policy_->eval();
  const std::map<std::string, double> means = objective_->evaluate();
  policy_->train();
  metrics_log_->append_eval(state_.step, means);
  tensorboard_->log_eval(state_.step, means);
  if (is_root()) print_eval_line(state_.step, means);
}

// Rank 0 writes the checkpoint (every rank holds the same parameters); it counts for all once
// every rank has passed the barrier after it.
void Trainer::save() {
  if (is_root()) {
    TrainerState saved = state_;
    const TrainOptions& t = config_.train;
    // Hugging Face Trainer's fields: num_train_epochs is the epochs max_steps spans when it is set.
    saved.hf = {{"epoch", epoch_progress()},
                {"max_steps", total_steps_},
                {"num_train_epochs", t.max_steps > 0 ? (total_steps_ + epoch_steps_ - 1) / epoch_steps_ : t.epochs},
                {"logging_steps", config_.run.log_every},
                {"eval_steps", t.eval_every},
                {"save_steps", t.save_every},
                {"train_batch_size", t.micro_batch_size},
                {"num_input_tokens_seen", state_.extra.value("num_input_tokens_seen", int64_t{0})},
                {"total_flos", state_.extra.value("total_flos", 0.0)},
                {"log_history", metrics_log_->log_history(state_.step)}};
    save_checkpoint(config_.run.output_dir, *policy_, *optimizer_, saved, t.keep_checkpoints, serving_sources(config_));
  }
  comm_.barrier();
  last_saved_ = state_.step;
}

// Every rank stops together: saves the last completed step unless it is saved (or is the start),
// and returns the preempted summary. `abandoned_step` > 0 when the stop came inside that step.
TrainSummary Trainer::stop(int64_t abandoned_step) {
  if (last_saved_ != state_.step) save();
  end_status_line();
  const std::string during = abandoned_step > 0 ? fmt::format(" during step {} (abandoned)", abandoned_step) : "";
  if (state_.step == 0)
    fmt::print("stop requested (SIGTERM/SIGUSR1){}: no step completed, nothing to save; rerun the same command\n", during);
  else
    fmt::print("stop requested (SIGTERM/SIGUSR1){}: checkpoint of step {} saved; rerun the same command to resume\n",
               during, state_.step);
  summary_.steps = state_.step;
  summary_.preempted = true;
  summary_.skipped_steps = skipped_steps();
  return summary_;
}

TrainSummary Trainer::finish() {
  end_status_line();
  // train.eval_every 0 means an eval at the end only (HF's eval_strategy "no" has none: said in the help).
  if (eval_data_ && config_.train.eval_every == 0 && state_.step > summary_.resumed_from) evaluate();
  if (last_saved_ != state_.step) save();
  summary_.steps = state_.step;
  summary_.skipped_steps = skipped_steps();
  summary_.final_model_dir = (fs::path(config_.run.output_dir) / "final").string();
  if (is_root()) {
    // As Hugging Face users expect, a bfloat16 policy gives a bfloat16 final model, also after
    // training on float32 master weights.
    const std::string& save_dtype = config_.train.save_dtype;
    save_model(*policy_, summary_.final_model_dir,
               save_dtype == "auto" ? stored_weights_dtype(config_.model.policy) : parse_dtype(save_dtype),
               serving_sources(config_));
  }
  comm_.barrier();
  return summary_;
}

}  // namespace

TrainSummary run_training(const Config& config, Objective objective, Communicator& communicator, at::Device device,
                          MicroBatchHook after_micro_batch) {
  return Trainer(config, objective, communicator, device, std::move(after_micro_batch)).run();
}

TrainSummary run_training(const Config& config, Objective objective) {
  const auto alone = make_single_process_communicator();
  return run_training(config, objective, *alone, at::Device(config.model.device));
}

}  // namespace dpo
