// Private to the model module: the parameter-holding layers both architectures are built from,
// the causal attention kernel, and the config-derived options that are not ModelSpec fields.
// Layers create their parameters uninitialised (at::empty) so that loading a large checkpoint does
// not pay for an initialisation it overwrites; build_model initialises them.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/version.h>

#include <cmath>
#include <limits>

#include "dpo/model/model.h"

namespace dpo {

// `t` in `dtype` for a matrix product (Undefined: as it is). The cast is differentiable, so the
// gradient of a float32 weight used in bfloat16 arrives in float32.
inline at::Tensor for_matmul(const at::Tensor& t, at::ScalarType dtype) {
  return !t.defined() || dtype == at::ScalarType::Undefined || t.scalar_type() == dtype ? t : t.to(dtype);
}

// A layer whose matrix product may run in another dtype than its weights (mixed precision);
// CausalLMImpl::set_matmul_dtype sets it on every such layer. The output is in that dtype.
struct MatmulLayer : torch::nn::Module {
  at::ScalarType matmul_dtype = at::ScalarType::Undefined;
};

// nn.Linear: y = x W^T + b, weight [out, in].
struct LinearImpl : MatmulLayer {
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& options) {
    weight = register_parameter("weight", at::empty({out, in}, options));
    if (bias) this->bias = register_parameter("bias", at::empty({out}, options));
  }
  at::Tensor forward(const at::Tensor& x) const {
    return at::linear(for_matmul(x, matmul_dtype), for_matmul(weight, matmul_dtype), for_matmul(bias, matmul_dtype));
  }
  at::Tensor weight, bias;
};

// GPT-2's Conv1D: y = x W + b, weight [in, out] (the transpose of nn.Linear's layout).
struct Conv1DImpl : MatmulLayer {
  Conv1DImpl(int64_t in, int64_t out, const at::TensorOptions& options) {
    weight = register_parameter("weight", at::empty({in, out}, options));
    bias = register_parameter("bias", at::empty({out}, options));
  }
  at::Tensor forward(const at::Tensor& x) const {
    auto out_shape = x.sizes().vec();
    out_shape.back() = weight.size(1);
    return at::addmm(for_matmul(bias, matmul_dtype), for_matmul(x.reshape({-1, x.size(-1)}), matmul_dtype),
                     for_matmul(weight, matmul_dtype))
        .view(out_shape);
  }
  at::Tensor weight, bias;
};

struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(int64_t count, int64_t dim, const at::TensorOptions& options) {
    weight = register_parameter("weight", at::empty({count, dim}, options));
  }
  at::Tensor forward(const at::Tensor& ids) const { return at::embedding(weight, ids); }
  at::Tensor weight;
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
  at::Tensor forward(const at::Tensor& x) const {
    const at::Tensor x32 = x.to(at::kFloat);
    const at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
    return weight * (x32 * at::rsqrt(variance + eps)).to(x.scalar_type());
  }
  at::Tensor weight;
  double eps;
};

// Causal self-attention over [B, H, T, D] with scale 1/sqrt(D); softmax in float32. The products
// run in v's dtype (a projection's output: the matmul dtype under mixed precision), to which q and
// k (which rotary positions may have promoted to float32) are cast.
inline at::Tensor causal_attention(at::Tensor q, at::Tensor k, const at::Tensor& v) {
  q = for_matmul(q, v.scalar_type());
  k = for_matmul(k, v.scalar_type());
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                          /*is_causal=*/true);
#else
  const int64_t T = q.size(-2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).to(at::kFloat) * scale;
  const at::Tensor future = at::ones({T, T}, q.options().dtype(at::kBool)).triu(1);
  const at::Tensor probs =
      at::softmax(scores.masked_fill(future, -std::numeric_limits<float>::infinity()), -1);
  return at::matmul(probs.to(q.scalar_type()), v);
#endif
}

// The architectures, with parameters of `options` (dtype, device), uninitialised.
CausalLM make_gpt2(const ModelSpec& spec, const at::TensorOptions& options);
CausalLM make_llama(const ModelSpec& spec, const at::TensorOptions& options);

// Config-derived options that change the math but are not ModelSpec fields; read from
// spec.hf_config (defaults when absent). Errors name `source` and the key.
enum class Gpt2Activation { GeluTanh, GeluTorchTanh, GeluErf };
Gpt2Activation gpt2_activation(const ModelSpec& spec, const std::string& source);
// Qwen2 puts a bias on q/k/v only; Llama's attention_bias also covers o_proj.
bool llama_o_proj_bias(const ModelSpec& spec);
// Mistral's sliding window (0 = none): attention equals full causal attention up to that length.
int64_t llama_sliding_window(const ModelSpec& spec, const std::string& source);
// RoPE inverse frequencies [head_dim / 2], float32, with rope_scaling (none, linear, llama3).
at::Tensor rope_inv_freq(const ModelSpec& spec, const std::string& source);

}  // namespace dpo
