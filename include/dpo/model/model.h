// Decoder-only causal LMs (GPT-2 and Llama families) in libtorch, with parameter names exactly
// those of Hugging Face transformers, so that loading and saving is a name-for-name copy.
// Owns the architectures, their Hugging Face config.json mapping, and model directory I/O.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include "dpo/data/token_layout.h"
#include "dpo/model/safetensors.h"
#include "dpo/model/serving_files.h"

namespace dpo {

enum class Architecture { GPT2, Llama };

// The architecture hyper-parameters, read from / written to config.json.
struct ModelSpec {
  Architecture arch = Architecture::Llama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;       // Llama GQA; GPT-2: = num_heads
  int64_t head_dim = 0;           // hidden_size / num_heads unless config.json says otherwise
  int64_t intermediate_size = 0;  // GPT-2: n_inner or 4*hidden
  int64_t max_position_embeddings = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;  // GPT-2: always true
  bool attention_bias = false;       // Llama/Qwen2-style q/k/v bias
  bool mlp_bias = false;
  nlohmann::json hf_config;  // the config.json it came from, written back with our fields updated
};

// Parses a Hugging Face config.json (model_type / architectures: gpt2, llama, qwen2, mistral
// accepted where the math is the same). Errors name `source` and the key.
ModelSpec model_spec_from_hf_config(const nlohmann::json& config, const std::string& source);
// A config.json that transformers loads as GPT2LMHeadModel / LlamaForCausalLM.
nlohmann::json hf_config_from_model_spec(const ModelSpec& spec, const std::string& torch_dtype);

// Base class of both architectures. forward() maps input ids [B, T] (int64) to logits [B, T, V]
// in the model's dtype (the matmul dtype under mixed precision); training and precompute-ref
// instead take hidden_states() and head_weight() to run the head on scored positions only
// (loss/head_logps.h). Parameters are registered under the Hugging Face names (e.g.
// "transformer.h.0.attn.c_attn.weight", "model.layers.0.self_attn.q_proj.weight").
class CausalLMImpl : public torch::nn::Module {
 public:
  explicit CausalLMImpl(ModelSpec spec) : spec_(std::move(spec)) {}
  at::Tensor forward(const at::Tensor& input_ids);
  // The last hidden states [B, T, d], after the final norm: what the LM head multiplies. A defined
  // `layout` gives each token's position and what it attends to (shared prefixes, packed rows);
  // otherwise each row is one causal sequence at positions 0..T-1. A defined `keep` (int64 [N],
  // flat row-major positions of [B, T], repeats allowed) asks for those positions' states only,
  // [N, d] in its order: the last block's MLP and the final norm then run on those rows alone (its
  // attention still reads every position's keys and values). A training step scores about two
  // thirds of the positions under prefix sharing (none of the prompt's but its last).
  virtual at::Tensor hidden_states(const at::Tensor& input_ids, const TokenLayout& layout = {},
                                   const at::Tensor& keep = {}) = 0;
  // The LM head's weight [V, d] (no bias); a tied model's is the token embedding.
  virtual const at::Tensor& head_weight() const = 0;
  const ModelSpec& spec() const { return spec_; }
  // Where the parameters live (the CPU for a model without any): where its inputs must go.
  at::Device device() const {
    const std::vector<at::Tensor> parameters = this->parameters();
    return parameters.empty() ? at::Device(at::kCPU) : parameters.front().device();
  }
  // Forward FLOPs per token at sequence length T (matmuls + attention), for throughput reports.
  double forward_flops_per_token(int64_t seq_len) const;
  // Of those, one decoder block's MLP (what a block skips on a position it does not keep).
  double mlp_flops_per_token() const;
  // Activation checkpointing (train.gradient_checkpointing): a training forward with gradients
  // on keeps only each decoder block's input and recomputes the block's activations in backward
  // (model/activation_checkpoint.h). Eval-mode and no-grad forwards are unaffected.
  void set_gradient_checkpointing(bool enabled) { gradient_checkpointing_ = enabled; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }

  // Mixed precision: every matrix product (projections, attention, the head) runs in `dtype` on
  // casts of the weights, which stay as they are (float32 master weights); norms, residual sums
  // and the logits' log-softmax stay in float32. Undefined (the default): the weights' dtype.
  void set_matmul_dtype(at::ScalarType dtype);
  at::ScalarType matmul_dtype() const { return matmul_dtype_; }

 protected:
  // The dtype of attention scores: that of the projections' products (matmul dtype, else the weights').
  at::ScalarType scores_dtype() const {
    return matmul_dtype_ != at::ScalarType::Undefined ? matmul_dtype_ : head_weight().scalar_type();
  }
  // Whether this forward's blocks go through checkpointed(): only training forwards pay for it.
  bool checkpoint_blocks() const { return gradient_checkpointing_ && is_training(); }
  ModelSpec spec_;
  at::ScalarType matmul_dtype_ = at::ScalarType::Undefined;
  bool gradient_checkpointing_ = false;
};
using CausalLM = std::shared_ptr<CausalLMImpl>;

// A small default config.json for `dpo init-model --arch gpt2|llama` (HF key names); the CLI
// applies `--set key=value` on top of it before model_spec_from_hf_config.
nlohmann::json default_hf_config(Architecture arch);
Architecture parse_architecture(const std::string& name);  // "gpt2" | "llama"

// A freshly constructed model with the initialisation transformers uses (normal(0, 0.02) weights,
// zero biases, unit norms), seeded.
CausalLM build_model(const ModelSpec& spec, uint64_t seed);

// Loads config.json + model.safetensors (or model.safetensors.index.json shards). Tensors may be
// float32/bfloat16/float16 on disk; the model is cast to `dtype` on `device`. Missing, unexpected
// or mis-shaped tensors are errors naming the tensor and file.
CausalLM load_model(const std::string& dir, at::ScalarType dtype, const std::string& device = "cpu");

// Writes config.json + model.safetensors under a temporary name, then renames to `dir`. Tensors
// are saved in `dtype` (Undefined: the model's own) with transformers' names (a tied head is not
// saved twice); config.json's torch_dtype says which. The serving files of `serving` (tokenizer,
// generation_config.json) are copied in before the rename.
void save_model(const CausalLMImpl& model, const std::string& dir,
                at::ScalarType dtype = at::ScalarType::Undefined, const ServingSources& serving = {});
// config.json + model.safetensors, fsynced, into the existing directory `dir` (a checkpoint's
// temporary directory, committed as a whole by its caller), in the model's own dtype.
void write_model_files(const CausalLMImpl& model, const std::string& dir,
                       at::ScalarType dtype = at::ScalarType::Undefined);

// The state dict that save_model writes (names as transformers), CPU tensors in `dtype`
// (Undefined: the model's own).
NamedTensors model_state_for_save(const CausalLMImpl& model, at::ScalarType dtype = at::ScalarType::Undefined);

// The dtype a model directory's weights are stored in (the one most of their elements have).
at::ScalarType stored_weights_dtype(const std::string& dir);

// "float32" | "bfloat16" | "float16" <-> ScalarType.
at::ScalarType parse_dtype(const std::string& name);
std::string dtype_name(at::ScalarType dtype);

// A human-readable multi-line description of a model directory (for `dpo inspect`).
std::string describe_model_dir(const std::string& dir);

}  // namespace dpo
