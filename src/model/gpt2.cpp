// GPT2LMHeadModel as in transformers: learned positions, pre-LayerNorm blocks, Conv1D
// projections, head tied to the token embedding.
#include <torch/nn/modules/container/modulelist.h>

#include <vector>

#include "dpo/error.h"
#include "dpo/kernels/gelu_tanh.h"
#include "dpo/model/activation_checkpoint.h"
#include "dpo/model/layers.h"

namespace dpo {
namespace {

struct GPT2AttentionImpl : torch::nn::Module {
  GPT2AttentionImpl(const ModelSpec& s, const at::TensorOptions& o) : heads(s.num_heads) {
    c_attn = register_module("c_attn",
                             std::make_shared<Conv1DImpl>(s.hidden_size, 3 * s.hidden_size, o));
    c_proj =
        register_module("c_proj", std::make_shared<Conv1DImpl>(s.hidden_size, s.hidden_size, o));
  }
  at::Tensor forward(const at::Tensor& x, const AttentionMask& mask) const {
    const int64_t B = x.size(0), T = x.size(1), d = x.size(2);
    const auto qkv = c_attn->forward(x).split(d, -1);
    auto heads_first = [&](const at::Tensor& t) {
      return t.view({B, T, heads, d / heads}).transpose(1, 2);
    };
    const at::Tensor y =
        causal_attention(heads_first(qkv[0]), heads_first(qkv[1]), heads_first(qkv[2]),
                         c_attn->product_dtype(c_attn->weight), mask);
    return c_proj->forward(y.transpose(1, 2).reshape({B, T, d}));
  }
  int64_t heads;
  std::shared_ptr<Conv1DImpl> c_attn, c_proj;
};

struct GPT2MLPImpl : torch::nn::Module {
  GPT2MLPImpl(const ModelSpec& s, const at::TensorOptions& o, Gpt2Activation act) : act(act) {
    c_fc = register_module("c_fc",
                           std::make_shared<Conv1DImpl>(s.hidden_size, s.intermediate_size, o));
    c_proj = register_module("c_proj",
                             std::make_shared<Conv1DImpl>(s.intermediate_size, s.hidden_size, o));
  }
  at::Tensor activation(const at::Tensor& x) const {
    switch (act) {
      case Gpt2Activation::GeluTanh:  // kernels/gelu_tanh: one e^x per element, not Sleef's tanh
        return gelu_tanh(x);
      case Gpt2Activation::GeluErf:
        return at::gelu(x);
    }
    return x;
  }
  at::Tensor forward(const at::Tensor& x) const {
    // The activation in float32 (at least): libtorch's GELU backward is ~5x slower on bfloat16 than
    // the casts that avoid it; c_proj casts back to its matmul dtype.
    return c_proj->forward(activation(at_least_float32(c_fc->forward(x))));
  }
  Gpt2Activation act;
  std::shared_ptr<Conv1DImpl> c_fc, c_proj;
};

struct GPT2BlockImpl : torch::nn::Module {
  GPT2BlockImpl(const ModelSpec& s, const at::TensorOptions& o, Gpt2Activation act) {
    ln_1 = register_module("ln_1", std::make_shared<LayerNormImpl>(s.hidden_size, s.norm_eps, o));
    attn = register_module("attn", std::make_shared<GPT2AttentionImpl>(s, o));
    ln_2 = register_module("ln_2", std::make_shared<LayerNormImpl>(s.hidden_size, s.norm_eps, o));
    mlp = register_module("mlp", std::make_shared<GPT2MLPImpl>(s, o, act));
  }
  at::Tensor forward(at::Tensor h, const AttentionMask& mask, const at::Tensor& keep = {}) const {
    h = h + attn->forward(ln_1->forward(h), mask);
    if (keep.defined()) h = h.reshape({-1, h.size(-1)}).index_select(0, keep);  // CausalLMImpl::hidden_states
    return h + mlp->forward(ln_2->forward(h));
  }
  std::shared_ptr<LayerNormImpl> ln_1, ln_2;
  std::shared_ptr<GPT2AttentionImpl> attn;
  std::shared_ptr<GPT2MLPImpl> mlp;
};

// transformers' GPT2Model: the parameters live under "transformer.".
struct GPT2ModelImpl : torch::nn::Module {
  GPT2ModelImpl(const ModelSpec& s, const at::TensorOptions& o) {
    const Gpt2Activation act = gpt2_activation(s, "config");
    wte = register_module("wte",
                          std::make_shared<EmbeddingImpl>(s.vocab_size, s.hidden_size, o, /*tied_to_head=*/true));
    wpe = register_module(
        "wpe", std::make_shared<EmbeddingImpl>(s.max_position_embeddings, s.hidden_size, o));
    torch::nn::ModuleList list;
    for (int64_t i = 0; i < s.num_layers; ++i) {
      blocks.push_back(std::make_shared<GPT2BlockImpl>(s, o, act));
      list->push_back(blocks.back());
    }
    register_module("h", list);
    ln_f = register_module("ln_f", std::make_shared<LayerNormImpl>(s.hidden_size, s.norm_eps, o));
  }
  std::shared_ptr<EmbeddingImpl> wte, wpe;
  std::vector<std::shared_ptr<GPT2BlockImpl>> blocks;
  std::shared_ptr<LayerNormImpl> ln_f;
};

class GPT2LMHeadModelImpl : public CausalLMImpl {
 public:
  GPT2LMHeadModelImpl(const ModelSpec& s, const at::TensorOptions& o) : CausalLMImpl(s) {
    transformer_ = register_module("transformer", std::make_shared<GPT2ModelImpl>(s, o));
  }
  at::Tensor hidden_states(const at::Tensor& input_ids, const TokenLayout& layout, const at::Tensor& keep) override {
    if (input_ids.dim() != 2) fail("gpt2 forward: input_ids must be [batch, time]");
    const int64_t T = input_ids.size(1);
    const at::Tensor positions =
        layout.defined() ? layout.positions.to(input_ids.device()) : at::arange(T, input_ids.options().dtype(at::kLong));
    const int64_t length = longest_sequence(input_ids, layout);
    if (length > spec_.max_position_embeddings) {
      fail("gpt2 forward: sequence length {} exceeds n_positions {}", length, spec_.max_position_embeddings);
    }
    const AttentionMask mask = attention_mask(layout, spec_.num_heads, spec_.num_heads, scores_dtype(), input_ids.device());
    at::Tensor h = transformer_->wte->forward(input_ids) + transformer_->wpe->forward(positions);
    for (const auto& block : transformer_->blocks) {
      const at::Tensor rows = block == transformer_->blocks.back() ? keep : at::Tensor();
      h = checkpoint_blocks()
              ? checkpointed([block, mask, rows](const at::Tensor& x) { return block->forward(x, mask, rows); }, h)
              : block->forward(h, mask, rows);
    }
    return transformer_->ln_f->forward(h);
  }
  const at::Tensor& head_weight() const override { return transformer_->wte->weight; }  // tied

 private:
  std::shared_ptr<GPT2ModelImpl> transformer_;
};

}  // namespace

CausalLM make_gpt2(const ModelSpec& spec, const at::TensorOptions& options) {
  return std::make_shared<GPT2LMHeadModelImpl>(spec, options);
}

}  // namespace dpo
