// The log-softmax at target tokens and its gradient, row by row over a chunk of float32 logits
// [rows, vocab] (the LM head's, loss/head_logps), on CPUs.
//
// libtorch's way, logsumexp then gather forward and sub_, exp_, mul_, scatter_add_ (and a cast for
// bfloat16 products) backward, is nine passes over a chunk that does not fit in cache (64 MiB at
// GPT-2's vocabulary) and two chunk-sized temporaries. Here one row (200 KiB at GPT-2's vocabulary)
// is read twice in cache forward (its maximum, then the sum of e^(x - max)) and once backward,
// the rows spread over the threads; e^x is kernels/float_lanes.h's (relative error < 2e-7) and the
// sum is accumulated in float64 per block of 2048 columns.
#pragma once

#include <ATen/ATen.h>

namespace dpo {

// Whether these kernels take `logits`: float32, on the CPU, rows contiguous ([rows, vocab], row
// stride vocab). Elsewhere (CUDA, float64) the caller keeps libtorch's operations.
bool takes_logit_rows(const at::Tensor& logits);

// For logits [n, V] and targets [n] (int64 in [0, V), unchecked): lse[r] = log sum_v e^logits[r, v]
// and logps[r] = logits[r, targets[r]] - lse[r], into lse and logps (float32 [n], contiguous).
// A NaN among a row's logits makes its lse and log-prob NaN.
void log_softmax_at_targets(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& lse,
                            const at::Tensor& logps);

// lse[r] = log sum_v e^logits[r, v] (float32 [n], contiguous), as log_softmax_at_targets.
void log_sum_exp_rows(const at::Tensor& logits, const at::Tensor& lse);

// The gradient of sum_r g[r] logps[r] with respect to the logits, from the forward's lse:
// g[r] (1{v = targets[r]} - e^(logits[r, v] - lse[r])); a target outside [0, V) adds no 1 (the
// logits are a block of the vocabulary's columns that does not hold it). As `dtype`: float32
// overwrites `logits` and returns it; bfloat16 is rounded once into a new tensor; other dtypes are
// cast from float32.
at::Tensor logp_gradient(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& lse,
                         const at::Tensor& g, at::ScalarType dtype);

}  // namespace dpo
