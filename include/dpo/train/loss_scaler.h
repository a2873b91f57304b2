// Dynamic loss scaling for fp16-mixed training, with the rules and defaults of PyTorch's
// GradScaler: the loss is multiplied by the scale before backward so that small fp16 gradients do
// not underflow; the summed gradients are divided by it before clipping; a step whose gradients
// overflowed (a non-finite norm) is skipped and the scale halved; after `growth_interval` clean
// steps in a row the scale doubles. Disabled (scale 1, nothing skipped) for other precisions.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace dpo {

class LossScaler {
 public:
  static constexpr double kInitialScale = 65536.0;  // 2^16
  static constexpr int64_t kGrowthInterval = 2000;

  explicit LossScaler(bool enabled) : enabled_(enabled), scale_(enabled ? kInitialScale : 1.0) {}

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  // Divides the gradients by the scale (after they are summed across ranks, before clipping).
  void unscale(const std::vector<at::Tensor>& parameters) const;
  // Records a step whose (unscaled) gradient norm is `grad_norm`; returns whether its update may be
  // applied: false when scaling is on and the norm is not finite (the scale then halves).
  bool update(double grad_norm);

  // For the checkpoint's trainer state: a resumed run continues with the same scale.
  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);

 private:
  bool enabled_;
  double scale_;
  int64_t clean_steps_ = 0;  // since the last change of scale
};

}  // namespace dpo
