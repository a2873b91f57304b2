#include "dpo/data/batch_plan.h"

#include <algorithm>
#include <utility>

#include "dpo/data/splitmix64.h"
#include "dpo/error.h"

namespace dpo {
namespace {

// The splitmix64 stream keyed by (seed, epoch): draw k is mix64(key + (k+1) * golden gamma).
class EpochGenerator {
 public:
  EpochGenerator(uint64_t seed, uint64_t epoch) : state_(mix64(seed) ^ mix64(epoch + 0x632BE59BD9B4E019ULL)) {}

  uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    return mix64(state_);
  }

  // Uniform on [0, bound), bound >= 1, without modulo bias: draws below 2^64 mod bound are
  // rejected so that every residue has the same number of preimages.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;  // == 2^64 mod bound
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

}  // namespace

BatchPlan::BatchPlan(int64_t num_examples, int64_t global_batch_size, int64_t micro_batch_size,
                     int64_t world_size, uint64_t seed, bool shuffle)
    : num_examples_(num_examples),
      global_batch_size_(global_batch_size),
      micro_batch_size_(micro_batch_size),
      world_size_(world_size),
      accumulation_steps_(0),
      seed_(seed),
      shuffle_(shuffle) {
  if (num_examples <= 0) fail("data.train: the training data has no examples to plan batches over");
  if (global_batch_size <= 0) fail("train.global_batch_size must be positive, got {}", global_batch_size);
  if (micro_batch_size <= 0) fail("train.micro_batch_size must be positive, got {}", micro_batch_size);
  if (world_size <= 0) fail("world size must be positive, got {}", world_size);
  // Also keeps steps_per_epoch's num_examples + global_batch_size - 1 from overflowing.
  if (global_batch_size > num_examples)
    fail("train.global_batch_size ({}) is larger than the training data ({} pairs after truncation): not one "
         "optimizer step's batch; lower train.global_batch_size",
         global_batch_size, num_examples);
  int64_t per_accumulation_step = 0;
  if (__builtin_mul_overflow(micro_batch_size, world_size, &per_accumulation_step) ||
      global_batch_size % per_accumulation_step != 0)
    fail("train.global_batch_size ({}) must equal train.micro_batch_size ({}) x accumulation steps x world size "
         "({}): {} is not a multiple of {}",
         global_batch_size, micro_batch_size, world_size, global_batch_size, per_accumulation_step);
  accumulation_steps_ = global_batch_size / per_accumulation_step;
}

int64_t BatchPlan::steps_per_epoch() const { return (num_examples_ + global_batch_size_ - 1) / global_batch_size_; }

std::vector<int64_t> BatchPlan::epoch_order(int64_t epoch) const {
  if (epoch < 0) fail("batch plan: epoch {} is negative", epoch);
  std::vector<int64_t> order(static_cast<size_t>(num_examples_));
  for (int64_t i = 0; i < num_examples_; ++i) order[static_cast<size_t>(i)] = i;
  if (!shuffle_) return order;
  // Fisher-Yates (Durstenfeld): position i swaps with a uniform position in [0, i].
  EpochGenerator generator(seed_, static_cast<uint64_t>(epoch));
  for (int64_t i = num_examples_ - 1; i > 0; --i) {
    const auto j = static_cast<size_t>(generator.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[j]);
  }
  return order;
}

std::vector<int64_t> BatchPlan::global_batch(int64_t epoch, int64_t step_in_epoch) const {
  if (step_in_epoch < 0 || step_in_epoch >= steps_per_epoch())
    fail("batch plan: step {} of epoch {} is outside [0, {}) ({} examples, train.global_batch_size {})",
         step_in_epoch, epoch, steps_per_epoch(), num_examples_, global_batch_size_);
  if (cached_order_.empty() || cached_epoch_ != epoch) {  // empty: nothing cached yet
    cached_order_ = epoch_order(epoch);
    cached_epoch_ = epoch;
  }
  const std::vector<int64_t>& order = cached_order_;
  const int64_t begin = step_in_epoch * global_batch_size_;
  const int64_t end = std::min(begin + global_batch_size_, num_examples_);
  return std::vector<int64_t>(order.begin() + begin, order.begin() + end);
}

std::vector<std::vector<int64_t>> BatchPlan::rank_micro_batches(int64_t epoch, int64_t step_in_epoch,
                                                                int64_t rank) const {
  if (rank < 0 || rank >= world_size_) fail("batch plan: rank {} is outside [0, {})", rank, world_size_);
  const std::vector<int64_t> batch = global_batch(epoch, step_in_epoch);
  // A fixed column of the global batch per rank (llm.c's layout): the split does not depend on
  // anything but the batch, its position and the world size.
  std::vector<int64_t> share;
  for (size_t position = static_cast<size_t>(rank); position < batch.size();
       position += static_cast<size_t>(world_size_))
    share.push_back(batch[position]);
  std::vector<std::vector<int64_t>> micro_batches(static_cast<size_t>(accumulation_steps_));
  for (size_t i = 0; i < share.size(); ++i)
    micro_batches[i / static_cast<size_t>(micro_batch_size_)].push_back(share[i]);
  return micro_batches;
}

std::vector<std::vector<int64_t>> rank_eval_batches(int64_t num_examples, int64_t batch_size, int64_t rank,
                                                    int64_t world_size) {
  if (batch_size < 1) fail("eval batch size must be at least 1, got {}", batch_size);
  std::vector<std::vector<int64_t>> batches;
  for (int64_t i = rank, k = 0; i < num_examples; i += world_size, ++k) {
    if (k % batch_size == 0) batches.emplace_back();
    batches.back().push_back(i);
  }
  return batches;
}

std::vector<std::vector<int64_t>> group_by_length(const std::vector<std::vector<int64_t>>& micro_batches,
                                                  const std::function<int64_t(int64_t)>& length_of) {
  std::vector<std::pair<int64_t, int64_t>> by_length;  // (length, index)
  for (const auto& micro_batch : micro_batches)
    for (const int64_t index : micro_batch) by_length.emplace_back(length_of(index), index);
  std::stable_sort(by_length.begin(), by_length.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::vector<int64_t>> out;
  size_t next = 0;
  for (const auto& micro_batch : micro_batches) {
    out.emplace_back();
    for (size_t i = 0; i < micro_batch.size(); ++i) out.back().push_back(by_length[next++].second);
  }
  return out;
}

}  // namespace dpo
