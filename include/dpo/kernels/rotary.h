// Rotary position embedding (RoPE, transformers' rotate_half convention) of several heads side by
// side, differentiable in x, in one pass forward and one backward over float32 CPU rows
// (kernels/float_lanes.h).
//
// libtorch's x cos + rotate_half(x) sin (two narrows, a negation, a cat, two products and a sum;
// backward as many again) is about eight passes over the queries and keys of every layer.
#pragma once

#include <ATen/ATen.h>

namespace dpo {

// x [B, T, heads D] (Llama's queries and keys, as the projections give them: any strides but a
// contiguous last dimension), cos and sin [B or 1, T, D] (per row or shared by rows; constants):
// each head h of x, x_h cos + rotate_half(x_h) sin, as a new [B, T, heads D] tensor, where
// rotate_half(v) = [-v[D/2:], v[:D/2]]. Float32 CPU tensors take the lanes (equal to libtorch's
// to float32 rounding); anything else takes libtorch's operations, in x's dtype promoted with
// cos's.
at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace dpo
