// DPO: the preference loss of the policy's log-probs of chosen and rejected responses against the
// frozen reference's, taken from the stored reference log-probs or from a live reference forward.
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include "dpo/data/collate.h"
#include "dpo/loss/logps.h"
#include "dpo/loss/loss.h"
#include "dpo/model/precision.h"
#include "dpo/reference/fingerprint.h"
#include "dpo/reference/reference_store.h"
#include "dpo/reference/stored_reference_check.h"
#include "dpo/train/evaluate.h"
#include "dpo/train/objective.h"

namespace dpo {
namespace {

class DpoObjective final : public TrainingObjective {
 public:
  DpoObjective(const Config& config, Communicator& communicator);

  std::string name() const override { return "dpo"; }
  nlohmann::json resume_keys() const override {
    return {{"model.reference", config_.model.reference},
            {"loss.type", config_.loss.type},
            {"loss.beta", config_.loss.beta},
            {"loss.label_smoothing", config_.loss.label_smoothing}};
  }
  void attach(CausalLMImpl& policy, const PreferenceDataset& train, const PreferenceDataset* eval) override;
  void before_first_step(const std::vector<int64_t>& first_micro_batch) override {
    if (store_) warn_if_stored_reference_differs(config_, *store_, *policy_, *train_, first_micro_batch, comm_);
  }

  // The loss is a mean over the pairs of the global batch.
  double loss_denominator(const std::vector<int64_t>& global) const override {
    return static_cast<double>(global.size());
  }
  MetricSums micro_step(const std::vector<int64_t>& indices, double scale) override;
  const std::vector<std::string>& metric_names() const override { return MetricSums::preference_metric_names(); }
  std::map<std::string, double> step_means(const MetricSums& sums) const override { return sums.means(); }
  ForwardWork forward_work(const std::vector<int64_t>& global) const override;

  std::map<std::string, double> evaluate() override;

 private:
  PairLogps reference_logps(const PairBatch& batch);

  const Config& config_;
  Communicator& comm_;
  std::optional<ReferenceStore> store_;  // with reference.logps_path; the reference model is then never loaded
  CausalLM reference_;                   // otherwise: a frozen copy of model.reference
  CausalLMImpl* policy_ = nullptr;
  const PreferenceDataset* train_ = nullptr;
  const PreferenceDataset* eval_ = nullptr;
};

DpoObjective::DpoObjective(const Config& config, Communicator& communicator) : config_(config), comm_(communicator) {
  if (config.reference.logps_path.empty()) return;
  // Opened before any model is loaded, so that a file that does not match fails fast.
  store_ = ReferenceStore::open(config, /*check_train=*/true, /*check_eval=*/!config.data.eval.empty(), comm_);
  require_same_reference_on_all_ranks(comm_, *store_);
}

void DpoObjective::attach(CausalLMImpl& policy, const PreferenceDataset& train, const PreferenceDataset* eval) {
  policy_ = &policy;
  train_ = &train;
  eval_ = eval;
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

MetricSums DpoObjective::micro_step(const std::vector<int64_t>& indices, double scale) {
  const PairBatch batch = collate_pairs(*train_, indices);
  const PairLogps ref = reference_logps(batch);
  const PairLogps pol = pair_logps(*policy_, batch);
  const PreferenceLogps logps{pol.chosen, pol.rejected, ref.chosen, ref.rejected, pol.chosen_tokens,
                              pol.rejected_tokens};
  const at::Tensor losses = preference_losses(logps, config_.loss);
  (losses.sum() * scale).backward();
  MetricSums sums;
  sums.add(pair_metrics(logps, losses, config_.loss));
  return sums;
}

PairLogps DpoObjective::reference_logps(const PairBatch& batch) {
  if (store_) return store_->logps(Split::Train, batch.example_indices, policy_->device());
  at::NoGradGuard no_grad;  // not InferenceMode: these tensors meet autograd in the loss
  return pair_logps(*reference_, batch);
}

ForwardWork DpoObjective::forward_work(const std::vector<int64_t>& global) const {
  int64_t tokens = 0;
  for (const int64_t i : global) {
    const RawPreferencePair& p = (*train_)[static_cast<size_t>(i)];
    tokens += static_cast<int64_t>(p.prompt.size() + p.chosen.size());
    tokens += static_cast<int64_t>(p.prompt.size() + p.rejected.size());
  }
  // The policy's forward and backward (~3 forwards), and a live reference's forward.
  return forward_work_of(*policy_, tokens, 2 * static_cast<int64_t>(global.size()), store_ ? 3.0 : 4.0);
}

std::map<std::string, double> DpoObjective::evaluate() {
  const int64_t batch = config_.train.micro_batch_size;
  const MetricSums sums = store_ ? evaluate_pairs(*policy_, *store_, Split::Eval, *eval_, config_.loss, batch, comm_)
                                 : evaluate_pairs(*policy_, *reference_, *eval_, config_.loss, batch, comm_);
  return sums.means();
}

}  // namespace

std::unique_ptr<TrainingObjective> make_dpo_objective(const Config& config, Communicator& communicator) {
  return std::make_unique<DpoObjective>(config, communicator);
}

}  // namespace dpo
