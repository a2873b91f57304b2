// Optimizers (rmsprop, the paper's; adamw; sgd) and the learning-rate schedule (linear warm-up,
// then constant as in the paper, or transformers' linear, cosine and cosine_with_min_lr decay).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <torch/optim/optimizer.h>

#include "dpo/config/config.h"

namespace dpo {

// torch's defaults for the rest (RMSprop alpha 0.99 eps 1e-8), with train.lr, train.weight_decay
// (not on biases and norm weights, as HF Trainer) and AdamW's train.adam_beta1/2 and adam_epsilon.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options, std::vector<at::Tensor> parameters);

// The warm-up steps of a run of `total_steps`: train.warmup_ratio's share when set, else train.warmup_steps.
int64_t warmup_steps(const TrainOptions& options, int64_t total_steps);

// The learning rate of optimizer step `step` (0-based) out of `total_steps`.
double learning_rate(const TrainOptions& options, int64_t step, int64_t total_steps);
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// Zeroes every gradient in place, keeping its tensor (and so a gradient bucket's memory). The one
// place that knows libtorch's zero_grad() semantics: 1.13 zeroes in place, 2.x sets gradients
// to undefined by default, after which autograd would accumulate into fresh tensors.
void zero_grad_in_place(torch::optim::Optimizer& optimizer);

// Scales gradients so that their global L2 norm is at most max_norm; returns the norm before
// clipping (what TRL logs as grad_norm). Called after gradients are averaged across ranks, so
// every rank sees the same, global norm.
double clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm);

}  // namespace dpo
