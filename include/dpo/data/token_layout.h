// Where each token of a batch of rows sits in its sequence and what it may attend to, for rows
// that hold more than one causal sequence: prefix sharing (a pair's prompt once, its responses
// after it as branches) and padding-free packing (several pairs in one row).
#pragma once
#include <ATen/ATen.h>

namespace dpo {

// Token j of a row is visible to token i of the same row when j <= i, both belong to the same
// document, and j is on the shared trunk (branch 0) or on i's own branch. A pair packed as
// prompt (branch 0), chosen (1), rejected (2), ... is thus prompt+chosen and prompt+rejected as two
// causal sequences, computed with the prompt once. Positions restart at the prompt's length on
// each branch. Right padding is a document of its own (-1): it sees itself, so no softmax row is
// empty, and no real token sees it. Undefined tensors: the plain causal layout (positions 0..T-1,
// one document per row).
struct TokenLayout {
  at::Tensor positions;  // [rows, T] int64
  at::Tensor documents;  // [rows, T] int64
  at::Tensor branches;   // [rows, T] int64
  bool defined() const { return positions.defined(); }
};

// [rows, T, T] bool: token i of a row may attend to token j (TokenLayout's rule).
inline at::Tensor attention_allowed(const TokenLayout& layout) {
  const at::Tensor& doc = layout.documents;
  const at::Tensor& branch = layout.branches;
  const int64_t T = doc.size(1);
  const at::Tensor causal = at::ones({T, T}, doc.options().dtype(at::kBool)).tril();
  const at::Tensor same_document = doc.unsqueeze(2).eq(doc.unsqueeze(1));
  const at::Tensor on_path = branch.unsqueeze(1).eq(0) | branch.unsqueeze(2).eq(branch.unsqueeze(1));
  return causal.unsqueeze(0) & same_document & on_path;
}

}  // namespace dpo
