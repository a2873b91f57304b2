// Collation: the chosen and rejected rows of a batch of pairs, right-padded, for one forward.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "dpo/data/preference_data.h"

namespace dpo {

// Rows 0..B-1 are prompt+chosen of the pairs in order, rows B..2B-1 prompt+rejected, then, for
// ranked examples, one row per response ranked below rejected (more_rows says which). Padding is on
// the right, so with a causal model no attention mask is needed: a real token never sees padding.
struct PairBatch {
  at::Tensor input_ids;      // [2B + extra rows, T] int64, padded with 0
  at::Tensor response_mask;  // [rows, T] bool: true where the token is a response token (scored)
  int64_t num_pairs = 0;     // B
  // [B, M] int64, M the most more_rejected responses of a pair in the batch (M = 0: pairs only):
  // the row of pair b's m-th more_rejected response, -1 where it has fewer.
  at::Tensor more_rows;
  int64_t more_columns() const { return more_rows.defined() ? more_rows.size(1) : 0; }
  std::vector<int64_t> example_indices;  // dataset indices of the B pairs
};

PairBatch collate_pairs(const PreferenceDataset& dataset, const std::vector<int64_t>& indices);

// Prompt+chosen rows only (for SFT / NLL).
PairBatch collate_chosen(const PreferenceDataset& dataset, const std::vector<int64_t>& indices);

}  // namespace dpo
