// Sampling continuations from a causal LM (no KV cache: for the small models of the demo, the tests
// and `dpo generate`): temperature, top-p (nucleus), stop ids and ids that are never sampled. What
// it does not own: text (tokenizing prompts, decoding the result, stop ids from tokenizer files are
// the caller's).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "dpo/data/preference_data.h"
#include "dpo/model/model.h"

namespace dpo {

struct SamplingOptions {
  int64_t max_new_tokens = 128;  // prompt + max_new_tokens must fit in max_position_embeddings
  double temperature = 1.0;      // 0 = greedy (argmax)
  double top_p = 1.0;            // in (0, 1]; 1 = no nucleus filtering
  uint64_t seed = 0;             // one generator for all prompts, drawn from in order
  std::vector<int64_t> stop_ids;    // generation ends at the first of these; it is not part of the result
  std::vector<int64_t> banned_ids;  // never sampled (the synthetic task's padding id 0)
};

// The names of OpenAI's and vLLM's `finish_reason`: a stop id was sampled, or max_new_tokens ran out.
enum class FinishReason { Stop, Length };
const char* finish_reason_name(FinishReason reason);

struct Generation {
  TokenIds ids;  // the new tokens, without the stop id
  FinishReason finish_reason = FinishReason::Length;
};

// Hugging Face's top-p warper on one row of logits: the smallest set of most probable tokens whose
// probabilities sum to at least `top_p` keeps its logits (always at least one token); the others
// become -inf. top_p >= 1 returns the logits as they are.
at::Tensor nucleus_filter(const at::Tensor& logits, double top_p);

// For each prompt, a continuation sampled as `options` say (temperature, then top-p, as Hugging
// Face's warpers order them). Deterministic for a seed, whatever the device. An empty prompt, an id
// outside the model's vocabulary or a prompt too long for max_new_tokens is an error naming the
// prompt's index.
std::vector<Generation> generate(CausalLMImpl& model, const std::vector<TokenIds>& prompts, const SamplingOptions& options);

// The synthetic task's sampler: exactly `max_new_tokens` tokens per prompt at `temperature`, token 0
// (its padding id) never sampled, no stop ids; generate with those options.
std::vector<TokenIds> sample_responses(CausalLMImpl& model, const std::vector<TokenIds>& prompts,
                                       int64_t max_new_tokens, double temperature, uint64_t seed);

}  // namespace dpo
