// GELU with the tanh approximation (GPT-2's "gelu_new"), differentiable, on float32 CPU tensors
// through kernels/float_lanes.h.
//
// 0.5 x (1 + tanh(u)) is x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): one e^-|2u| (the
// lanes' e^x) and one division per element, forward and backward. libtorch's kernels call Sleef's
// tanh for each, which took 3% of a GPT-2-small step here (perf, 2 Zen 5 cores, float32).
#pragma once

#include <ATen/ATen.h>

namespace dpo {

// gelu_tanh(x) equals at::gelu(x, "tanh") to float32 rounding (relative 1e-6; values below ~1e-37
// in magnitude may differ in absolute terms by that much) and is differentiable through autograd.
// Float32 contiguous CPU tensors take the lanes; anything else takes at::gelu(x, "tanh").
at::Tensor gelu_tanh(const at::Tensor& x);

}  // namespace dpo
