// Causal attention on CPUs, query tile by query tile, each tile reading only the keys its layout
// lets it see (src/model/tiled_attention.cpp says why and how).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "dpo/data/token_layout.h"

namespace dpo {

// Whether causal attention with products in `dtype` on `device` runs as tiled_attention: float32
// or bfloat16 products on a CPU where oneDNN's GEMM of that type is loaded (float32_gemm_loaded(),
// bfloat16_products_in_float32()).
bool takes_tiled_attention(at::ScalarType dtype, const at::Device& device);

// Attention of q [B, H, T, D] over k, v [B, KV, T, D] (any float dtypes and strides; query head h
// reads key/value head h / (H / KV)), scale 1/sqrt(D), as TokenLayout's rule allows (an undefined
// layout: plain causal). The products run in `dtype` (float32 or bfloat16) with float32 results;
// scores, softmax and its gradient stay in float32. The output comes in q's dtype, the gradients
// in the inputs' dtypes; q, k and v are read with their own strides where their last dimension is
// dense (a projection's heads-first view is not copied), and the output and the gradients of q,
// k and v are [B, heads, T, D] views of [B, T, heads, D] memory.
at::Tensor tiled_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::ScalarType dtype,
                           const TokenLayout& layout);

// Query-key scores one head of tiled_attention computes over all rows of `layout` ([rows, length];
// an undefined layout: plain causal rows), for the FLOPs a step executes.
int64_t tiled_attention_scores(const TokenLayout& layout, int64_t rows, int64_t length);

}  // namespace dpo
