// Flat gradient buckets (the PyTorch DDP reducer's layout): the gradients of the parameters that
// require grad live in a few flat tensors, filled in REVERSE parameter order (backward produces
// the last layers' gradients first), so summing gradients across ranks is one collective per
// bucket, issued in the same order on every rank. Each parameter's .grad is a view into its
// bucket (except on one rank after start_step: see there); a parameter is never split across
// buckets. Owns neither the parameters nor the optimizer; does not scale (the loss is already
// divided by the global batch, so a SUM across ranks gives the global mean gradient).
//
// Call order in the trainer, per optimizer step:
//   buckets.start_step(communicator);     // or zero(), or zero_grad_in_place(optimizer)
//   for each micro-batch:
//     if (last micro-batch) buckets.prepare_for_backward(communicator);  // arms overlap, if on
//     loss.backward();
//   buckets.all_reduce_sum(communicator);  // launches what backward did not, waits for all
//   clip, optimizer.step();
// Every rank must make these calls in the same order, also for steps it later skips.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "dpo/dist/dist.h"

namespace dpo {

struct BucketLimits {
  int64_t first_bucket_bytes = int64_t{1} << 20;  // small, so the first collective starts early
  int64_t bucket_bytes = int64_t{25} << 20;       // dist.bucket_mb
};

class GradientBuckets {
 public:
  // `parameters` in the model's order (model->parameters()); those not requiring grad are left
  // alone. `names`, if given (same length), name parameters in error messages.
  GradientBuckets(std::vector<at::Tensor> parameters, BucketLimits limits,
                  std::vector<std::string> names = {});
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  size_t bucket_count() const;
  const at::Tensor& bucket(size_t index) const;
  // Indices into `parameters` of the bucket's members, in the order they sit in the bucket.
  const std::vector<size_t>& bucket_members(size_t index) const;

  // Zeroes every bucket in place (the grads stay views).
  void zero();
  // Starts a step's accumulation. Across ranks: zero(), so that the gradients accumulate in their
  // buckets with no second copy of them. On one rank, where nothing is reduced, no zeroing either:
  // every bucketed grad is set to none, so the step's first backward hands autograd's own gradient
  // tensors to the parameters (AccumulateGrad takes them over) and later micro-batches add into
  // those. That saves a zero fill and an add over every gradient: ~3.5% of a bf16-mixed step of
  // `dpo bench`'s shape c.
  void start_step(const Communicator& communicator);

  // Arms the backward hooks for this backward only: as each bucket's last gradient is
  // accumulated, its reduction starts (non-blocking), strictly in bucket order. Does nothing when
  // the communicator cannot overlap (single process, MPI unless overlap is enabled) or overlap is off.
  void prepare_for_backward(Communicator& communicator);
  // Sums every bucket across ranks, in bucket order: waits for those started during backward and
  // reduces the rest. First restores any grad that autograd replaced (copying it into its view).
  // A world of one rank reduces nothing: only a parameter whose grad is none gets its (zeroed)
  // view back, the others keep the tensors backward left them.
  void all_reduce_sum(Communicator& communicator);

  // Makes every parameter's grad a view into its bucket again, copying a grad that autograd
  // replaced into the view; returns how many had to be restored.
  int64_t restore_views();

  // On by default for CUDA buckets (NCCL reduces on a side stream while backward computes); off
  // by default on CPU, so prepare_for_backward is a no-op there: on 2 ranks sharing 2 cores (the only
  // machine measured) starting buckets during backward shortened the wait after backward but not
  // the step (Open MPI progresses MPI_Iallreduce only inside MPI calls, and no core was idle to
  // do the copies). Worth measuring again on real nodes with spare cores or a network.
  void set_overlap(bool enabled);
  // Buckets whose reduction was started during the last backward (tests, logging).
  int64_t buckets_started_in_backward() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace dpo
