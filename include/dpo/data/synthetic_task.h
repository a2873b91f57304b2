// A synthetic preference task with a known ground-truth reward, so that the demo and the tests can
// see preference learning without downloading anything. The rule: a response is better the larger
// the share of its tokens that also occur in the prompt ("stay on topic"). Token 0 is reserved
// (padding); ids are in [1, vocab_size).
#pragma once
#include <cstdint>
#include <vector>

#include "dpo/data/preference_data.h"

namespace dpo {

struct SyntheticTaskOptions {
  int64_t pairs = 512;
  int64_t vocab_size = 64;
  uint64_t seed = 0;
  int64_t min_prompt_length = 4, max_prompt_length = 8;
  int64_t min_response_length = 3, max_response_length = 8;
  int64_t responses = 2;  // per prompt; K > 2 makes ranked records (more_rejected)
};

// Ground truth: the fraction of response tokens that occur in the prompt.
double synthetic_reward(const TokenIds& prompt, const TokenIds& response);

// Pairs whose chosen response has a strictly higher synthetic_reward than the rejected one; with
// options.responses K > 2, K responses of strictly decreasing reward per prompt, best first.
std::vector<RawPreferencePair> make_synthetic_pairs(const SyntheticTaskOptions& options);

}  // namespace dpo
