// RMSprop's update of one float32 CPU tensor in one pass over its memory.
//
// libtorch's RMSprop (as torch.optim's single-tensor path) makes five passes per tensor: mul_ and
// addcmul_ on the square average, sqrt and add_ into a new tensor of the parameter's size, then
// addcdiv_; about 13 reads and writes of every parameter's 4 bytes. Here each element's parameter,
// gradient and square average are read once and two of them written once: 5. The update is
// memory-bound (124M parameters: 2.5 GB moved instead of 6.5 GB each step).
#pragma once

#include <ATen/ATen.h>

namespace dpo {

// Whether rmsprop_update takes these: float32 CPU tensors of one shape, contiguous.
bool takes_rmsprop_update(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& square_avg);

// torch.optim.RMSprop's step without momentum, not centered, elementwise in float32:
//   g' = g + weight_decay p;  s = alpha s + (1 - alpha) g'^2;  p = p - lr g' / (sqrt(s) + eps)
// (param and square_avg in place; grad unchanged). Equal to libtorch's RMSprop to float32
// rounding (the compiler may fuse a multiply and an add).
void rmsprop_update(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& square_avg, double lr,
                    double alpha, double eps, double weight_decay);

}  // namespace dpo
