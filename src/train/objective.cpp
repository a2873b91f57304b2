#include "dpo/train/objective.h"

#include <cmath>

#include "dpo/train/trainer.h"

namespace dpo {

ForwardWork forward_work_of(const CausalLMImpl& policy, int64_t tokens, int64_t rows, double passes) {
  const double mean_row = static_cast<double>(tokens) / static_cast<double>(rows);
  ForwardWork work;
  work.tokens = tokens;
  work.flops = passes * policy.forward_flops_per_token(static_cast<int64_t>(std::lround(mean_row))) *
               static_cast<double>(tokens);
  return work;
}

std::unique_ptr<TrainingObjective> make_objective(Objective objective, const Config& config, Communicator& communicator) {
  return objective == Objective::Dpo ? make_dpo_objective(config, communicator) : make_sft_objective(config, communicator);
}

}  // namespace dpo
