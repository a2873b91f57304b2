// Collation: the chosen and rejected responses of a batch of pairs as rows for one forward, either
// one right-padded row per response or, with prefix sharing, each pair's prompt once with its
// responses after it, several pairs packed per row.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "dpo/data/preference_data.h"
#include "dpo/data/token_layout.h"

namespace dpo {

// The responses of a batch are its sequences, in this order: the B chosen responses of the pairs
// in order, the B rejected ones, then, for ranked examples, each response ranked below rejected
// (more_rows says which).
enum class PairLayout {
  // Row s is prompt + response of sequence s, right-padded: with a causal model no attention mask
  // is needed, as a real token never sees padding.
  Padded,
  // Each pair is one packed sequence, prompt + chosen + rejected (+ more), with a TokenLayout
  // that lets every response see the prompt and itself only (train.prefix_sharing): the prompt is
  // computed once instead of once per response. Pairs are packed into rows as long as the longest
  // pair (first fit, longest first), each its own document, so rows carry little padding.
  SharedPrefix,
};

struct PairBatch {
  at::Tensor input_ids;      // [rows, T] int64, padded with 0
  // Padded: [rows, T] bool, true where the token is a response token (scored when t >= 1).
  // SharedPrefix: undefined (the scored tokens below say what is scored).
  at::Tensor response_mask;
  TokenLayout layout;        // SharedPrefix; undefined for Padded
  // The scored tokens, grouped by sequence in sequence order, each token's group in order:
  // the flat index row * T + t of the position whose hidden state predicts it, its id, and its
  // sequence. Undefined in a hand-made batch: then derived from response_mask (Padded).
  at::Tensor scored_source, scored_target, scored_sequence;  // [S] int64
  int64_t num_pairs = 0;     // B
  // [B, M] int64, M the most more_rejected responses of a pair in the batch (M = 0: pairs only):
  // the sequence (Padded: the row) of pair b's m-th more_rejected response, -1 where it has fewer.
  at::Tensor more_rows;
  int64_t more_columns() const { return more_rows.defined() ? more_rows.size(1) : 0; }
  std::vector<int64_t> example_indices;  // dataset indices of the B pairs
  int64_t sequences() const { return 2 * num_pairs + (more_rows.defined() ? more_rows.ge(0).sum().item<int64_t>() : 0); }
  int64_t padded_tokens = 0;  // padding slots of input_ids
};

PairBatch collate_pairs(const PreferenceDataset& dataset, const std::vector<int64_t>& indices,
                        PairLayout layout = PairLayout::Padded);
// The layout train.prefix_sharing asks for.
inline PairLayout pair_layout_of(const TrainOptions& train) {
  return train.prefix_sharing ? PairLayout::SharedPrefix : PairLayout::Padded;
}

// Prompt+chosen rows only (for SFT / NLL).
PairBatch collate_chosen(const PreferenceDataset& dataset, const std::vector<int64_t>& indices);

}  // namespace dpo
