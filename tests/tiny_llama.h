// The tiny models shared by the tests. The Llama: vocab 32, hidden 16, 2 layers, 2 query heads
// sharing 1 key/value head (so grouped-query attention is on the path), untied head.
#pragma once
#include <cstdint>

#include <nlohmann/json.hpp>

#include "dpo/model/model.h"

inline dpo::CausalLM tiny_llama(uint64_t seed) {
  nlohmann::json config = dpo::default_hf_config(dpo::Architecture::Llama);
  config["vocab_size"] = 32;
  config["hidden_size"] = 16;
  config["intermediate_size"] = 32;
  config["num_hidden_layers"] = 2;
  config["num_attention_heads"] = 2;
  config["num_key_value_heads"] = 1;
  return dpo::build_model(dpo::model_spec_from_hf_config(config, "tiny llama"), seed);
}

// A tiny GPT-2: vocab 32, hidden 16, 2 layers, 2 heads, 64 positions (tied head, learned positions).
inline dpo::CausalLM tiny_gpt2(uint64_t seed) {
  nlohmann::json config = dpo::default_hf_config(dpo::Architecture::GPT2);
  config["vocab_size"] = 32;
  config["n_embd"] = 16;
  config["n_layer"] = 2;
  config["n_head"] = 2;
  config["n_positions"] = 64;
  return dpo::build_model(dpo::model_spec_from_hf_config(config, "tiny gpt2"), seed);
}
