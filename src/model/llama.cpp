// LlamaForCausalLM as in transformers (also Qwen2 and Mistral, whose math is the same within the
// limits checked in model_config.cpp): RMSNorm, rotary positions (rotate_half convention),
// grouped-query attention, SwiGLU MLP.
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <vector>

#include "dpo/error.h"
#include "dpo/kernels/rotary.h"
#include "dpo/kernels/swiglu.h"
#include "dpo/model/activation_checkpoint.h"
#include "dpo/model/layers.h"

namespace dpo {
namespace {

struct LlamaAttentionImpl : torch::nn::Module {
  LlamaAttentionImpl(const ModelSpec& s, const at::TensorOptions& o)
      : heads(s.num_heads), kv_heads(s.num_kv_heads), head_dim(s.head_dim) {
    const bool b = s.attention_bias;
    q_proj = register_module("q_proj",
                             std::make_shared<LinearImpl>(s.hidden_size, heads * head_dim, b, o));
    k_proj = register_module(
        "k_proj", std::make_shared<LinearImpl>(s.hidden_size, kv_heads * head_dim, b, o));
    v_proj = register_module(
        "v_proj", std::make_shared<LinearImpl>(s.hidden_size, kv_heads * head_dim, b, o));
    o_proj = register_module("o_proj", std::make_shared<LinearImpl>(heads * head_dim, s.hidden_size,
                                                                    llama_o_proj_bias(s), o));
  }
  // cos, sin: [1, T, head_dim] or [B, T, head_dim] (a layout's positions) in the model dtype;
  // mask: attention_mask()'s.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const AttentionMask& mask) const {
    const int64_t B = x.size(0), T = x.size(1);
    auto heads_first = [&](const at::Tensor& t, int64_t n) {
      return t.view({B, T, n, head_dim}).transpose(1, 2);
    };
    // split, not narrow: its backward concatenates the gradients instead of zero-filling and
    // copying into a full-sized gradient once per part.
    const auto qk_v = stacked_linear(x, {q_proj.get(), k_proj.get(), v_proj.get()})
                          .split_with_sizes({(heads + kv_heads) * head_dim, kv_heads * head_dim}, -1);
    // Rotary positions on queries and keys together, in float32 (at least), as transformers does
    // under autocast (its cos and sin are float32, which promotes q and k).
    const auto qk = rotary(at_least_float32(qk_v[0]), cos, sin).split_with_sizes({heads * head_dim, kv_heads * head_dim}, -1);
    const at::Tensor q = heads_first(qk[0], heads), k = heads_first(qk[1], kv_heads);
    const at::Tensor v = heads_first(qk_v[1], kv_heads);
    const at::Tensor y = causal_attention(q, k, v, q_proj->product_dtype(q_proj->weight), mask);
    return o_proj->forward(y.transpose(1, 2).reshape({B, T, heads * head_dim}));
  }
  int64_t heads, kv_heads, head_dim;
  std::shared_ptr<LinearImpl> q_proj, k_proj, v_proj, o_proj;
};

struct LlamaMLPImpl : torch::nn::Module {
  LlamaMLPImpl(const ModelSpec& s, const at::TensorOptions& o) {
    const bool b = s.mlp_bias;
    gate_proj = register_module(
        "gate_proj", std::make_shared<LinearImpl>(s.hidden_size, s.intermediate_size, b, o));
    up_proj = register_module(
        "up_proj", std::make_shared<LinearImpl>(s.hidden_size, s.intermediate_size, b, o));
    down_proj = register_module(
        "down_proj", std::make_shared<LinearImpl>(s.intermediate_size, s.hidden_size, b, o));
  }
  at::Tensor forward(const at::Tensor& x) const {
    // SwiGLU in float32 (at least): libtorch's silu and its backward are 5-10x slower on bfloat16
    // than the casts that avoid them; down_proj casts the product back to its matmul dtype.
    return down_proj->forward(swiglu(at_least_float32(stacked_linear(x, {gate_proj.get(), up_proj.get()}))));
  }
  std::shared_ptr<LinearImpl> gate_proj, up_proj, down_proj;
};

struct LlamaDecoderLayerImpl : torch::nn::Module {
  LlamaDecoderLayerImpl(const ModelSpec& s, const at::TensorOptions& o) {
    self_attn = register_module("self_attn", std::make_shared<LlamaAttentionImpl>(s, o));
    mlp = register_module("mlp", std::make_shared<LlamaMLPImpl>(s, o));
    input_layernorm = register_module("input_layernorm",
                                      std::make_shared<RMSNormImpl>(s.hidden_size, s.norm_eps, o));
    post_attention_layernorm = register_module(
        "post_attention_layernorm", std::make_shared<RMSNormImpl>(s.hidden_size, s.norm_eps, o));
  }
  at::Tensor forward(at::Tensor h, const at::Tensor& cos, const at::Tensor& sin, const AttentionMask& mask,
                     const at::Tensor& keep = {}) const {
    h = h + self_attn->forward(input_layernorm->forward(h), cos, sin, mask);
    if (keep.defined()) h = h.reshape({-1, h.size(-1)}).index_select(0, keep);  // CausalLMImpl::hidden_states
    return h + mlp->forward(post_attention_layernorm->forward(h));
  }
  std::shared_ptr<LlamaAttentionImpl> self_attn;
  std::shared_ptr<LlamaMLPImpl> mlp;
  std::shared_ptr<RMSNormImpl> input_layernorm, post_attention_layernorm;
};

// transformers' LlamaModel: the parameters live under "model.".
struct LlamaModelImpl : torch::nn::Module {
  LlamaModelImpl(const ModelSpec& s, const at::TensorOptions& o) {
    embed_tokens = register_module(
        "embed_tokens", std::make_shared<EmbeddingImpl>(s.vocab_size, s.hidden_size, o, s.tie_word_embeddings));
    torch::nn::ModuleList list;
    for (int64_t i = 0; i < s.num_layers; ++i) {
      layers.push_back(std::make_shared<LlamaDecoderLayerImpl>(s, o));
      list->push_back(layers.back());
    }
    register_module("layers", list);
    norm = register_module("norm", std::make_shared<RMSNormImpl>(s.hidden_size, s.norm_eps, o));
  }
  std::shared_ptr<EmbeddingImpl> embed_tokens;
  std::vector<std::shared_ptr<LlamaDecoderLayerImpl>> layers;
  std::shared_ptr<RMSNormImpl> norm;
};

class LlamaForCausalLMImpl : public CausalLMImpl {
 public:
  LlamaForCausalLMImpl(const ModelSpec& s, const at::TensorOptions& o)
      : CausalLMImpl(s),
        inv_freq_(rope_inv_freq(s, "config")),
        sliding_window_(llama_sliding_window(s, "config")) {
    model_ = register_module("model", std::make_shared<LlamaModelImpl>(s, o));
    if (!s.tie_word_embeddings) {
      lm_head_ = register_module(
          "lm_head", std::make_shared<LinearImpl>(s.hidden_size, s.vocab_size, false, o));
    }
  }
  at::Tensor hidden_states(const at::Tensor& input_ids, const TokenLayout& layout, const at::Tensor& keep) override {
    if (input_ids.dim() != 2) fail("llama forward: input_ids must be [batch, time]");
    const int64_t T = input_ids.size(1);
    const int64_t length = longest_sequence(input_ids, layout);
    if (sliding_window_ > 0 && length > sliding_window_) {
      fail(
          "llama forward: sequence length {} exceeds sliding_window {} (sliding-window attention "
          "is not implemented)",
          length, sliding_window_);
    }
    at::Tensor h = model_->embed_tokens->forward(input_ids);
    // As LlamaRotaryEmbedding: angles in float32, cos/sin cast to the model dtype, [1, T, D]; with
    // a layout, per row: [B, T, D].
    const at::Tensor positions = layout.defined() ? layout.positions.to(input_ids.device(), at::kFloat)
                                                  : at::arange(T, input_ids.options().dtype(at::kFloat)).unsqueeze(0);
    const at::Tensor freqs = positions.unsqueeze(-1) * inv_freq_.to(input_ids.device());
    const at::Tensor angles = at::cat({freqs, freqs}, -1);
    const at::Tensor cos = angles.cos().to(h.scalar_type());
    const at::Tensor sin = angles.sin().to(h.scalar_type());
    const AttentionMask mask =
        attention_mask(layout, spec_.num_heads, spec_.num_kv_heads, scores_dtype(), input_ids.device());
    for (const auto& layer : model_->layers) {
      const at::Tensor rows = layer == model_->layers.back() ? keep : at::Tensor();
      h = checkpoint_blocks() ? checkpointed([layer, cos, sin, mask, rows](
                                                 const at::Tensor& x) { return layer->forward(x, cos, sin, mask, rows); },
                                             h)
                              : layer->forward(h, cos, sin, mask, rows);
    }
    return model_->norm->forward(h);
  }
  const at::Tensor& head_weight() const override { return lm_head_ ? lm_head_->weight : model_->embed_tokens->weight; }

