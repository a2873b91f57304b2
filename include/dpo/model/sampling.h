// Sampling responses from a causal LM (no KV cache: for the small models of the demo and tests).
#pragma once
#include <cstdint>
#include <vector>

#include "dpo/data/preference_data.h"
#include "dpo/model/model.h"

namespace dpo {

// For each prompt, `max_new_tokens` tokens sampled at `temperature` (0 = greedy); token 0 (the
// padding id) is never sampled. Deterministic for a seed.
std::vector<TokenIds> sample_responses(CausalLMImpl& model, const std::vector<TokenIds>& prompts,
                                       int64_t max_new_tokens, double temperature, uint64_t seed);

}  // namespace dpo
