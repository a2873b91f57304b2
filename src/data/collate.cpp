// Collation of preference pairs into rows for one causal-LM forward: right-padded rows, one per
// response, or each pair's prompt shared by its responses, pairs packed into rows.
#include <algorithm>
#include <numeric>

#include "dpo/data/collate.h"
#include "dpo/error.h"

namespace dpo {
namespace {

// The sequences of a batch in PairBatch's order, each a (prompt, response), and more_rows.
struct BatchSequences {
  std::vector<const RawPreferencePair*> pairs;
  std::vector<std::pair<const TokenIds*, const TokenIds*>> spans;
  std::vector<int64_t> pair_of;  // the local pair index of each sequence
  at::Tensor more_rows;
};

BatchSequences batch_sequences(const PreferenceDataset& dataset, const std::vector<int64_t>& indices, bool with_rejected) {
  BatchSequences out;
  for (const int64_t index : indices) {
    if (index < 0 || index >= static_cast<int64_t>(dataset.size())) {
      fail("{}: example index {} is out of range (dataset has {} examples)", dataset.path(), index, dataset.size());
    }
    out.pairs.push_back(&dataset[static_cast<size_t>(index)]);
  }
  const auto batch = static_cast<int64_t>(indices.size());
  const auto add = [&](int64_t b, const TokenIds& response) {
    out.spans.emplace_back(&out.pairs[static_cast<size_t>(b)]->prompt, &response);
    out.pair_of.push_back(b);
  };
  for (int64_t b = 0; b < batch; ++b) add(b, out.pairs[static_cast<size_t>(b)]->chosen);
  int64_t most_more = 0;
  if (with_rejected) {
    for (int64_t b = 0; b < batch; ++b) add(b, out.pairs[static_cast<size_t>(b)]->rejected);
    for (const RawPreferencePair* pair : out.pairs) most_more = std::max<int64_t>(most_more, static_cast<int64_t>(pair->more_rejected.size()));
  }
  out.more_rows = at::full({batch, most_more}, -1, at::kLong);
  for (int64_t b = 0; b < batch && most_more > 0; ++b) {
    const RawPreferencePair& pair = *out.pairs[static_cast<size_t>(b)];
    for (size_t m = 0; m < pair.more_rejected.size(); ++m) {
      out.more_rows[b][static_cast<int64_t>(m)] = static_cast<int64_t>(out.spans.size());
      add(b, pair.more_rejected[m]);
    }
  }
  return out;
}

// The scored tokens as PairBatch lists; `predictor(s, j)` is the flat index of the position that
// predicts token j of sequence s's response, -1 when none does (a first token with no prompt).
struct ScoredTokens {
  std::vector<int64_t> source, target, sequence;
  void to(PairBatch& batch) const {
    const auto tensor = [](const std::vector<int64_t>& v) { return at::tensor(at::ArrayRef<int64_t>(v), at::kLong); };
    batch.scored_source = tensor(source);
    batch.scored_target = tensor(target);
    batch.scored_sequence = tensor(sequence);
  }
};

template <typename Predictor>
ScoredTokens scored_tokens(const BatchSequences& seqs, Predictor predictor) {
  ScoredTokens out;
  for (size_t s = 0; s < seqs.spans.size(); ++s) {
    const TokenIds& response = *seqs.spans[s].second;
    for (size_t j = 0; j < response.size(); ++j) {
      const int64_t from = predictor(s, static_cast<int64_t>(j));
      if (from < 0) continue;
      out.source.push_back(from);
      out.target.push_back(response[j]);
      out.sequence.push_back(static_cast<int64_t>(s));
    }
  }
  return out;
}

PairBatch padded_batch(const BatchSequences& seqs, const std::vector<int64_t>& indices) {
  const auto rows = static_cast<int64_t>(seqs.spans.size());
  int64_t width = 0, real = 0;
  for (const auto& [prompt, response] : seqs.spans) {
    width = std::max<int64_t>(width, static_cast<int64_t>(prompt->size() + response->size()));
    real += static_cast<int64_t>(prompt->size() + response->size());
  }
  PairBatch out;
  out.num_pairs = static_cast<int64_t>(indices.size());
  out.more_rows = seqs.more_rows;
  out.example_indices = indices;
  out.input_ids = at::zeros({rows, width}, at::kLong);
  out.response_mask = at::zeros({rows, width}, at::kBool);
  out.padded_tokens = rows * width - real;
  int64_t* ids = out.input_ids.data_ptr<int64_t>();
  bool* mask = out.response_mask.data_ptr<bool>();
  for (int64_t r = 0; r < rows; ++r) {
    const auto [prompt, response] = seqs.spans[static_cast<size_t>(r)];
    int64_t* ids_row = ids + r * width;
    std::copy(prompt->begin(), prompt->end(), ids_row);
    std::copy(response->begin(), response->end(), ids_row + prompt->size());
    std::fill_n(mask + r * width + prompt->size(), response->size(), true);
  }
  // Token t of row r (t >= 1) is predicted at t - 1.
  scored_tokens(seqs, [&](size_t s, int64_t j) {
    const auto t = static_cast<int64_t>(seqs.spans[s].first->size()) + j;
    return t >= 1 ? static_cast<int64_t>(s) * width + t - 1 : -1;
  }).to(out);
  return out;
}

PairBatch shared_prefix_batch(const BatchSequences& seqs, const std::vector<int64_t>& indices) {
  const auto pairs = static_cast<int64_t>(indices.size());
  std::vector<int64_t> length;
  for (const RawPreferencePair* pair : seqs.pairs) length.push_back(pair->shared_prefix_length());
  const int64_t width = pairs == 0 ? 0 : *std::max_element(length.begin(), length.end());
  // First fit, longest first: a pair goes into the first row with room for it.
  std::vector<int64_t> order(static_cast<size_t>(pairs));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return length[static_cast<size_t>(a)] > length[static_cast<size_t>(b)]; });
  std::vector<int64_t> used;                                     // tokens taken per row
  std::vector<int64_t> row_of(static_cast<size_t>(pairs)), start_of(static_cast<size_t>(pairs));
  for (const int64_t b : order) {
    const int64_t need = length[static_cast<size_t>(b)];
    size_t r = 0;
    while (r < used.size() && used[r] + need > width) ++r;
    if (r == used.size()) used.push_back(0);
    row_of[static_cast<size_t>(b)] = static_cast<int64_t>(r);
    start_of[static_cast<size_t>(b)] = used[r];
    used[r] += need;
  }
  const auto rows = static_cast<int64_t>(used.size());

