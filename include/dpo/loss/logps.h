// Log-probs of responses from logits: log-softmax in float32, gathered at the next token, summed
// over response tokens with prompt and padding masked (the paper code's `_get_batch_logps`).
#pragma once
#include <ATen/ATen.h>

#include "dpo/data/collate.h"
#include "dpo/model/model.h"

namespace dpo {

struct SequenceLogps {
  at::Tensor logps;         // [R] float32: sum of log p(token_t | tokens_<t) over scored tokens
  at::Tensor token_counts;  // [R] int64: number of scored tokens
};

// logits [R, T, V] (any float dtype), input_ids [R, T], response_mask [R, T] (bool). Token t is
// scored when t >= 1 and response_mask[t]; its log-prob comes from logits at t-1.
SequenceLogps sequence_logps(const at::Tensor& logits, const at::Tensor& input_ids,
                             const at::Tensor& response_mask);

// The same log-probs from one forward of `model` over input_ids (on the model's device), with the
// LM head and its log-softmax run only on the positions that predict a scored token
// (head_token_logps): equal to sequence_logps(model.forward(ids), ...) to float rounding.
SequenceLogps model_sequence_logps(CausalLMImpl& model, const at::Tensor& input_ids, const at::Tensor& response_mask);

// One forward of the model over a collated batch: chosen rows first, rejected rows after.
struct PairLogps {
  at::Tensor chosen, rejected;                // [B] float32
  at::Tensor chosen_tokens, rejected_tokens;  // [B] int64
};
PairLogps pair_logps(CausalLMImpl& model, const PairBatch& batch);

}  // namespace dpo
