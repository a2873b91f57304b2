// The sum of a float32 CPU tensor's squared elements, in float64, in one pass: gradient clipping's
// global norm over every gradient of a step.
//
// libtorch's linalg_vector_norm reduced each gradient in float32 at ~23 GB/s here (22-26 ms over
// GPT-2 small's 124 M gradients) and a float32 sum of squares can overflow; BLAS sdot is float32
// and came out 0.15% off over the same gradients. Here the squares are summed in float64 lanes,
// block by block of fixed size, and the blocks' sums added in order: the result does not depend
// on the number of threads.
#pragma once

#include <ATen/ATen.h>

namespace dpo {

// Whether sum_of_squares takes t: float32, on the CPU, contiguous.
bool takes_sum_of_squares(const at::Tensor& t);

// sum_i t_i^2 in float64 (NaN if any element is NaN, inf if any is infinite).
double sum_of_squares(const at::Tensor& t);

}  // namespace dpo