 private:
  at::Tensor inv_freq_;  // float32, CPU; derived from the config, not a parameter
  int64_t sliding_window_;
  std::shared_ptr<LlamaModelImpl> model_;
  std::shared_ptr<LinearImpl> lm_head_;
};

double json_number(const nlohmann::json& obj, const char* section, const char* key, const std::string& source) {
  if (!obj.contains(key) || !obj[key].is_number()) {
    fail("{}: {}.{} must be a number", source, section, key);
  }
  return obj[key].get<double>();
}

}  // namespace

at::Tensor rope_inv_freq(const ModelSpec& spec, const std::string& source) {
  const int64_t dim = spec.head_dim;
  // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in float32.
  const at::Tensor exponents =
      at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = 1.0 / at::pow(spec.rope_theta, exponents);
  const RopeScaling scaling = rope_scaling_of(spec.hf_config, source);
  const nlohmann::json& rs = *scaling.settings;
  if (rs.is_null()) return inv_freq;
  if (!rs.is_object()) fail("{}: {} must be an object or null", source, scaling.key);
  const std::string key = rs.contains("rope_type") ? "rope_type" : "type";
  const bool new_style = std::string(scaling.key) == "rope_parameters";
  const std::string type = rs.contains(key) && rs[key].is_string() ? rs[key].get<std::string>()
                           : new_style                              ? "default"
                                                                    : "";
  if (type == "default") return inv_freq;
  const auto number = [&](const char* name) { return json_number(rs, scaling.key, name, source); };
  if (type == "linear") return inv_freq / number("factor");
  if (type == "llama3") {
    // transformers' _compute_llama3_parameters (Llama 3.1), computed the same way in float32.
    const double factor = number("factor");
    const double low_freq_factor = number("low_freq_factor");
    const double high_freq_factor = number("high_freq_factor");
    const double old_context = number("original_max_position_embeddings");
    const double low_freq_wavelen = old_context / low_freq_factor;
    const double high_freq_wavelen = old_context / high_freq_factor;
    const at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq);
    const at::Tensor smooth =
        (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    const at::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    const at::Tensor medium =
        (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
    return at::where(medium, smoothed, scaled);
  }
  fail("{}: {} type '{}' is not supported (default, linear and llama3 are)", source, scaling.key, type);
}

CausalLM make_llama(const ModelSpec& spec, const at::TensorOptions& options) {
  return std::make_shared<LlamaForCausalLMImpl>(spec, options);
}

}  // namespace dpo
