// Collation: the chosen and rejected rows of a batch of pairs, right-padded, for one forward.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "dpo/data/preference_data.h"

namespace dpo {

// Rows 0..B-1 are prompt+chosen of the pairs in order, rows B..2B-1 prompt+rejected. Padding is on
// the right, so with a causal model no attention mask is needed: a real token never sees padding.
struct PairBatch {
  at::Tensor input_ids;      // [2B, T] int64, padded with 0
  at::Tensor response_mask;  // [2B, T] bool: true where the token is a response token (scored)
  int64_t num_pairs = 0;     // B
  std::vector<int64_t> example_indices;  // dataset indices of the B pairs
};

PairBatch collate_pairs(const PreferenceDataset& dataset, const std::vector<int64_t>& indices);

// Prompt+chosen rows only (for SFT / NLL).
PairBatch collate_chosen(const PreferenceDataset& dataset, const std::vector<int64_t>& indices);

}  // namespace dpo
