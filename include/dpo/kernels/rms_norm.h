// Llama's RMSNorm, weight * x / sqrt(mean(x^2) + eps) over the last dimension, differentiable in x
// and the weight, in one pass forward and one backward over float32 CPU rows
// (kernels/float_lanes.h).
//
// transformers' formula in libtorch's operations (a cast, pow, mean, add, rsqrt and two products;
// their backward as many again, then the sum of the weight's gradient over rows) is a dozen passes
// over the residual stream; Llama normalises it twice per layer.
#pragma once

#include <ATen/ATen.h>

namespace dpo {

// x [..., n], weight [n]: as transformers' LlamaRMSNorm, the normalisation in float32 and cast
// back to x's dtype before the weight multiplies. Float32 contiguous CPU x and weight take the
// lanes: one float32 sum of squares per row (equal to libtorch's to float32 rounding, see
// docs/numerics.md); the weight's gradient is summed over blocks of rows in a fixed order, so it
// does not depend on the number of threads. Anything else takes libtorch's operations.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace dpo
