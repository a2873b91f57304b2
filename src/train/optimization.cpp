#include "dpo/train/optimization.h"

#include <cmath>
#include <tuple>

#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>
#include <torch/version.h>

#include "dpo/error.h"

namespace dpo {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options,
                                                        std::vector<at::Tensor> parameters) {
  const double lr = options.lr;
  const double weight_decay = options.weight_decay;
  if (options.optimizer == "rmsprop") {
    return std::make_unique<torch::optim::RMSprop>(
        std::move(parameters),
        torch::optim::RMSpropOptions(lr).alpha(0.99).eps(1e-8).weight_decay(weight_decay).momentum(0).centered(false));
  }
  if (options.optimizer == "adamw") {
    // Weight decay is passed explicitly: libtorch's AdamWOptions default is 1e-2, ours is train.weight_decay.
    return std::make_unique<torch::optim::AdamW>(std::move(parameters), torch::optim::AdamWOptions(lr)
                                                                            .betas(std::make_tuple(0.9, 0.999))
                                                                            .eps(1e-8)
                                                                            .weight_decay(weight_decay)
                                                                            .amsgrad(false));
  }
  if (options.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                               torch::optim::SGDOptions(lr).weight_decay(weight_decay));
  }
  fail("train.optimizer: unknown optimizer '{}' (one of rmsprop, adamw, sgd)", options.optimizer);
}

// transformers' schedules exactly (get_constant_schedule_with_warmup /
// get_cosine_schedule_with_warmup), as TRL's DPOTrainer runs them: the factor of optimizer step
// `step` (0-based) is step / max(1, warmup) during warm-up, so the very first update uses lr 0
// and step `warmup` is the first at the full lr; afterwards it is 1 (constant) or
// 0.5 (1 + cos(pi progress)) with progress = (step - warmup) / max(1, total - warmup) (cosine,
// reaching 0 at step `total`). The DPO paper's code warms up with (step + 1) / (warmup + 1)
// instead; the difference is one step's worth of warm-up.
double learning_rate(const TrainOptions& options, int64_t step, int64_t total_steps) {
  if (step < 0) fail("learning rate: step {} is negative", step);
  const int64_t warmup = options.warmup_steps;
  if (step < warmup) return options.lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  if (options.lr_scheduler == "constant") return options.lr;
  if (options.lr_scheduler == "cosine") {
    const double progress =
        static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
    constexpr double kPi = 3.14159265358979323846;
    return options.lr * std::max(0.0, 0.5 * (1.0 + std::cos(kPi * progress)));
  }
  fail("train.lr_scheduler: unknown schedule '{}' (one of constant, cosine)", options.lr_scheduler);
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
  // Each tensor's norm is reduced in float32 at least (without a float64 copy of every gradient,
  // which cost ~3% of a small model's step) and the squares are summed in float64 over tensors; a
  // norm that overflows float32 (above ~1.8e19 per tensor) is redone in float64. One host sync.
  const auto squared_norms = [&](bool in_float64) {
    at::Tensor squared_sum;
    for (const at::Tensor& parameter : parameters) {
      const at::Tensor& grad = parameter.grad();
      if (!grad.defined()) continue;
      const bool low = grad.scalar_type() == at::kBFloat16 || grad.scalar_type() == at::kHalf;
      const c10::optional<at::ScalarType> reduce_in =
          in_float64 ? c10::optional<at::ScalarType>(at::kDouble) : low ? c10::optional<at::ScalarType>(at::kFloat) : c10::nullopt;
      at::Tensor norm = at::linalg_vector_norm(grad, 2, c10::nullopt, false, reduce_in).to(at::kDouble);
      if (squared_sum.defined()) norm = norm.to(squared_sum.device());
      squared_sum = squared_sum.defined() ? squared_sum + norm * norm : norm * norm;
    }
    return squared_sum;
  };
  const at::Tensor squared_sum = squared_norms(false);
  if (!squared_sum.defined()) return 0.0;
  double squared = squared_sum.item<double>();
  if (std::isinf(squared)) squared = squared_norms(true).item<double>();
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
