// Log-probs of responses from logits: log-softmax in float32, gathered at the next token, summed
// over response tokens with prompt and padding masked (the paper code's `_get_batch_logps`).
#pragma once
#include <functional>

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

// Pairs [first, first + count) of `logps` (every defined field narrowed).
PairLogps pairs_of(const PairLogps& logps, int64_t first, int64_t count);

// The loss of pairs [first, first + count) of a batch, [count], from the policy's log-probs of those
// pairs (differentiable). A pair's loss must depend on that pair's values only.
using PairLosses = std::function<at::Tensor(const PairLogps& policy, int64_t first, int64_t count)>;
struct PairLossStep {
  PairLogps policy;   // the batch's log-probs, no gradient
  at::Tensor losses;  // [B], no gradient
  bool head_gradient_in_forward = false;  // false: the plain way, the head recomputed in backward
};
// One micro-batch of training: the policy's forward over `batch` and the backward of
// scale * sum of `losses`, the gradients added into the parameters' as backward() does. The LM
// head's gradient is formed in forward, chunk by chunk of whole pairs, from logits computed once
// (head_logps_with_gradient) and not recomputed in backward, LD-DPO's weighting, unlikelihood's
// sums and WPO's weights included; where that does not apply (ranked responses, a pair with more
// than `chunk_logits` logits: 128 MiB of float32, a pair of 640 scored tokens at GPT-2's
// vocabulary) it is pair_logps, `losses` and backward(), as it is for any pair with chunk_logits 0.
// Both give the same gradients to float rounding.
constexpr int64_t kPairChunkLogits = int64_t{1} << 25;
PairLossStep pair_loss_backward(CausalLMImpl& model, const PairBatch& batch, const ResponseScoring& scoring,
                                const PairLosses& losses, double scale, int64_t chunk_logits = kPairChunkLogits);

// One micro-batch of SFT: model_sequence_logps' forward and the backward of
// scale * -(sum of the scored tokens' log-probs), the gradients added into the parameters' as
// backward() does. A token's loss gradient is the constant -scale, so the LM head's gradient is
// formed in forward (head_logps_with_gradient) in chunks of at most `chunk_logits` logits (whole
// rows of the vocabulary; the head is not recomputed in backward). Returns the log-probs summed per
// row and the rows' scored-token counts, without gradient.
SequenceLogps nll_backward(CausalLMImpl& model, const at::Tensor& input_ids, const at::Tensor& response_mask,
                           double scale, int64_t chunk_logits = kPairChunkLogits);

}  // namespace dpo
