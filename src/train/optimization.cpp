#include "dpo/train/optimization.h"

#include <cmath>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>
#include <torch/version.h>

#include "dpo/error.h"
#include "dpo/kernels/rmsprop_update.h"
#include "dpo/kernels/sum_of_squares.h"

namespace dpo {

namespace {

// HF Trainer's parameter groups: weight decay on every parameter but biases and norm weights. In
// GPT-2 and Llama those are exactly the 1-D parameters (HF finds them by name and module type).
// Without weight decay there is one group, as before, so that older checkpoints still resume.
template <typename Options>
std::vector<torch::optim::OptimizerParamGroup> decay_groups(const std::vector<at::Tensor>& parameters,
                                                            const Options& options, double weight_decay) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  // Set in every group: libtorch's AdamWOptions default is 1e-2, ours is train.weight_decay.
  Options with_decay = options, without = options;
  with_decay.weight_decay(weight_decay);
  without.weight_decay(0.0);
  if (weight_decay == 0.0) {
    groups.emplace_back(parameters, std::make_unique<Options>(without));
    return groups;
  }
  std::vector<at::Tensor> decayed, kept;
  for (const at::Tensor& p : parameters) (p.dim() >= 2 ? decayed : kept).push_back(p);
  if (!decayed.empty()) groups.emplace_back(decayed, std::make_unique<Options>(with_decay));
  if (!kept.empty()) groups.emplace_back(kept, std::make_unique<Options>(without));
  return groups;
}

// The key of a parameter's entry in libtorch's optimizer state: its TensorImpl's address, as a
// string in libtorch 1.x (c10::guts::to_string's ostream form) and as the pointer in 2.x.
template <typename Key>
Key state_key(c10::TensorImpl* impl) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << impl;
    return text.str();
  } else {
    return impl;
  }
}

// libtorch's RMSprop with each float32 CPU tensor updated in one pass (kernels/rmsprop_update)
// instead of five. The state is libtorch's own (square averages and step counts under libtorch's
// keys, made as libtorch makes them), so checkpoints save and load as before; anything the pass
// does not take (momentum, centered, other dtypes or devices, a closure) is libtorch's step.
class RMSpropInOnePass : public torch::optim::RMSprop {
 public:
  using torch::optim::RMSprop::RMSprop;

  torch::Tensor step(LossClosure closure = nullptr) override {
    if (closure != nullptr) return torch::optim::RMSprop::step(std::move(closure));
    // Each parameter's state is looked up once (made, where missing, as libtorch's first step
    // makes it, so that libtorch's step finds it the same if it takes over).
    std::vector<std::tuple<at::Tensor, torch::optim::RMSpropParamState*, const torch::optim::RMSpropOptions*>> updates;
    for (torch::optim::OptimizerParamGroup& group : param_groups()) {
      const auto& options = static_cast<const torch::optim::RMSpropOptions&>(group.options());
      if (options.momentum() != 0.0 || options.centered()) return torch::optim::RMSprop::step();
      for (const at::Tensor& p : group.params()) {
        if (!p.grad().defined()) continue;
        torch::optim::RMSpropParamState& state = state_of(p);
        if (!takes_rmsprop_update(p, p.grad(), state.square_avg())) return torch::optim::RMSprop::step();
        updates.emplace_back(p, &state, &options);
      }
    }
    at::NoGradGuard no_grad;
    for (const auto& [p, state, options] : updates) {
      state->step(state->step() + 1);
      rmsprop_update(p, p.grad(), state->square_avg(), options->lr(), options->alpha(), options->eps(),
                     options->weight_decay());
    }
    return {};
  }

 private:
  using Key = typename std::remove_reference_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

  torch::optim::RMSpropParamState& state_of(const at::Tensor& p) {
    std::unique_ptr<torch::optim::OptimizerParamState>& entry = state_[state_key<Key>(p.unsafeGetTensorImpl())];
    if (entry == nullptr) {
      auto state = std::make_unique<torch::optim::RMSpropParamState>();
      state->step(0);
      state->square_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
      entry = std::move(state);
    }
    return static_cast<torch::optim::RMSpropParamState&>(*entry);
  }
};

template <typename Optimizer, typename Options>
std::unique_ptr<torch::optim::Optimizer> grouped(const std::vector<at::Tensor>& parameters, Options options,
                                                 double weight_decay) {
  auto groups = decay_groups(parameters, options, weight_decay);
  return std::make_unique<Optimizer>(std::move(groups), options.weight_decay(weight_decay));
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options,
                                                        std::vector<at::Tensor> parameters) {
  const double lr = options.lr;
  const double weight_decay = options.weight_decay;
  if (options.optimizer == "rmsprop") {
    return grouped<RMSpropInOnePass>(
        parameters, torch::optim::RMSpropOptions(lr).alpha(0.99).eps(1e-8).momentum(0).centered(false), weight_decay);
  }
  if (options.optimizer == "adamw") {
    return grouped<torch::optim::AdamW>(parameters,
                                        torch::optim::AdamWOptions(lr)
                                            .betas(std::make_tuple(options.adam_beta1, options.adam_beta2))
                                            .eps(options.adam_epsilon)
                                            .amsgrad(false),
                                        weight_decay);
  }
  if (options.optimizer == "sgd") return grouped<torch::optim::SGD>(parameters, torch::optim::SGDOptions(lr), weight_decay);
  fail("train.optimizer: unknown optimizer '{}' (one of rmsprop, adamw, sgd)", options.optimizer);
}

