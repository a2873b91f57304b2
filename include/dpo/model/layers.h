// Private to the model module: the parameter-holding layers both architectures are built from,
// the causal attention kernel, and the config-derived options that are not ModelSpec fields.
// Layers create their parameters uninitialised (at::empty) so that loading a large checkpoint does
// not pay for an initialisation it overwrites; build_model initialises them.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/version.h>

#include <cmath>
#include <initializer_list>
#include <limits>
#include <vector>

#include "dpo/kernels/float_matmul.h"
#include "dpo/kernels/rms_norm.h"
#include "dpo/model/model.h"
#include "dpo/model/tiled_attention.h"

namespace dpo {

// `t` in `dtype` for a matrix product (Undefined: as it is). The cast is differentiable, so the
// gradient of a float32 weight used in bfloat16 arrives in float32.
inline at::Tensor for_matmul(const at::Tensor& t, at::ScalarType dtype) {
  return !t.defined() || dtype == at::ScalarType::Undefined || t.scalar_type() == dtype ? t : t.to(dtype);
}

// `t` in float32 when it is in a 16-bit float dtype (as it is otherwise): for elementwise work
// between matrix products, which libtorch 1.13 does faster (and more exactly) in float32 than in
// bfloat16 on CPUs, casts included.
inline at::Tensor at_least_float32(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf ? t.to(at::kFloat) : t;
}

// x [..., K] times a float32 weight with both products of forward and backward in bfloat16 and
// float32 results (kernels' product_in_float32): y = x W^T + b for nn.Linear's weight [N, K], or
// y = x W + b for Conv1D's [K, N] (`in_out`). y and the gradients of weight and bias are float32,
// x's comes in x's dtype. Mixed precision on CPUs (src/model/linear_in_float32.cpp says why).
at::Tensor linear_in_float32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool in_out);
// Whether a product of `dtype` on `weight` runs as linear_in_float32: bfloat16 on a float32 CPU
// weight, where oneDNN's bfloat16 GEMM is loaded.
inline bool takes_linear_in_float32(at::ScalarType dtype, const at::Tensor& weight) {
  return dtype == at::kBFloat16 && weight.scalar_type() == at::kFloat && weight.device().is_cpu() &&
         bfloat16_products_in_float32();
}

// A layer whose matrix product may run in another dtype than its weights (mixed precision);
// CausalLMImpl::set_matmul_dtype sets it on every such layer. The output is in that dtype, or in
// float32 where the product takes linear_in_float32.
struct MatmulLayer : torch::nn::Module {
  at::ScalarType matmul_dtype = at::ScalarType::Undefined;
  // The dtype the product runs in: the matmul dtype, else the weight's own (an input that
  // elementwise work left in float32 is cast to it).
  at::ScalarType product_dtype(const at::Tensor& weight) const {
    return matmul_dtype == at::ScalarType::Undefined ? weight.scalar_type() : matmul_dtype;
  }
};

// nn.Linear: y = x W^T + b, weight [out, in].
struct LinearImpl : MatmulLayer {
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& options) {
    weight = register_parameter("weight", at::empty({out, in}, options));
    if (bias) this->bias = register_parameter("bias", at::empty({out}, options));
  }
  at::Tensor forward(const at::Tensor& x) const {
    const at::ScalarType dtype = product_dtype(weight);
    if (takes_linear_in_float32(dtype, weight)) return linear_in_float32(x, weight, bias, /*in_out=*/false);
    return at::linear(for_matmul(x, dtype), for_matmul(weight, dtype), for_matmul(bias, dtype));
  }
  at::Tensor weight, bias;
};

// Several Linear layers on the same input as one product: y = x [W1; W2; ...]^T + [b1; b2; ...],
// the outputs side by side along the last dimension (narrow them apart). One larger product is
// faster than several small ones, x is cast to the matmul dtype once, and its gradient comes out
// of one product instead of a low-precision sum of several. The layers share a matmul dtype and
// either all have a bias or none has.
inline at::Tensor stacked_linear(const at::Tensor& x, std::initializer_list<const LinearImpl*> layers) {
  const at::ScalarType dtype = (*layers.begin())->product_dtype((*layers.begin())->weight);
  std::vector<at::Tensor> weights, biases;
  if (takes_linear_in_float32(dtype, (*layers.begin())->weight)) {
    for (const LinearImpl* layer : layers) {
      weights.push_back(layer->weight);
      if (layer->bias.defined()) biases.push_back(layer->bias);
    }
    return linear_in_float32(x, at::cat(weights), biases.empty() ? at::Tensor() : at::cat(biases), /*in_out=*/false);
  }
  // Each weight is cast before the concatenation, which then copies 16-bit values.
  for (const LinearImpl* layer : layers) {
    weights.push_back(for_matmul(layer->weight, dtype));
    if (layer->bias.defined()) biases.push_back(for_matmul(layer->bias, dtype));
  }
  return at::linear(for_matmul(x, dtype), at::cat(weights), biases.empty() ? at::Tensor() : at::cat(biases));
}

