#include "dpo/train/loss_scaler.h"

#include <cmath>

#include "dpo/error.h"

namespace dpo {

void LossScaler::unscale(const std::vector<at::Tensor>& parameters) const {
  if (!enabled_) return;
  at::NoGradGuard no_grad;
  for (const at::Tensor& parameter : parameters) {
    at::Tensor grad = parameter.grad();
    if (grad.defined()) grad.mul_(1.0 / scale_);
  }
}

bool LossScaler::update(double grad_norm) {
  if (!enabled_) return true;
  if (!std::isfinite(grad_norm)) {
    scale_ *= 0.5;
    clean_steps_ = 0;
    return false;
  }
  if (++clean_steps_ == kGrowthInterval) {
    scale_ *= 2.0;
    clean_steps_ = 0;
  }
  return true;
}

nlohmann::json LossScaler::state() const { return {{"scale", scale_}, {"clean_steps", clean_steps_}}; }

void LossScaler::load_state(const nlohmann::json& state) {
  if (!enabled_ || state.is_null()) return;
  if (!state.is_object() || !state.contains("scale") || !state["scale"].is_number() ||
      !state.contains("clean_steps") || !state["clean_steps"].is_number_integer())
    fail("trainer state: loss_scaler must be {{\"scale\": number, \"clean_steps\": integer}}, got {}", state.dump());
  scale_ = state["scale"].get<double>();
  clean_steps_ = state["clean_steps"].get<int64_t>();
  if (!(scale_ > 0) || !std::isfinite(scale_) || clean_steps_ < 0)
    fail("trainer state: loss_scaler holds an invalid scale {} or clean step count {}", scale_, clean_steps_);
}

}  // namespace dpo
