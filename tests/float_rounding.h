// The tolerances of docs/numerics.md, for results that the contract calls equal only to float
// rounding (another batch composition, rank count or BLAS kernel). Results it calls bit-identical
// (resume, reload, the same computation in the same shapes and order) are compared with ==,
// at::equal or cmp, never with these.
#pragma once
#include <cmath>

#include <ATen/ATen.h>

namespace float_rounding {

// float32 forward values (log-probs, losses, metrics): float32 carries 24 bits (6e-8 relative); a
// value here is a few hundred rounded operations deep (matmuls of inner size <= 64, softmax over
// <= 64 entries, sums over <= 32 tokens), and rounding errors add up like a random walk, so other
// shapes or kernels move it by ~1e-6 relative at most. 1e-5 leaves 10x headroom; the bugs these
// checks exist for (a pair dropped or counted twice, a token scored or masked wrongly) move values
// by percent.
constexpr double kForwardRelative = 1e-5;
// For values that are differences of larger ones (rewards, margins: beta x a log-prob difference,
// log-probs up to ~50 in magnitude): 0.1 x 1e-5 x 50 = 5e-5 would be the worst case; observed
// differences stay far below 1e-5.
constexpr double kForwardAbsolute = 1e-5;
// Gradients (and SGD updates, which are sums of lr x gradient), compared per tensor in the 2-norm:
// backward is about twice as deep as forward, and a sum of micro-batch gradients cancels, so the
// error is measured against the tensor's norm, not element by element (an element near zero has
// no meaningful relative error). A missing or doubled pair of a 12-pair batch moves the gradient
// by ~1/12.
constexpr double kGradientRelative = 1e-4;

// ||a - b|| / ||b|| in float64; 0 when both are zero, infinite when only b is.
inline double normwise_relative_difference(const at::Tensor& a, const at::Tensor& b) {
  const double difference = (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>();
  const double norm = b.to(at::kDouble).norm().item<double>();
  if (norm == 0) return difference == 0 ? 0.0 : INFINITY;
  return difference / norm;
}

}  // namespace float_rounding
