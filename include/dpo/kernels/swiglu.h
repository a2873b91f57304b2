// Llama's SwiGLU, silu(gate) * up, differentiable, from the stacked output of the gate and up
// projections ([..., 2I]: gate first, then up), on float32 CPU tensors through
// kernels/float_lanes.h.
//
// libtorch's way (chunk, silu, mul; backward two muls, silu_backward and the cat that undoes the
// chunk) is six passes over activations that do not fit in cache; here forward is one pass and
// backward one, writing the stacked gradient directly.
#pragma once

#include <ATen/ATen.h>

namespace dpo {

// For gate_up [..., 2I]: silu(gate_up[..., :I]) * gate_up[..., I:], [..., I], equal to libtorch's
// to float32 rounding (documented in docs/numerics.md). Float32 contiguous CPU tensors take the
// lanes; anything else takes libtorch's operations.
at::Tensor swiglu(const at::Tensor& gate_up);

}  // namespace dpo
