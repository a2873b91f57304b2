// kernels/rmsprop_update against RMSprop's formula in float64, over several steps.
#include <ATen/ATen.h>

#include "catch2_api.h"

#include "dpo/kernels/rmsprop_update.h"

TEST_CASE("rmsprop_update follows RMSprop's formula in float64 over three steps", "[kernels]") {
  const double lr = 1e-3, alpha = 0.99, eps = 1e-8;
  for (const double decay : {0.0, 0.1}) {
    INFO("weight decay " << decay);
    at::manual_seed(17);
    // 100003 elements: several threads' tasks and a remainder the vector loop does not cover.
    // Parameters and gradients of one sign, so that g + weight_decay p does not cancel: float32's
    // sum would then lose digits that float64's keeps, in libtorch's update as in this one.
    at::Tensor p = at::rand({100003}) + 0.5, s = at::zeros({100003});
    at::Tensor p64 = p.to(at::kDouble), s64 = s.to(at::kDouble);
    for (int step = 0; step < 3; ++step) {
      const at::Tensor g = at::rand({100003}) * 0.1 + 0.01;
      dpo::rmsprop_update(p, g, s, lr, alpha, eps, decay);
      const at::Tensor g64 = g.to(at::kDouble) + decay * p64;
      s64 = alpha * s64 + (1 - alpha) * g64 * g64;
      p64 = p64 - lr * g64 / (s64.sqrt() + eps);
    }
    // Each step moves an element by up to ~10 lr; float32 rounding of p and of the step.
    CHECK(((p.to(at::kDouble) - p64).abs() <= (p64.abs() + 10 * lr) * 1e-6).all().item<bool>());
    CHECK(((s.to(at::kDouble) - s64).abs() <= s64.abs() * 1e-5).all().item<bool>());
  }
}

TEST_CASE("rmsprop_update takes only contiguous float32 CPU tensors of one shape", "[kernels]") {
  const at::Tensor p = at::zeros({4, 6}), g = at::zeros({4, 6}), s = at::zeros({4, 6});
  CHECK(dpo::takes_rmsprop_update(p, g, s));
  CHECK_FALSE(dpo::takes_rmsprop_update(p.t(), g.t(), s.t()));
  CHECK_FALSE(dpo::takes_rmsprop_update(p.to(at::kDouble), g.to(at::kDouble), s.to(at::kDouble)));
  CHECK_FALSE(dpo::takes_rmsprop_update(p, g.view({6, 4}), s));
  CHECK_FALSE(dpo::takes_rmsprop_update(p, at::Tensor(), s));
  CHECK_THROWS(dpo::rmsprop_update(p, g.view({6, 4}), s, 1e-3, 0.99, 1e-8, 0));
}
