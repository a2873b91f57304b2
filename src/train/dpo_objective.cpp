// DPO: the preference loss of the policy's log-probs of chosen and rejected responses against the
// frozen reference's, taken from the stored reference log-probs or from a live reference forward.
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include "dpo/data/collate.h"
#include "dpo/dist/dist.h"
#include "dpo/loss/logps.h"
#include "dpo/loss/loss.h"
#include "dpo/model/precision.h"
#include "dpo/reference/fingerprint.h"
#include "dpo/reference/reference_store.h"
#include "dpo/reference/stored_reference_check.h"
#include "dpo/train/evaluate.h"
#include "dpo/train/gathered_logps.h"
#include "dpo/train/objective.h"

namespace dpo {
namespace {

// The row slots and padded slots of the step's forwards, summed like the metrics, for the
// padding_share metric.
const char* const kRowSlots = "rows/slots";
const char* const kPaddedSlots = "rows/padded";
std::vector<std::string> with_padding_sums(std::vector<std::string> names) {
  names.insert(names.end(), {kRowSlots, kPaddedSlots});
  return names;
}
void add_padding(MetricSums& sums, const PairBatch& batch) {
  sums.add(kRowSlots, static_cast<double>(batch.input_ids.numel()));
  sums.add(kPaddedSlots, static_cast<double>(batch.padded_tokens));
}

class DpoObjective final : public TrainingObjective {
 public:
  DpoObjective(const Config& config, Communicator& communicator);

  std::string name() const override { return "dpo"; }
  nlohmann::json resume_keys() const override {
    const LossOptions& l = config_.loss;
    return {{"model.reference", config_.model.reference}, {"loss.type", l.type},
            {"loss.weights", l.weights},                  {"loss.beta", l.beta},
            {"loss.label_smoothing", l.label_smoothing},  {"loss.discopop_tau", l.discopop_tau},
            {"loss.rpo_alpha", l.rpo_alpha},              {"loss.f_divergence", l.f_divergence},
            {"loss.f_alpha", l.f_alpha},                  {"loss.use_weighting", l.use_weighting},
            {"loss.ld_alpha", l.ld_alpha},                {"loss.simpo_gamma", l.simpo_gamma},
            {"loss.cpo_alpha", l.cpo_alpha}};
  }
  void attach(CausalLMImpl& policy, const PreferenceDataset& train, const PreferenceDataset* eval) override;
  void before_first_step(const std::vector<int64_t>& first_micro_batch) override {
    if (store_) warn_if_stored_reference_differs(config_, *store_, *policy_, *train_, first_micro_batch, comm_);
  }

  void begin_step(const std::vector<int64_t>& global, const std::vector<std::vector<int64_t>>& micro_batches) override;
  // The loss is a mean over the pairs of the global batch.
  double loss_denominator(const std::vector<int64_t>& global) const override {
    return static_cast<double>(global.size());
  }
  MetricSums micro_step(const std::vector<int64_t>& indices, double scale) override;
  const std::vector<std::string>& metric_names() const override { return metric_names_; }
  std::map<std::string, double> step_means(const MetricSums& sums) const override;
  ForwardWork forward_work(const std::vector<int64_t>& global) const override;

  std::map<std::string, double> evaluate() override;

 private:
  // The gradient of the whole global batch's loss with respect to each pair's policy log-probs,
  // for losses that couple the pairs (aot's sorts): computed from a gradient-free forward of every
  // micro-batch at the start of the step, then applied micro-batch by micro-batch.
  struct CoupledStep {
    std::optional<GatheredLogps> gathered;
    PreferenceLogps all;          // float64 [G], every rank
    at::Tensor losses;            // [G] per sorted rank (their sum is the batch's)
    at::Tensor d_chosen, d_rejected, d_unlikelihood;  // [G] d(sum of losses) / d(policy value)
  };
  void prepare_coupled_step(const std::vector<int64_t>& global, const std::vector<std::vector<int64_t>>& micro_batches);
  MetricSums coupled_micro_step(const PairBatch& batch, double scale);
  PairLogps reference_logps(const PairBatch& batch);

