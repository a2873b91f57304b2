// Log-probs of target tokens straight from hidden states and the LM head, chunk by chunk of rows,
// so that only the positions that are scored pay for the head and the vocabulary-sized softmax.
#pragma once
#include <functional>
#include <vector>

#include <ATen/ATen.h>

namespace dpo {

// log softmax(hidden @ weight^T)[n, targets[n]] for each row n: hidden [N, d], weight [V, d] (the
// head, no bias), targets [N] int64 in [0, V). The head's product runs in `matmul_dtype`
// (Undefined: the weight's dtype); the log-softmax and the result are float32 (float64 for
// float64 inputs). Differentiable in hidden and weight. The logits are computed chunk by chunk of
// rows and never held whole: forward keeps only each row's log-sum-exp, and backward recomputes
// each chunk's logits from it (one more product for the head) to form the chunk's gradient, so no
// [N, V] tensor lives from forward to backward. The gradients come back in hidden's and weight's
// own dtypes (float32 master weights under mixed precision), the weight's summed over chunks.
// The dtype log-probs are computed and returned in: float64 stays float64, anything else float32.
inline at::ScalarType float_type_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor head_token_logps(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                            at::ScalarType matmul_dtype);

// The head's log-probs and, in the same pass, the gradient of a loss of them, for a loss that adds
// up over chunks of rows (DPO's pairs: each chunk holds whole pairs). Chunk by chunk
// (rows [chunk_ends[i-1], chunk_ends[i]), the first from 0), the logits are formed once, the
// chunk's log-probs are handed to token_gradient(first row, logps [n]), which returns
// d loss / d logps [n] (with autograd enabled, for it to take that derivative), and the head's two
// gradient products are taken from the logits still at hand. Backward then recomputes nothing,
// and no vocabulary-sized tensor outlives its chunk; a chunk's logits are [n, V] float32, so the
// caller bounds n. Returns the log-probs [N] (float32, float64 for float64; no gradient) and
// `anchor`, a scalar of value 0 whose backward hands the gradients (times the anchor's own) to
// hidden and weight, in their dtypes; undefined when neither requires a gradient.
// `weight_gradient_sum`, when defined (weight's shape and dtype, contiguous: the weight's own
// .grad, for a caller that runs the anchor's backward() with gradient 1), receives the weight's
// gradient here, added to what it holds, and the anchor hands the weight none. Autograd's way
// makes a second [V, d] tensor, and where the head is tied to a sparse-gradient embedding, sums
// the two into a third before adding that into .grad (at GPT-2 small, 210-330 MiB more peak).
// `log_sum_squared`, when defined ([N], the log-probs' dtype), receives each row's
// log sum_v softmax[n, v]^2 (WPO's normaliser, as head_log_sum_squared_probs) from the chunk's
// logits before token_gradient sees the chunk.
using TokenGradient = std::function<at::Tensor(int64_t first_row, const at::Tensor& logps)>;
struct HeadLogpsWithGradient {
  at::Tensor logps, anchor;
};
HeadLogpsWithGradient head_logps_with_gradient(const at::Tensor& hidden, const at::Tensor& weight,
                                                const at::Tensor& targets, at::ScalarType matmul_dtype,
                                                const std::vector<int64_t>& chunk_ends,
                                                const TokenGradient& token_gradient,
                                                const at::Tensor& weight_gradient_sum = at::Tensor(),
                                                const at::Tensor& log_sum_squared = at::Tensor());
// Whether `sum` can be head_logps_with_gradient's weight_gradient_sum for `weight`.
bool takes_weight_gradient_sum(const at::Tensor& weight, const at::Tensor& sum);

// log sum_v softmax(hidden @ weight^T)[n, v]^2 for each row n, i.e. logsumexp(2z) - 2 logsumexp(z)
// of the logits z (WPO's normaliser), float32, chunk by chunk; never differentiable.
at::Tensor head_log_sum_squared_probs(const at::Tensor& hidden, const at::Tensor& weight, at::ScalarType matmul_dtype);

}  // namespace dpo
