// SFT: maximum likelihood of the chosen responses given their prompts (the prompt masked), as a
// mean over scored tokens; the paper's way to make a reference model when no SFT model exists.
#include <algorithm>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/autograd.h>

#include "dpo/data/batch_plan.h"
#include "dpo/data/collate.h"
#include "dpo/dist/dist.h"
#include "dpo/loss/logps.h"
#include "dpo/train/objective.h"

namespace dpo {
namespace {

// The log-probs of the chosen responses of examples `indices` given their prompts: SFT's forward
// in evaluation (training's is nll_backward's, the same log-probs with the backward taken in it).
SequenceLogps chosen_logps(CausalLMImpl& policy, const PreferenceDataset& data, const std::vector<int64_t>& indices) {
  const PairBatch batch = collate_chosen(data, indices);
  const at::Device device = policy.device();
  const at::Tensor input_ids = batch.input_ids.to(device);
  return model_sequence_logps(policy, input_ids, batch.response_mask.to(device));
}

class SftObjective final : public TrainingObjective {
 public:
  SftObjective(const Config& config, Communicator& communicator) : config_(config), comm_(communicator) {}

  std::string name() const override { return "sft"; }
  nlohmann::json resume_keys() const override { return nlohmann::json::object(); }
  void attach(CausalLMImpl& policy, const PreferenceDataset& train, const PreferenceDataset* eval) override {
    policy_ = &policy;
    train_ = &train;
    eval_ = eval;
  }
  void before_first_step(const std::vector<int64_t>&) override {}

  double loss_denominator(const std::vector<int64_t>& global) const override;
  MetricSums micro_step(const std::vector<int64_t>& indices, double scale) override;
  const std::vector<std::string>& metric_names() const override {
    static const std::vector<std::string> names = {"nll", "scored_tokens", "logps/chosen"};
    return names;
  }
  std::map<std::string, double> step_means(const MetricSums& sums) const override;
  ForwardWork forward_work(const std::vector<int64_t>& global) const override;

  std::map<std::string, double> evaluate() override;

 private:
  const Config& config_;
  Communicator& comm_;
  CausalLMImpl* policy_ = nullptr;
  const PreferenceDataset* train_ = nullptr;
  const PreferenceDataset* eval_ = nullptr;
};

// The loss is a mean over the scored chosen tokens of the global batch, as maximum likelihood
// training does.
double SftObjective::loss_denominator(const std::vector<int64_t>& global) const {
  int64_t tokens = 0;
  for (const int64_t i : global) {
    const RawPreferencePair& p = (*train_)[static_cast<size_t>(i)];
    tokens += scored_token_count(p.prompt.size(), p.chosen.size());
  }
  return static_cast<double>(std::max<int64_t>(tokens, 1));
}

MetricSums SftObjective::micro_step(const std::vector<int64_t>& indices, double scale) {
  // The forward and the backward of scale * nll in one, the head's gradient formed in forward.
  const PairBatch batch = collate_chosen(*train_, indices);
  const at::Device device = policy_->device();
  const SequenceLogps s = nll_backward(*policy_, batch.input_ids.to(device), batch.response_mask.to(device), scale);
  const at::Tensor nll = -s.logps.sum();
  MetricSums sums;
  sums.add("nll", nll.item<double>());
  sums.add("scored_tokens", static_cast<double>(s.token_counts.sum().item<int64_t>()));
  sums.add("logps/chosen", s.logps.detach().sum().item<double>());
  sums.add_pairs(static_cast<int64_t>(indices.size()));
  return sums;
}

std::map<std::string, double> SftObjective::step_means(const MetricSums& sums) const {
  const double pairs = static_cast<double>(std::max<int64_t>(sums.pairs(), 1));
  return {{"loss", sums.sum("nll") / std::max(1.0, sums.sum("scored_tokens"))},
          {"logps/chosen", sums.sum("logps/chosen") / pairs}};
}

ForwardWork SftObjective::forward_work(const std::vector<int64_t>& global) const {
  int64_t tokens = 0;
  for (const int64_t i : global) {
    const RawPreferencePair& p = (*train_)[static_cast<size_t>(i)];
    tokens += static_cast<int64_t>(p.prompt.size() + p.chosen.size());
  }
  return forward_work_of(*policy_, tokens, static_cast<int64_t>(global.size()), 3.0);  // forward + backward
}

// The mean NLL per scored token over the eval dataset, each rank scoring its rank_eval_batches.
std::map<std::string, double> SftObjective::evaluate() {
  c10::InferenceMode no_grad;
  std::vector<double> nll_tokens = {0.0, 0.0};
  for (const auto& indices : rank_eval_batches(static_cast<int64_t>(eval_->size()), config_.train.micro_batch_size,
                                               comm_.rank(), comm_.world_size())) {
    const SequenceLogps s = chosen_logps(*policy_, *eval_, indices);
    nll_tokens[0] -= s.logps.sum().item<double>();
    nll_tokens[1] += static_cast<double>(s.token_counts.sum().item<int64_t>());
  }
  comm_.all_reduce_sum(nll_tokens);
  return {{"loss", nll_tokens[0] / std::max(nll_tokens[1], 1.0)}};
}

}  // namespace

std::unique_ptr<TrainingObjective> make_sft_objective(const Config& config, Communicator& communicator) {
  return std::make_unique<SftObjective>(config, communicator);
}

}  // namespace dpo
