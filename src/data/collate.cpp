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
  const auto pair_at = [&](int64_t b) -> const RawPreferencePair& {
    return dataset[static_cast<size_t>(indices[static_cast<size_t>(b)])];
  };
  // Each row's (prompt, response): chosen rows, rejected rows, then the more_rejected responses.
  std::vector<std::pair<const TokenIds*, const TokenIds*>> spans;
  for (int64_t b = 0; b < batch; ++b) spans.emplace_back(&pair_at(b).prompt, &pair_at(b).chosen);
  int64_t most_more = 0;
  if (with_rejected) {
    for (int64_t b = 0; b < batch; ++b) spans.emplace_back(&pair_at(b).prompt, &pair_at(b).rejected);
    for (int64_t b = 0; b < batch; ++b) most_more = std::max<int64_t>(most_more, static_cast<int64_t>(pair_at(b).more_rejected.size()));
  }
  at::Tensor more_rows = at::full({batch, most_more}, -1, at::kLong);
  for (int64_t b = 0; b < batch && most_more > 0; ++b) {
    const RawPreferencePair& pair = pair_at(b);
    for (size_t m = 0; m < pair.more_rejected.size(); ++m) {
      more_rows[b][static_cast<int64_t>(m)] = static_cast<int64_t>(spans.size());
      spans.emplace_back(&pair.prompt, &pair.more_rejected[m]);
    }
  }
  const auto rows = static_cast<int64_t>(spans.size());
  const auto row = [&](int64_t r) { return spans[static_cast<size_t>(r)]; };
  int64_t width = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto [prompt, response] = row(r);
    width = std::max<int64_t>(width, static_cast<int64_t>(prompt->size() + response->size()));
  }

  PairBatch out;
  out.num_pairs = batch;
  out.more_rows = more_rows;
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