// GPT-2's Conv1D: y = x W + b, weight [in, out] (the transpose of nn.Linear's layout).
struct Conv1DImpl : MatmulLayer {
  Conv1DImpl(int64_t in, int64_t out, const at::TensorOptions& options) {
    weight = register_parameter("weight", at::empty({in, out}, options));
    bias = register_parameter("bias", at::empty({out}, options));
  }
  at::Tensor forward(const at::Tensor& x) const {
    const at::ScalarType dtype = product_dtype(weight);
    if (takes_linear_in_float32(dtype, weight)) return linear_in_float32(x, weight, bias, /*in_out=*/true);
    auto out_shape = x.sizes().vec();
    out_shape.back() = weight.size(1);
    return at::addmm(for_matmul(bias, dtype), for_matmul(x.reshape({-1, x.size(-1)}), dtype), for_matmul(weight, dtype))
        .view(out_shape);
  }
  at::Tensor weight, bias;
};

// `tied_to_head`: the weight is also the LM head's, whose dense [V, d] gradient arrives in the same
// backward. The lookup's gradient is then sparse (the rows of the ids), and autograd adds it into
// the head's (in place where that one is not shared, as libtorch 1.13 does; one sum otherwise),
// where a dense one cost a zeroed [V, d] tensor, an index_add into it and a sum of two: ~2.5% of a
// bf16-mixed step of GPT-2 small (`dpo bench` shape c) in a profile. Untied, it stays dense: a
// sparse gradient would reach the parameter's .grad.
struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(int64_t count, int64_t dim, const at::TensorOptions& options, bool tied_to_head = false)
      : tied_to_head(tied_to_head) {
    weight = register_parameter("weight", at::empty({count, dim}, options));
  }
  at::Tensor forward(const at::Tensor& ids) const {
    return at::embedding(weight, ids, /*padding_idx=*/-1, /*scale_grad_by_freq=*/false, /*sparse=*/tied_to_head);
  }
  at::Tensor weight;
  bool tied_to_head;
};

struct LayerNormImpl : torch::nn::Module {
  LayerNormImpl(int64_t dim, double eps, const at::TensorOptions& options) : eps(eps) {
    weight = register_parameter("weight", at::empty({dim}, options));
    bias = register_parameter("bias", at::empty({dim}, options));
  }
  at::Tensor forward(const at::Tensor& x) const {
    return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
  }
  at::Tensor weight, bias;
  double eps;
};

// As transformers' LlamaRMSNorm: normalise in float32, cast back, then scale.
struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options) : eps(eps) {
    weight = register_parameter("weight", at::empty({dim}, options));
  }
  at::Tensor forward(const at::Tensor& x) const { return rms_norm(x, weight, eps); }
  at::Tensor weight;
  double eps;
};

// The longest sequence of a forward over input_ids [B, T]: T, or with a layout (a packed row is
// longer than its sequences) the largest position + 1. What n_positions and sliding windows bound.
inline int64_t longest_sequence(const at::Tensor& input_ids, const TokenLayout& layout) {
  const int64_t T = input_ids.size(1);
  return layout.defined() && T > 0 ? layout.positions.max().item<int64_t>() + 1 : T;
}

// What attention reads of a forward's TokenLayout, made once per forward and shared by every
// layer: the layout itself for tiled_attention (CPUs), else libtorch's mask: with libtorch 2.x,
// scaled_dot_product_attention's boolean mask [B, 1, T, T]; before, an additive bias (0 or -inf)
// laid out as causal_attention's grouped scores, [B * KV, rep * T, T] in the products' dtype, so
// that each layer adds it in its scores product. Default: plain causal attention.
struct AttentionMask {
  TokenLayout layout;
  at::Tensor tensor;
};
inline AttentionMask attention_mask(const TokenLayout& layout, int64_t heads, int64_t kv_heads, at::ScalarType dtype,
                                    const at::Device& device) {
  if (!layout.defined() || takes_tiled_attention(dtype, device)) return {layout, {}};
#if TORCH_VERSION_MAJOR >= 2
  (void)heads, (void)kv_heads;
  return {layout, attention_allowed(layout).to(device).unsqueeze(1)};
#else
  const at::Tensor allowed = attention_allowed(layout).to(device);  // [B, T, T]
  const int64_t B = allowed.size(0), T = allowed.size(1), rep = heads / kv_heads;
  const at::Tensor bias = at::zeros({}, allowed.options().dtype(dtype))
                              .masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  return {layout, bias.view({B, 1, 1, T, T}).expand({B, kv_heads, rep, T, T}).reshape({B * kv_heads, rep * T, T})};
#endif
}

