// The per-pair log-probs of a set of examples that the ranks score in parts, gathered onto every
// rank in one fixed order: what the losses that read a whole batch at once (aot's sorts, the eval
// set's totals) are computed from, so that N ranks give exactly what 1 rank gives.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "dpo/loss/loss.h"

namespace dpo {

class Communicator;

class GatheredLogps {
 public:
  // `order`: the example indices of the set, in the order the gathered tensors follow;
  // `more_columns`: the most responses ranked below rejected of an example (0 for pairs).
  explicit GatheredLogps(const std::vector<int64_t>& order, int64_t more_columns = 0);

  // This rank's values of examples `indices` (each in `order`); `reference` null: none.
  void add(const std::vector<int64_t>& indices, const PairLogps& policy, const PairLogps* reference);
  // Every rank's values, summed across ranks (each example is added by exactly one rank), as
  // float64 [N] tensors on the CPU ([N, M] for the more_rejected fields when M > 0); the reference
  // fields are undefined when `with_reference` is false.
  PreferenceLogps all_reduce(Communicator& communicator, bool with_reference) const;
  // Positions in `order` of examples `indices`, as an int64 tensor.
  at::Tensor positions(const std::vector<int64_t>& indices) const;
  int64_t size() const { return static_cast<int64_t>(position_.size()); }

 private:
  std::unordered_map<int64_t, int64_t> position_;
  std::vector<double> values_;  // kFields columns of N
  int64_t more_columns_ = 0;
  std::vector<double> more_;    // kMoreFields blocks of [N, M]
};

}  // namespace dpo