  const Config& config_;
  Communicator& comm_;
  std::optional<ReferenceStore> store_;  // with reference.logps_path; the reference model is then never loaded
  CausalLM reference_;                   // otherwise: a frozen copy of model.reference
  CausalLMImpl* policy_ = nullptr;
  const PreferenceDataset* train_ = nullptr;
  const PreferenceDataset* eval_ = nullptr;
  const bool with_reference_;
  const ResponseScoring scoring_;
  const PairLayout layout_;  // train.prefix_sharing
  const std::vector<std::string> metric_names_;
  BatchTotals totals_;  // of the current global batch (the sft term's token mean)
  CoupledStep coupled_;
};

DpoObjective::DpoObjective(const Config& config, Communicator& communicator)
    : config_(config),
      comm_(communicator),
      with_reference_(uses_reference(config.loss)),
      scoring_(response_scoring(config.loss)),
      layout_(pair_layout_of(config.train)),
      metric_names_(with_padding_sums(MetricSums::metric_names(config.loss))) {
  const std::string unread = unread_loss_options(config.loss);
  if (!unread.empty() && comm_.rank() == 0) fmt::print(stderr, "dpo: warning: {}\n", unread);
  if (config.reference.logps_path.empty() || !with_reference_) return;
  // Opened before any model is loaded, so that a file that does not match fails fast.
  store_ = ReferenceStore::open(config, /*check_train=*/true, /*check_eval=*/!config.data.eval.empty(), comm_);
  require_same_reference_on_all_ranks(comm_, *store_);
}

void DpoObjective::attach(CausalLMImpl& policy, const PreferenceDataset& train, const PreferenceDataset* eval) {
  require_loss_reads_data(config_.loss, "data.train", train);
  if (eval) require_loss_reads_data(config_.loss, "data.eval", *eval);
  policy_ = &policy;
  train_ = &train;
  eval_ = eval;
  if (!with_reference_) {
    note_reference_unused(config_, comm_);
    return;
  }
  if (!store_) {
    // Always a separate, frozen copy: the policy moves away from it as it trains. Loaded after the
    // policy, so that ranks holding other copies of one model are told about model.policy.
    const Config& c = config_;
    reference_ = load_model(c.model.reference, precision_of(c), policy.device().str());  // the policy's numerics and device
    reference_->eval();
    for (auto& p : reference_->parameters()) p.set_requires_grad(false);
    require_same_weights_on_all_ranks(comm_, "model.reference", c.model.reference, reference_->parameters());
    return;
  }
  store_->require_examples(Split::Train, train);
  if (eval) store_->require_examples(Split::Eval, *eval);
  fmt::print("reference log-probs from {} (the reference model is not loaded)\n", store_->path());
}

void DpoObjective::begin_step(const std::vector<int64_t>& global,
                              const std::vector<std::vector<int64_t>>& micro_batches) {
  // The sft term's token mean is over the global batch's chosen tokens (known from the data).
  totals_ = {static_cast<double>(global.size()), 0.0};
  for (const int64_t i : global) {
    const RawPreferencePair& p = (*train_)[static_cast<size_t>(i)];
    totals_.chosen_tokens += static_cast<double>(scored_token_count(p.prompt.size(), p.chosen.size()));
  }
  if (couples_pairs(config_.loss)) prepare_coupled_step(global, micro_batches);
}

void DpoObjective::prepare_coupled_step(const std::vector<int64_t>& global,
                                        const std::vector<std::vector<int64_t>>& micro_batches) {
  coupled_ = CoupledStep{};
  coupled_.gathered.emplace(global);
  {
    at::NoGradGuard no_grad;
    for (const auto& indices : micro_batches) {
      if (indices.empty()) continue;
      const PairBatch batch = collate_pairs(*train_, indices, layout_);
      const PairLogps ref = reference_logps(batch);
      coupled_.gathered->add(indices, pair_logps(*policy_, batch, scoring_), &ref);
    }
  }
  coupled_.all = coupled_.gathered->all_reduce(comm_, /*with_reference=*/true);
  // The policy's values as leaves: the loss's gradient with respect to each, in float64.
  PreferenceLogps leaves = coupled_.all;
  for (at::Tensor* t : {&leaves.policy_chosen, &leaves.policy_rejected, &leaves.rejected_unlikelihood})
    *t = t->detach().requires_grad_(true);
  if (!scoring_.unlikelihood) leaves.rejected_unlikelihood = at::Tensor();
  const at::Tensor losses = preference_losses(leaves, config_.loss, totals_);
  losses.sum().backward();
  coupled_.losses = losses.detach();
  coupled_.d_chosen = leaves.policy_chosen.grad();
  coupled_.d_rejected = leaves.policy_rejected.grad();
  if (scoring_.unlikelihood) coupled_.d_unlikelihood = leaves.rejected_unlikelihood.grad();
}

// The micro-batch's share of the batch gradient: sum_i dL/dv_i * v_i over its pairs' policy values
// v (the coefficients constant) has exactly the gradient of the coupled loss in the parameters.
MetricSums DpoObjective::coupled_micro_step(const PairBatch& batch, double scale) {
  const PairLogps pol = pair_logps(*policy_, batch, scoring_);
  const at::Tensor where = coupled_.gathered->positions(batch.example_indices);
  const auto coefficient = [&](const at::Tensor& d, const at::Tensor& like) {
    return d.index_select(0, where).to(like.device(), like.scalar_type());
  };
  at::Tensor surrogate = (coefficient(coupled_.d_chosen, pol.chosen) * pol.chosen).sum() +
                         (coefficient(coupled_.d_rejected, pol.rejected) * pol.rejected).sum();
  if (coupled_.d_unlikelihood.defined())
    surrogate = surrogate + (coefficient(coupled_.d_unlikelihood, pol.rejected_unlikelihood) * pol.rejected_unlikelihood).sum();
  (surrogate * scale).backward();
  // Metrics of these pairs from the gathered values (their losses: those of their sorted ranks).
  PreferenceLogps mine;
  for (auto [out, all] : {std::pair{&mine.policy_chosen, &coupled_.all.policy_chosen},
                          std::pair{&mine.policy_rejected, &coupled_.all.policy_rejected},
                          std::pair{&mine.reference_chosen, &coupled_.all.reference_chosen},
                          std::pair{&mine.reference_rejected, &coupled_.all.reference_rejected}})
    *out = all->index_select(0, where);
  MetricSums sums;
  sums.add(pair_metrics(mine, coupled_.losses.index_select(0, where), config_.loss));
  add_padding(sums, batch);
  return sums;
}

MetricSums DpoObjective::micro_step(const std::vector<int64_t>& indices, double scale) {
  const PairBatch batch = collate_pairs(*train_, indices, layout_);
  if (coupled_.gathered) return coupled_micro_step(batch, scale);
  std::optional<PairLogps> ref;
  if (with_reference_) ref = reference_logps(batch);
  // Each pair's loss reads that pair's values only (couples_pairs' losses went above).
  const auto losses_of = [&](const PairLogps& policy, int64_t first, int64_t count) {
    const PairLogps reference = ref ? pairs_of(*ref, first, count) : PairLogps{};
    return preference_losses(preference_logps(policy, ref ? &reference : nullptr), config_.loss, totals_);
  };
  const PairLossStep step = pair_loss_backward(*policy_, batch, scoring_, losses_of, scale);
  MetricSums sums;
  sums.add(pair_metrics(preference_logps(step.policy, ref ? &*ref : nullptr), step.losses, config_.loss));
  add_padding(sums, batch);
  return sums;
}

std::map<std::string, double> DpoObjective::step_means(const MetricSums& sums) const {
  std::map<std::string, double> means = sums.means();
  means.erase(kRowSlots);
  means.erase(kPaddedSlots);
  const double slots = sums.sum(kRowSlots);
  means["padding_share"] = slots > 0 ? sums.sum(kPaddedSlots) / slots : 0.0;
  return means;
}

PairLogps DpoObjective::reference_logps(const PairBatch& batch) {
  if (store_) return store_->logps(Split::Train, batch.example_indices, policy_->device(), batch.more_columns());
  at::NoGradGuard no_grad;  // not InferenceMode: these tensors meet autograd in the loss
  return pair_logps(*reference_, batch, ResponseScoring{config_.loss.ld_alpha});
}

ForwardWork DpoObjective::forward_work(const std::vector<int64_t>& global) const {
  int64_t tokens = 0, rows = 0;
  for (const int64_t i : global) {
    const RawPreferencePair& p = (*train_)[static_cast<size_t>(i)];
    tokens += static_cast<int64_t>(p.prompt.size() + p.chosen.size());
    tokens += static_cast<int64_t>(p.prompt.size() + p.rejected.size());
    for (const TokenIds& more : p.more_rejected) tokens += static_cast<int64_t>(p.prompt.size() + more.size());
    rows += static_cast<int64_t>(p.responses());
  }
  // The policy's forward and backward (~3 forwards), a live reference's forward, and the
  // gradient-free policy forward of a coupled loss.
  const double passes = 3.0 + (with_reference_ && !store_ ? 1.0 : 0.0) + (couples_pairs(config_.loss) ? 1.0 : 0.0);
  return forward_work_of(*policy_, tokens, rows, passes);
}

std::map<std::string, double> DpoObjective::evaluate() {
  const EvalBatching batch(config_.train.micro_batch_size, layout_);
  if (!with_reference_)
    return evaluate_pairs(*policy_, *policy_, *eval_, config_.loss, batch, comm_).means();  // the reference is unread
  const MetricSums sums = store_ ? evaluate_pairs(*policy_, *store_, Split::Eval, *eval_, config_.loss, batch, comm_)
                                 : evaluate_pairs(*policy_, *reference_, *eval_, config_.loss, batch, comm_);
  return sums.means();
}

}  // namespace

std::unique_ptr<TrainingObjective> make_dpo_objective(const Config& config, Communicator& communicator) {
  return std::make_unique<DpoObjective>(config, communicator);
}

}  // namespace dpo
