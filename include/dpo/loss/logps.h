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
  at::Tensor unlikelihood;  // [R] sum of log(1 - p) over scored tokens, when asked for
  at::Tensor weight_logps;  // [R] mean over scored tokens of log p - log sum_v p_v^2 (WPO), when asked for
};

// What a forward computes beyond the plain sums, for the loss terms that read it (loss.h's
// response_scoring() says which a config needs).
struct ResponseScoring {
  // LD-DPO: a row's scored tokens past its first `full_weight_tokens` count ld_alpha times in logps.
  double ld_alpha = 1.0;
  bool unlikelihood = false;  // fill SequenceLogps::unlikelihood
  bool wpo_weights = false;   // fill SequenceLogps::weight_logps (no gradient)
};

// logits [R, T, V] (any float dtype), input_ids [R, T], response_mask [R, T] (bool). Token t is
// scored when t >= 1 and response_mask[t]; its log-prob comes from logits at t-1.
SequenceLogps sequence_logps(const at::Tensor& logits, const at::Tensor& input_ids,
                             const at::Tensor& response_mask);

// The same log-probs from one forward of `model` over input_ids (on the model's device), with the
// LM head and its log-softmax run only on the positions that predict a scored token
// (head_token_logps): equal to sequence_logps(model.forward(ids), ...) to float rounding.
// `scoring` and `full_weight_tokens` ([R] int64, with ld_alpha < 1) ask for more (see ResponseScoring).
SequenceLogps model_sequence_logps(CausalLMImpl& model, const at::Tensor& input_ids, const at::Tensor& response_mask,
                                   const ResponseScoring& scoring = {}, const at::Tensor& full_weight_tokens = {});

// One forward of the model over a collated batch: chosen rows first, rejected rows after, then the
// rows of responses ranked below rejected (ranked data).
// With scoring.ld_alpha < 1, each pair's tokens past the shorter response's scored length weigh
// ld_alpha (TRL's LD-DPO); the extra fields are filled when scoring asks for them.
struct PairLogps {
  at::Tensor chosen, rejected;                // [B] float32
  at::Tensor chosen_tokens, rejected_tokens;  // [B] int64
  at::Tensor rejected_unlikelihood;           // [B] sum over rejected tokens of log(1 - p)
  at::Tensor chosen_weight_logps, rejected_weight_logps;  // [B] WPO's length-normalised log-probs
  // [B, M] (ranked data only; undefined for pairs): the responses ranked below rejected, best first,
  // log-prob 0 and 0 tokens where a pair has fewer than M (a real response scores >= 1 token).
  at::Tensor more, more_tokens;
};
PairLogps pair_logps(CausalLMImpl& model, const PairBatch& batch, const ResponseScoring& scoring = {});

}  // namespace dpo
