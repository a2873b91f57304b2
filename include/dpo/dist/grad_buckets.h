// Flat gradient buckets (the PyTorch DDP reducer's layout): the gradients of the parameters that
// require grad live in a few flat tensors, filled in REVERSE parameter order (backward produces
// the last layers' gradients first), so summing gradients across ranks is one collective per
// bucket, issued in the same order on every rank. Each parameter's .grad is a view into its
// bucket (unless user code assigned it a tensor: see restore_views); a parameter is never split
// across buckets. Owns neither the parameters nor the optimizer; does not scale (the loss is
// already divided by the global batch, so a SUM across ranks gives the global mean gradient).
//
// Call order in the trainer, per optimizer step:
//   buckets.zero();                       // or zero_grad_in_place(optimizer)
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

  // Zeroes every bucket in place (the grads stay views). A step starts with it on one rank too,
  // where nothing is reduced: handing autograd's own gradient tensors to the parameters instead
  // (grads set to none) saves a zero fill and an add over every gradient, but those tensors are
  // fresh heap blocks every step, and on the AMD Zen 5 VMs measured (THP heap) the whole step
  // then ran 10-15% slower at `dpo bench`'s shape c (forward, backward and the optimizer's pass
  // alike), where kept buckets are memory the process touched once.
  void zero();

  // Arms the backward hooks for this backward only: as each bucket's last gradient is
  // accumulated, its reduction starts (non-blocking), strictly in bucket order. Does nothing when
  // the communicator cannot overlap (single process, MPI unless overlap is enabled) or overlap is off.
  void prepare_for_backward(Communicator& communicator);
  // Sums every bucket across ranks, in bucket order: waits for those started during backward and
  // reduces the rest. First restores any grad that autograd replaced (copying it into its view).
  // A world of one rank reduces nothing; it only restores.
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
