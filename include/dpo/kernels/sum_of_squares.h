// The sum of a float32 CPU tensor's squared elements, in float64, in one pass: gradient clipping's
// global norm over every gradient of a step.
//
// libtorch 1.13's linalg_vector_norm reduces a float32 tensor in float32: over GPT-2 small's 124 M
// gradients its norm came out 0.17% below the float64 sum (6e-5 over 3 M elements), in 19-27 ms
// on 2 Zen 5 cores; BLAS sdot is float32 as well, and a float32 sum of squares can overflow.
// Here the squares are summed in float64 lanes (15-18 ms there), block by block of fixed size,
// and the blocks' sums added in order: the result does not depend on the number of threads.
#pragma once

#include <ATen/ATen.h>

namespace dpo {

// Whether sum_of_squares takes t: float32, on the CPU, contiguous.
bool takes_sum_of_squares(const at::Tensor& t);

// sum_i t_i^2 in float64 (NaN if any element is NaN, inf if any is infinite).
double sum_of_squares(const at::Tensor& t);

}  // namespace dpo
