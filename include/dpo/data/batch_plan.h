// Which examples make up each optimizer step, and which of them each rank and micro-step takes:
// a pure function of (seed, epoch, step, rank), so that resuming, re-running and changing the
// number of ranks all see the same global batches.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace dpo {

// The batches in which rank `rank` of `world_size` scores a whole dataset once, in order, for
// evaluation: it takes examples rank, rank+W, rank+2W, ..., cut into batches of `batch_size`.
std::vector<std::vector<int64_t>> rank_eval_batches(int64_t num_examples, int64_t batch_size, int64_t rank,
                                                    int64_t world_size);

// The same examples in micro-batches of the same sizes, regrouped longest first (ties in order), so
// that each micro-batch holds examples of similar length and pads (or packs) little. The gradient
// of a step is a sum over its examples, so regrouping changes it only by float rounding.
std::vector<std::vector<int64_t>> group_by_length(const std::vector<std::vector<int64_t>>& micro_batches,
                                                  const std::function<int64_t(int64_t)>& length_of);

class BatchPlan {
 public:
  // Errors (naming the train.* keys) unless global_batch_size == micro_batch_size x accumulation x
  // world_size for a whole number of accumulation steps.
  BatchPlan(int64_t num_examples, int64_t global_batch_size, int64_t micro_batch_size, int64_t world_size,
            uint64_t seed, bool shuffle);

  int64_t num_examples() const { return num_examples_; }
  int64_t global_batch_size() const { return global_batch_size_; }
  int64_t accumulation_steps() const { return accumulation_steps_; }
  // ceil(num_examples / global_batch_size): a partial last batch is kept, never padded or repeated.
  int64_t steps_per_epoch() const;

  // A permutation of [0, num_examples) (the identity without shuffle). Deterministic across
  // platforms: our own Fisher-Yates over a counter-based generator, not std::shuffle.
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // The dataset indices of step `step_in_epoch` of `epoch` (all ranks together).
  std::vector<int64_t> global_batch(int64_t epoch, int64_t step_in_epoch) const;
  // This rank's share of that batch, cut into accumulation_steps() micro-batches. Rank r takes
  // positions r, r+W, r+2W, ... of the global batch; a partial batch leaves some micro-batches
  // short or empty, never with a pair counted twice.
  std::vector<std::vector<int64_t>> rank_micro_batches(int64_t epoch, int64_t step_in_epoch, int64_t rank) const;

 private:
  int64_t num_examples_, global_batch_size_, micro_batch_size_, world_size_, accumulation_steps_;
  uint64_t seed_;
  bool shuffle_;
  // epoch_order of the last epoch asked for: the loop asks every step, and shuffling is O(N).
  mutable int64_t cached_epoch_ = 0;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace dpo
