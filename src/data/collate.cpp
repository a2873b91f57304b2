// Collation of preference pairs into right-padded rows for one causal-LM forward.
#include <algorithm>

#include "dpo/data/collate.h"
#include "dpo/error.h"

namespace dpo {
namespace {

// Rows are (prompt, response) spans; row r of the batch is prompt + response, padded with 0.
PairBatch collate_rows(const PreferenceDataset& dataset, const std::vector<int64_t>& indices, bool with_rejected) {
  const auto batch = static_cast<int64_t>(indices.size());
  for (const int64_t index : indices) {
    if (index < 0 || index >= static_cast<int64_t>(dataset.size())) {
      fail("{}: example index {} is out of range (dataset has {} examples)", dataset.path(), index, dataset.size());
    }
  }
  const int64_t rows = with_rejected ? 2 * batch : batch;
  const auto row = [&](int64_t r) -> std::pair<const TokenIds*, const TokenIds*> {
    const RawPreferencePair& pair = dataset[static_cast<size_t>(indices[static_cast<size_t>(r % batch)])];
    return {&pair.prompt, r < batch ? &pair.chosen : &pair.rejected};
  };
  int64_t width = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto [prompt, response] = row(r);
    width = std::max<int64_t>(width, static_cast<int64_t>(prompt->size() + response->size()));
  }

  PairBatch out;
  out.num_pairs = batch;
  out.example_indices = indices;
  out.input_ids = at::zeros({rows, width}, at::kLong);
  out.response_mask = at::zeros({rows, width}, at::kBool);
  int64_t* ids = out.input_ids.data_ptr<int64_t>();
  bool* mask = out.response_mask.data_ptr<bool>();
  for (int64_t r = 0; r < rows; ++r) {
    const auto [prompt, response] = row(r);
    int64_t* ids_row = ids + r * width;
    std::copy(prompt->begin(), prompt->end(), ids_row);
    std::copy(response->begin(), response->end(), ids_row + prompt->size());
    std::fill_n(mask + r * width + prompt->size(), response->size(), true);
  }
  return out;
}

}  // namespace

PairBatch collate_pairs(const PreferenceDataset& dataset, const std::vector<int64_t>& indices) {
  return collate_rows(dataset, indices, true);
}

PairBatch collate_chosen(const PreferenceDataset& dataset, const std::vector<int64_t>& indices) {
  return collate_rows(dataset, indices, false);
}

}  // namespace dpo