// Causal self-attention of q [B, H, T, D] over k, v [B, KV, T, D] (grouped-query when KV < H:
// query head h reads key/value head h / (H / KV), as transformers' repeat_kv), scale 1/sqrt(D),
// as `mask` (attention_mask()'s) allows. The products run in `dtype` (the projections' product
// dtype: the matmul dtype under mixed precision), to which q, k and v (which rotary positions or
// float32 products may have left in float32) are cast. On CPUs with oneDNN's GEMMs: tiled_attention
// (with either libtorch); elsewhere libtorch's attention, scaled_dot_product_attention from 2.x on.
inline at::Tensor causal_attention(at::Tensor q, at::Tensor k, at::Tensor v, at::ScalarType dtype,
                                   const AttentionMask& mask = {}) {
  if (takes_tiled_attention(dtype, q.device())) return tiled_attention(q, k, v, dtype, mask.layout);
  TORCH_CHECK(!mask.layout.defined() || mask.tensor.defined(), "causal_attention: the mask was made for tiled attention");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), KV = k.size(1), rep = H / KV;
#if TORCH_VERSION_MAJOR >= 2
  q = for_matmul(q, dtype);
  k = for_matmul(k, dtype);
  v = for_matmul(v, dtype);
  if (rep > 1) {
    k = k.unsqueeze(2).expand({B, KV, rep, T, D}).reshape({B, H, T, D});
    v = v.unsqueeze(2).expand({B, KV, rep, T, D}).reshape({B, H, T, D});
  }
  if (mask.tensor.defined())
    return at::scaled_dot_product_attention(q, k, v, mask.tensor, /*dropout_p=*/0.0, /*is_causal=*/false);
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
#else
  // As transformers' eager attention: scores q k^T / sqrt(D) plus the mask (-inf where a token
  // may not look) in one product, the softmax in float32 (libtorch's bfloat16 softmax rounds its
  // intermediates), rounded to the values' dtype for their product. The query heads of one
  // key/value head are stacked along time, so a shared key/value head is never copied.
  q = for_matmul(q, dtype);
  k = for_matmul(k, dtype);
  v = for_matmul(v, dtype);
  const at::Tensor bias =
      mask.tensor.defined()
          ? mask.tensor
          : at::full({T, T}, -std::numeric_limits<double>::infinity(), q.options()).triu(1).repeat({rep, 1});
  const at::Tensor scores = at::baddbmm(bias, q.reshape({B * KV, rep * T, D}), k.reshape({B * KV, T, D}).transpose(1, 2),
                                        /*beta=*/1.0, /*alpha=*/1.0 / std::sqrt(static_cast<double>(D)));
  const at::Tensor probs = at::softmax(at_least_float32(scores), -1).to(v.scalar_type());
  return at::bmm(probs, v.reshape({B * KV, T, D})).view({B, H, T, D});
#endif
}

// The architectures, with parameters of `options` (dtype, device), uninitialised.
CausalLM make_gpt2(const ModelSpec& spec, const at::TensorOptions& options);
CausalLM make_llama(const ModelSpec& spec, const at::TensorOptions& options);

// Config-derived options that change the math but are not ModelSpec fields; read from
// spec.hf_config (defaults when absent). Errors name `source` and the key.
enum class Gpt2Activation { GeluTanh, GeluErf };
Gpt2Activation gpt2_activation(const ModelSpec& spec, const std::string& source);
// Qwen2 puts a bias on q/k/v only; Llama's attention_bias also covers o_proj.
bool llama_o_proj_bias(const ModelSpec& spec);
// Mistral's sliding window (0 = none): attention equals full causal attention up to that length.
int64_t llama_sliding_window(const ModelSpec& spec, const std::string& source);
// RoPE inverse frequencies [head_dim / 2], float32, with rope_scaling (none, linear, llama3).
at::Tensor rope_inv_freq(const ModelSpec& spec, const std::string& source);
// A config's RoPE scaling settings and the key they sit under: `rope_parameters` (transformers 5,
// rope_type missing = default) or `rope_scaling` (older; null = none). A file with both is refused
// where they disagree.
struct RopeScaling {
  const nlohmann::json* settings;
  const char* key;
};
RopeScaling rope_scaling_of(const nlohmann::json& config, const std::string& source);

}  // namespace dpo