  PairBatch out;
  out.num_pairs = pairs;
  out.more_rows = seqs.more_rows;
  out.example_indices = indices;
  out.input_ids = at::zeros({rows, width}, at::kLong);
  out.layout.positions = at::zeros({rows, width}, at::kLong);
  out.layout.documents = at::full({rows, width}, -1, at::kLong);
  out.layout.branches = at::zeros({rows, width}, at::kLong);
  out.padded_tokens = rows * width - std::accumulate(length.begin(), length.end(), int64_t{0});
  int64_t* ids = out.input_ids.data_ptr<int64_t>();
  int64_t* position = out.layout.positions.data_ptr<int64_t>();
  int64_t* document = out.layout.documents.data_ptr<int64_t>();
  int64_t* branch = out.layout.branches.data_ptr<int64_t>();
  // Where each sequence's response starts (flat index); each pair's prompt's last position, next
  // free slot and responses so far.
  std::vector<int64_t> response_start(seqs.spans.size()), prompt_last(static_cast<size_t>(pairs)),
      next(static_cast<size_t>(pairs)), responses(static_cast<size_t>(pairs), 0);
  for (int64_t b = 0; b < pairs; ++b) {
    const TokenIds& prompt = seqs.pairs[static_cast<size_t>(b)]->prompt;
    const int64_t at = row_of[static_cast<size_t>(b)] * width + start_of[static_cast<size_t>(b)];
    std::copy(prompt.begin(), prompt.end(), ids + at);
    for (int64_t t = 0; t < static_cast<int64_t>(prompt.size()); ++t) position[at + t] = t;
    std::fill_n(document + at, prompt.size(), b);
    prompt_last[static_cast<size_t>(b)] = prompt.empty() ? -1 : at + static_cast<int64_t>(prompt.size()) - 1;
    next[static_cast<size_t>(b)] = at + static_cast<int64_t>(prompt.size());
  }
  for (size_t s = 0; s < seqs.spans.size(); ++s) {
    const auto b = static_cast<size_t>(seqs.pair_of[s]);
    const auto prompt_length = static_cast<int64_t>(seqs.spans[s].first->size());
    const TokenIds& response = *seqs.spans[s].second;
    const int64_t at = next[b];
    response_start[s] = at;
    std::copy(response.begin(), response.end(), ids + at);
    for (int64_t j = 0; j < static_cast<int64_t>(response.size()); ++j) position[at + j] = prompt_length + j;
    std::fill_n(document + at, response.size(), seqs.pair_of[s]);
    // Branches 1, 2, 3, ...: the pair's chosen, rejected, then more_rejected responses.
    std::fill_n(branch + at, response.size(), ++responses[b]);
    next[b] = at + static_cast<int64_t>(response.size());
  }
  // A response's first token is predicted by the prompt's last position (none for an empty
  // prompt, as in the padded rows), the others by the response's own previous token.
  scored_tokens(seqs, [&](size_t s, int64_t j) {
    return j > 0 ? response_start[s] + j - 1 : prompt_last[static_cast<size_t>(seqs.pair_of[s])];
  }).to(out);
  return out;
}

}  // namespace

PairBatch collate_pairs(const PreferenceDataset& dataset, const std::vector<int64_t>& indices, PairLayout layout) {
  const BatchSequences seqs = batch_sequences(dataset, indices, true);
  return layout == PairLayout::SharedPrefix ? shared_prefix_batch(seqs, indices) : padded_batch(seqs, indices);
}

PairBatch collate_chosen(const PreferenceDataset& dataset, const std::vector<int64_t>& indices) {
  return padded_batch(batch_sequences(dataset, indices, false), indices);
}

}  // namespace dpo