int64_t warmup_steps(const TrainOptions& options, int64_t total_steps) {
  // transformers' TrainingArguments.get_warmup_steps: warmup_steps if given, else ceil(ratio * total).
  if (options.warmup_ratio > 0) return static_cast<int64_t>(std::ceil(options.warmup_ratio * static_cast<double>(total_steps)));
  return options.warmup_steps;
}

// transformers' schedules exactly (get_constant_schedule_with_warmup,
// get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup,
// get_cosine_with_min_lr_schedule_with_warmup), as TRL's DPOTrainer runs them: the factor of
// optimizer step `step` (0-based) is step / max(1, warmup) during warm-up, so the very first update
// uses lr 0 and step `warmup` is the first at the full lr; afterwards, with
// progress = (step - warmup) / max(1, total - warmup): constant 1; linear
// max(0, (total - step) / max(1, total - warmup)); cosine 0.5 (1 + cos(pi progress)), reaching 0 at
// step `total`; cosine_with_min_lr the cosine factor scaled into [min_lr_rate, 1]. The DPO paper's
// code warms up with (step + 1) / (warmup + 1) instead; the difference is one step's worth.
double learning_rate(const TrainOptions& options, int64_t step, int64_t total_steps) {
  if (step < 0) fail("learning rate: step {} is negative", step);
  const int64_t warmup = warmup_steps(options, total_steps);
  if (step < warmup) return options.lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  const std::string& schedule = options.lr_scheduler;
  if (schedule == "constant") return options.lr;
  const double after_warmup = static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
  if (schedule == "linear")
    return options.lr * std::max(0.0, static_cast<double>(total_steps - step) / after_warmup);
  if (schedule == "cosine" || schedule == "cosine_with_min_lr") {
    constexpr double kPi = 3.14159265358979323846;
    const double progress = static_cast<double>(step - warmup) / after_warmup;
    const double factor = std::max(0.0, 0.5 * (1.0 + std::cos(kPi * progress)));
    if (schedule == "cosine") return options.lr * factor;
    return options.lr * (factor * (1.0 - options.min_lr_rate) + options.min_lr_rate);
  }
  fail("train.lr_scheduler: unknown schedule '{}' (one of constant, linear, cosine, cosine_with_min_lr)", schedule);
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (torch::optim::OptimizerParamGroup& group : optimizer.param_groups()) group.options().set_lr(lr);
}

void zero_grad_in_place(torch::optim::Optimizer& optimizer) {
#if TORCH_VERSION_MAJOR >= 2
  optimizer.zero_grad(/*set_to_none=*/false);
#else
  optimizer.zero_grad();
#endif
}

double clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm) {
  // Float32 CPU gradients (every gradient of a CPU run): squares summed in float64 in one pass
  // each (kernels/sum_of_squares). Others: each tensor's norm reduced in float32 at least (without
  // a float64 copy of every gradient, which cost ~3% of a small model's step) and its square
  // added in float64; a norm that overflows float32 (above ~1.8e19 per tensor) is redone in
  // float64. One host sync for those.
  double squared = 0;
  std::vector<at::Tensor> others;
  for (const at::Tensor& parameter : parameters) {
    const at::Tensor& grad = parameter.grad();
    if (!grad.defined()) continue;
    if (takes_sum_of_squares(grad))
      squared += sum_of_squares(grad);
    else
      others.push_back(grad);
  }
  const auto squared_norms = [&](bool in_float64) {
    at::Tensor squared_sum;
    for (const at::Tensor& grad : others) {
      const bool low = grad.scalar_type() == at::kBFloat16 || grad.scalar_type() == at::kHalf;
      const c10::optional<at::ScalarType> reduce_in =
          in_float64 ? c10::optional<at::ScalarType>(at::kDouble) : low ? c10::optional<at::ScalarType>(at::kFloat) : c10::nullopt;
      at::Tensor norm = at::linalg_vector_norm(grad, 2, c10::nullopt, false, reduce_in).to(at::kDouble);
      if (squared_sum.defined()) norm = norm.to(squared_sum.device());
      squared_sum = squared_sum.defined() ? squared_sum + norm * norm : norm * norm;
    }
    return squared_sum;
  };
  if (!others.empty()) {
    double others_squared = squared_norms(false).item<double>();
    if (std::isinf(others_squared)) others_squared = squared_norms(true).item<double>();
    squared += others_squared;
  }
  const double total_norm = std::sqrt(squared);
  if (!std::isfinite(total_norm)) return total_norm;  // the caller decides; scaling by NaN helps no one
  // torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), applied when below 1.
  const double coefficient = max_norm / (total_norm + 1e-6);
  if (coefficient < 1.0) {
    at::NoGradGuard no_grad;
    for (const at::Tensor& parameter : parameters) {
      at::Tensor grad = parameter.grad();
      if (grad.defined()) grad.mul_(coefficient);
    }
  }
  return total_norm;
}

}  // namespace dpo
