#include "dpo/loss/logps.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include <torch/autograd.h>

#include "dpo/error.h"
#include "dpo/loss/head_logps.h"

namespace dpo {
namespace {

// Elements of one float32 block of logits; bounds the temporaries of the cast and of logsumexp
// (128 MiB per temporary), so a reference pass under inference mode never holds a float32 copy of
// the whole [R, T-1, V] logits.
constexpr int64_t kBlockElements = int64_t{1} << 25;

}  // namespace

SequenceLogps sequence_logps(const at::Tensor& logits, const at::Tensor& input_ids,
                             const at::Tensor& response_mask) {
  if (logits.dim() != 3) fail("logits: expected [R, T, V], got {}", shape_text(logits.sizes()));
  if (input_ids.dim() != 2 || input_ids.size(0) != logits.size(0) || input_ids.size(1) != logits.size(1))
    fail("input_ids: expected [{}, {}] to match logits {}, got {}", logits.size(0), logits.size(1),
         shape_text(logits.sizes()), shape_text(input_ids.sizes()));
  if (response_mask.sizes() != input_ids.sizes())
    fail("response_mask: expected {} like input_ids, got {}", shape_text(input_ids.sizes()), shape_text(response_mask.sizes()));
  if (!at::isFloatingType(logits.scalar_type())) fail("logits: expected a floating dtype, got {}", std::string(logits.dtype().name()));

  const int64_t rows = logits.size(0), steps = logits.size(1), vocab = logits.size(2);
  // float32 at least: bfloat16's 8-bit mantissa would swamp sums over hundreds of tokens.
  const at::ScalarType compute = float_type_of(logits.scalar_type());
  const auto float_options = logits.options().dtype(compute);
  if (steps < 2 || rows == 0) {
    return {at::zeros({rows}, float_options), at::zeros({rows}, input_ids.options().dtype(at::kLong)), {}, {}};
  }

  // Position t of the logits predicts token t+1.
  const at::Tensor targets = input_ids.narrow(1, 1, steps - 1).to(logits.device(), at::kLong);
  const at::Tensor scored = response_mask.narrow(1, 1, steps - 1).to(logits.device(), at::kBool);
  if (vocab == 0 || (targets.lt(0) | targets.ge(vocab)).any().item<bool>())
    fail("input_ids: a token id is outside the vocabulary of the logits (size {})", vocab);

  // log p = logit[target] - logsumexp(logits), block by block over rows and positions.
  const int64_t positions = steps - 1;
  const int64_t block_positions = std::clamp<int64_t>(kBlockElements / std::max<int64_t>(vocab, 1), 1, positions);
  const int64_t block_rows = std::clamp<int64_t>(kBlockElements / (block_positions * vocab), 1, rows);
  std::vector<at::Tensor> row_blocks;
  for (int64_t r = 0; r < rows; r += block_rows) {
    const int64_t nr = std::min(block_rows, rows - r);
    std::vector<at::Tensor> position_blocks;
    for (int64_t t = 0; t < positions; t += block_positions) {
      const int64_t nt = std::min(block_positions, positions - t);
      const at::Tensor block = logits.narrow(0, r, nr).narrow(1, t, nt).to(compute);
      const at::Tensor target = targets.narrow(0, r, nr).narrow(1, t, nt).unsqueeze(-1);
      position_blocks.push_back(block.gather(-1, target).squeeze(-1) - at::logsumexp(block, -1));
    }
    row_blocks.push_back(at::cat(position_blocks, 1));
  }
  const at::Tensor token_logps = at::cat(row_blocks, 0);  // [R, T-1]

  // where, not multiply: a masked position's value must not leak in even if it is -inf or nan.
  const at::Tensor kept = at::where(scored, token_logps, at::zeros({}, float_options));
  return {kept.sum(1), scored.sum(1, /*keepdim=*/false, at::kLong), {}, {}};
}

namespace {

// log(1 - p) from log p <= 0, accurate at both ends (log1mexp); p is clipped below 1 - 1e-6 so that a
// token the model is certain of gives a large finite value rather than -inf.
at::Tensor log_one_minus_prob(const at::Tensor& logp) {
  const at::Tensor x = logp.clamp_max(std::log1p(-1e-6));
  return at::where(x.gt(-std::log(2.0)), at::log(-at::expm1(x)), at::log1p(-at::exp(x)));
}

// LD-DPO: whether each scored token counts fully in its sequence's sum, the lists being grouped by
// sequence in order (`counts` tokens per sequence): the first full_weight_tokens[s] of sequence s do.
at::Tensor ld_full_tokens(const at::Tensor& sequence, const at::Tensor& counts, const at::Tensor& full_weight_tokens) {
  const at::Tensor first = counts.cumsum(0) - counts;
  const at::Tensor rank = at::arange(sequence.numel(), sequence.options()) - first.index_select(0, sequence);
  return rank.lt(full_weight_tokens.to(sequence.device(), at::kLong).index_select(0, sequence));
}

// LD-DPO's full-weight counts of the 2P sequences of P pairs (chosen, then rejected): both responses
// of a pair count their first min(chosen, rejected) scored tokens fully.
at::Tensor ld_full_weight_tokens(const at::Tensor& counts, int64_t pairs) {
  const at::Tensor shared = at::minimum(counts.narrow(0, 0, pairs), counts.narrow(0, pairs, pairs));
  return at::cat({shared, shared});
}

// The head weight's .grad where head_logps_with_gradient can add the weight's gradient straight
// into it (the trainer's gradient bucket), else undefined.
at::Tensor head_gradient_sum(const at::Tensor& weight) {
  const bool into_grad = weight.is_leaf() && weight.requires_grad() && takes_weight_gradient_sum(weight, weight.grad());
  return into_grad ? weight.grad() : at::Tensor();
}

// The 2P sequences of P pairs (chosen, then rejected) as the pairs' values.
PairLogps pairs_of_sequences(const SequenceLogps& all, int64_t pairs) {
  const auto chosen = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, 0, pairs) : t; };
  const auto rejected = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, pairs, pairs) : t; };
  PairLogps out;
  out.chosen = chosen(all.logps);
  out.rejected = rejected(all.logps);
  out.chosen_tokens = chosen(all.token_counts);
  out.rejected_tokens = rejected(all.token_counts);
  out.rejected_unlikelihood = rejected(all.unlikelihood);
  out.chosen_weight_logps = chosen(all.weight_logps);
  out.rejected_weight_logps = rejected(all.weight_logps);
  return out;
}

// The extra per-row values of `scoring` from the scored tokens' log-probs (row-major order).
void add_scoring_extras(SequenceLogps& out, const ResponseScoring& scoring, const at::Tensor& token_logps,
                        const at::Tensor& row, const at::Tensor& rows_zero, const std::function<at::Tensor()>& log_sq) {
  if (scoring.unlikelihood) out.unlikelihood = rows_zero.index_add(0, row, log_one_minus_prob(token_logps));
  if (scoring.wpo_weights) {
    at::NoGradGuard no_grad;
    const at::Tensor aligned = token_logps.detach() - log_sq();
    out.weight_logps = rows_zero.index_add(0, row, aligned) / out.token_counts.to(aligned.scalar_type()).clamp_min(1);
  }
}

}  // namespace

namespace {

// input_ids [R, T] and a response mask of the same shape, else a one-line refusal.
void check_rows(const at::Tensor& input_ids, const at::Tensor& response_mask) {
  if (input_ids.dim() != 2) fail("input_ids: expected [R, T], got {}", shape_text(input_ids.sizes()));
  if (response_mask.sizes() != input_ids.sizes())
    fail("response_mask: expected {} like input_ids, got {}", shape_text(input_ids.sizes()), shape_text(response_mask.sizes()));
}

// Scored tokens inside the head's vocabulary, else a refusal naming the input.
void check_in_vocabulary(const at::Tensor& targets, int64_t vocab) {
  if (targets.numel() > 0 && (targets.lt(0) | targets.ge(vocab)).any().item<bool>())
    fail("input_ids: a token id is outside the vocabulary of the logits (size {})", vocab);
}

// The scored tokens of right-padded rows, as PairBatch's lists: token t of row r (t >= 1, in the
// response) is predicted by the hidden state at flat index r * T + t - 1; its sequence is r.
struct ScoredLists {
  at::Tensor source, target, sequence;
};
ScoredLists scored_lists_of_mask(const at::Tensor& input_ids, const at::Tensor& response_mask) {
  const int64_t steps = input_ids.size(1);
  const at::Tensor scored = response_mask.narrow(1, 1, steps - 1).to(at::kBool);
  const at::Tensor where = scored.nonzero();  // [S, 2]: (row, t-1), row-major
  const at::Tensor row = where.select(1, 0);
  const at::Tensor source = row * steps + where.select(1, 1);
  return {source, input_ids.to(at::kLong).reshape({-1}).index_select(0, source + 1), row};
}

// The scored tokens of a batch whose input_ids are on the model's device.
ScoredLists scored_lists_of_batch(const PairBatch& batch, const at::Tensor& input_ids) {
  const at::Device device = input_ids.device();
  return batch.scored_source.defined()
             ? ScoredLists{batch.scored_source.to(device), batch.scored_target.to(device), batch.scored_sequence.to(device)}
             : scored_lists_of_mask(input_ids, batch.response_mask.to(device));
}

// Log-probs summed per sequence over the scored tokens of `lists` (grouped by sequence, in order),
// from one forward of `model` over input_ids with `layout`.
SequenceLogps scored_sequence_logps(CausalLMImpl& model, const at::Tensor& input_ids, const TokenLayout& layout,
                                    const ScoredLists& lists, int64_t sequences, const ResponseScoring& scoring,
                                    const at::Tensor& full_weight_tokens) {
  // The scored positions' states only, [S, d] in the lists' order.
  const at::Tensor selected = model.hidden_states(input_ids, layout, lists.source);
  const auto float_options = selected.options().dtype(float_type_of(selected.scalar_type()));
  const at::Tensor sequences_zero = at::zeros({sequences}, float_options);
  const at::Tensor& sequence = lists.sequence;
  const at::Tensor token_counts = at::bincount(sequence, {}, sequences);
  check_in_vocabulary(lists.target, model.head_weight().size(0));
  const at::Tensor token_logps = head_token_logps(selected, model.head_weight(), lists.target, model.matmul_dtype());
  at::Tensor weighted = token_logps;
  if (scoring.ld_alpha != 1.0 && full_weight_tokens.defined())
    weighted = at::where(ld_full_tokens(sequence, token_counts, full_weight_tokens), token_logps,
                         token_logps * scoring.ld_alpha);
  SequenceLogps out{sequences_zero.index_add(0, sequence, weighted), token_counts, {}, {}};
  add_scoring_extras(out, scoring, token_logps, sequence, sequences_zero, [&] {
    return head_log_sum_squared_probs(selected.detach(), model.head_weight().detach(), model.matmul_dtype());
  });
  return out;
}

SequenceLogps no_scored_tokens(int64_t sequences, const at::TensorOptions& float_options, const at::Tensor& input_ids) {
  const at::Tensor zero = at::zeros({sequences}, float_options);
  return {zero, at::zeros({sequences}, input_ids.options().dtype(at::kLong)), zero, zero};
}

}  // namespace

SequenceLogps model_sequence_logps(CausalLMImpl& model, const at::Tensor& input_ids, const at::Tensor& response_mask,
                                   const ResponseScoring& scoring, const at::Tensor& full_weight_tokens) {
  check_rows(input_ids, response_mask);
  const int64_t rows = input_ids.size(0), steps = input_ids.size(1);
  if (steps < 2 || rows == 0) {
    const at::ScalarType weights = model.head_weight().scalar_type();
    return no_scored_tokens(rows, input_ids.options().dtype(float_type_of(weights)), input_ids);
  }
  return scored_sequence_logps(model, input_ids, {}, scored_lists_of_mask(input_ids, response_mask), rows, scoring,
                               full_weight_tokens);
}

PairLogps pair_logps(CausalLMImpl& model, const PairBatch& batch, const ResponseScoring& scoring) {
  const int64_t pairs = batch.num_pairs;
  const bool ranked = batch.more_rows.defined() && batch.more_rows.numel() > 0;
  const int64_t sequences = batch.sequences();
  if (batch.input_ids.dim() != 2 || (!batch.layout.defined() && batch.input_ids.size(0) != sequences))
    fail("input_ids: expected {} rows (chosen then rejected of {} pairs, then {} more_rejected), got {}", sequences,
         pairs, sequences - 2 * pairs, shape_text(batch.input_ids.sizes()));
  if (ranked && scoring.ld_alpha != 1.0) fail("loss.ld_alpha: LD-DPO's weighting is defined for pairs, not ranked responses");
  // The batch is collated on the CPU; the forward runs where the model's parameters live.
  const at::Device device = model.device();
  const at::Tensor input_ids = batch.input_ids.to(device);
  SequenceLogps all;
  if (input_ids.size(0) == 0 || input_ids.size(1) < 2) {
    all = no_scored_tokens(sequences, input_ids.options().dtype(float_type_of(model.head_weight().scalar_type())), input_ids);
  } else {
    const ScoredLists lists = scored_lists_of_batch(batch, input_ids);
    at::Tensor full_weight_tokens;
    if (scoring.ld_alpha != 1.0)
      full_weight_tokens = ld_full_weight_tokens(at::bincount(lists.sequence, {}, sequences), pairs);
    all = scored_sequence_logps(model, input_ids, batch.layout, lists, sequences, scoring, full_weight_tokens);
  }
  PairLogps out = pairs_of_sequences(all, pairs);
  if (ranked) {
    // Sequence s of `all` at more_rows; a missing response reads the appended zero (logp 0, 0 tokens).
    const at::Tensor where = batch.more_rows.to(device);
    const at::Tensor flat = at::where(where.ge(0), where, at::full_like(where, sequences)).reshape({-1});
    const auto pick = [&](const at::Tensor& per_sequence) {
      return at::cat({per_sequence, at::zeros({1}, per_sequence.options())}).index_select(0, flat).view(where.sizes());
    };
    out.more = pick(all.logps);
    out.more_tokens = pick(all.token_counts);
  }
  return out;
}

PairLogps pairs_of(const PairLogps& logps, int64_t first, int64_t count) {
  const auto part = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, first, count) : t; };
  PairLogps out;
  for (auto [to, from] : {std::pair{&out.chosen, &logps.chosen}, std::pair{&out.rejected, &logps.rejected},
                          std::pair{&out.chosen_tokens, &logps.chosen_tokens},
                          std::pair{&out.rejected_tokens, &logps.rejected_tokens},
                          std::pair{&out.rejected_unlikelihood, &logps.rejected_unlikelihood},
                          std::pair{&out.chosen_weight_logps, &logps.chosen_weight_logps},
                          std::pair{&out.rejected_weight_logps, &logps.rejected_weight_logps},
                          std::pair{&out.more, &logps.more}, std::pair{&out.more_tokens, &logps.more_tokens}})
    *to = part(*from);
  return out;
}

namespace {

// Whole pairs, consecutive in the pair-major order of the scored tokens, whose tokens
// [rows_begin, rows_end) of that order form one chunk of the head.
struct PairChunk {
  int64_t first_pair, end_pair, rows_begin, rows_end;
};

// The pairs cut into chunks of at most `most_rows` scored tokens; empty when a pair alone has more
// (or no pair has any).
std::vector<PairChunk> pair_chunks(const std::vector<int64_t>& rows_of_pair, int64_t most_rows) {
  std::vector<PairChunk> chunks;
  PairChunk open{0, 0, 0, 0};
  for (int64_t i = 0; i < static_cast<int64_t>(rows_of_pair.size()); ++i) {
    const int64_t rows = rows_of_pair[static_cast<size_t>(i)];
    if (rows > most_rows) return {};
    if (open.rows_end > open.rows_begin && open.rows_end - open.rows_begin + rows > most_rows) {
      open.end_pair = i;
      chunks.push_back(open);
      open = {i, i, open.rows_end, open.rows_end};
    }
    open.rows_end += rows;
  }
  open.end_pair = static_cast<int64_t>(rows_of_pair.size());
  if (open.rows_end > open.rows_begin)
    chunks.push_back(open);
  else if (!chunks.empty())
    chunks.back().end_pair = open.end_pair;  // trailing pairs with no scored token
  return chunks;
}

PairLossStep detached_step(const PairLogps& policy, const at::Tensor& losses) {
  PairLogps out = policy;
  for (at::Tensor* t : {&out.chosen, &out.rejected, &out.rejected_unlikelihood, &out.chosen_weight_logps,
                        &out.rejected_weight_logps, &out.more})
    if (t->defined()) *t = t->detach();
  return {out, losses.detach()};
}

}  // namespace

PairLossStep pair_loss_backward(CausalLMImpl& model, const PairBatch& batch, const ResponseScoring& scoring,
                                const PairLosses& losses, double scale, int64_t chunk_logits) {
  const int64_t pairs = batch.num_pairs;
  const auto plain = [&] {
    const PairLogps policy = pair_logps(model, batch, scoring);
    const at::Tensor l = losses(policy, 0, pairs);
    (l.sum() * scale).backward();
    return detached_step(policy, l);
  };
  // The gradient formed in forward needs each pair's loss from that pair's own tokens: their
  // log-probs (LD-DPO's weighting and unlikelihood's sums are functions of them) and WPO's
  // normaliser, read from the same logits. Ranked responses are not pairs.
  const bool ranked = batch.more_rows.defined() && batch.more_rows.numel() > 0;
  if (ranked || pairs == 0 || batch.input_ids.dim() != 2 || batch.input_ids.size(1) < 2 ||
      (!batch.layout.defined() && batch.input_ids.size(0) != 2 * pairs))
    return plain();
  const at::Tensor input_ids = batch.input_ids.to(model.device());
  const ScoredLists lists = scored_lists_of_batch(batch, input_ids);
  const int64_t vocab = model.head_weight().size(0);
  // Pair-major order: pair i's chosen tokens, then its rejected ones, each in their own order.
  const at::Tensor sequence = lists.sequence.to(at::kCPU, at::kLong);
  const at::Tensor counts = at::bincount(sequence, {}, 2 * pairs);
  std::vector<int64_t> rows_of_pair(static_cast<size_t>(pairs));
  const auto* count = counts.data_ptr<int64_t>();
  for (int64_t i = 0; i < pairs; ++i) rows_of_pair[static_cast<size_t>(i)] = count[i] + count[pairs + i];
  const std::vector<PairChunk> chunks = pair_chunks(rows_of_pair, chunk_logits / vocab);
  if (chunks.empty()) return plain();
  const at::Tensor key = sequence.remainder(pairs) * 2 + sequence.ge(pairs).to(at::kLong);
  const at::Tensor order =
      std::get<1>(at::sort(key, c10::optional<bool>(true), /*dim=*/0, /*descending=*/false)).to(lists.source.device());
  const at::Tensor source = lists.source.index_select(0, order), target = lists.target.index_select(0, order);
  const at::Tensor sequence_in_order = sequence.index_select(0, order.cpu());
  // LD-DPO: whether each token counts fully in its sequence's sum (pair_logps' rule), moved to the
  // pair-major order; within a sequence `order` kept the lists' order (the sort is stable).
  const at::Tensor ld_full =
      scoring.ld_alpha != 1.0
          ? ld_full_tokens(sequence, counts, ld_full_weight_tokens(counts, pairs)).index_select(0, order.cpu())
          : at::Tensor();

  const at::Tensor hidden = model.hidden_states(input_ids, batch.layout, source);
  const auto float_options = hidden.options().dtype(float_type_of(hidden.scalar_type()));
  std::vector<at::Tensor> chosen(chunks.size()), rejected(chunks.size()), rejected_unlikelihood(chunks.size()),
      chosen_weight_logps(chunks.size()), rejected_weight_logps(chunks.size()), chunk_losses(chunks.size());
  // WPO: each token's log sum_v p_v^2, written chunk by chunk before the chunk's losses read it.
  const at::ScalarType product_dtype =
      model.matmul_dtype() == at::ScalarType::Undefined ? model.head_weight().scalar_type() : model.matmul_dtype();
  const at::Tensor log_sum_squared =
      scoring.wpo_weights ? at::empty({source.numel()}, hidden.options().dtype(float_type_of(product_dtype))) : at::Tensor();
  size_t next = 0;
  const TokenGradient token_gradient = [&](int64_t first_row, const at::Tensor& token_logps) {
    const PairChunk& c = chunks.at(next);
    if (first_row != c.rows_begin) fail("pair log-probs: chunk at row {} where {} was expected", first_row, c.rows_begin);
    const int64_t k = c.end_pair - c.first_pair, n = c.rows_end - c.rows_begin;
    const at::Tensor leaf = token_logps.detach().requires_grad_(true);
    // The chunk's slots: chosen of its pairs, then rejected.
    const at::Tensor s = sequence_in_order.narrow(0, c.rows_begin, n).to(leaf.device());
    const at::Tensor slot = at::where(s.lt(pairs), s - c.first_pair, s - pairs - c.first_pair + k);
    const at::Tensor zero = at::zeros({2 * k}, leaf.options());
    at::Tensor weighted = leaf;
    if (ld_full.defined())
      weighted = at::where(ld_full.narrow(0, c.rows_begin, n).to(leaf.device()), leaf, leaf * scoring.ld_alpha);
    // The chunk's slots as sequences: its sums, token counts and scoring's extras.
    SequenceLogps slots{zero.index_add(0, slot, weighted),
                        at::cat({counts.narrow(0, c.first_pair, k), counts.narrow(0, pairs + c.first_pair, k)})
                            .to(leaf.device()),
                        {},
                        {}};
    add_scoring_extras(slots, scoring, leaf, slot, zero, [&] { return log_sum_squared.narrow(0, c.rows_begin, n); });
    const PairLogps policy = pairs_of_sequences(slots, k);
    const at::Tensor l = losses(policy, c.first_pair, k);
    const at::Tensor g = torch::autograd::grad({l.sum() * scale}, {leaf}, {}, /*retain_graph=*/false,
                                               /*create_graph=*/false, /*allow_unused=*/true)[0];
    chosen[next] = policy.chosen.detach();
    rejected[next] = policy.rejected.detach();
    if (scoring.unlikelihood) rejected_unlikelihood[next] = policy.rejected_unlikelihood.detach();
    if (scoring.wpo_weights) {
      chosen_weight_logps[next] = policy.chosen_weight_logps;
      rejected_weight_logps[next] = policy.rejected_weight_logps;
    }
    chunk_losses[next] = l.detach();
    ++next;
    return g.defined() ? g : at::zeros_like(token_logps);
  };
  std::vector<int64_t> chunk_ends;
  for (const PairChunk& c : chunks) chunk_ends.push_back(c.rows_end);
  // The head weight's gradient goes straight into its .grad (the trainer's gradient bucket) where
  // there is one to add to: the backward() below runs with gradient 1, as that requires.
  const at::Tensor& weight = model.head_weight();
  const HeadLogpsWithGradient head = head_logps_with_gradient(hidden, weight, target, model.matmul_dtype(), chunk_ends,
                                                              token_gradient, head_gradient_sum(weight), log_sum_squared);
  if (head.anchor.defined()) head.anchor.backward();
  PairLogps policy;
  policy.chosen = at::cat(chosen).to(float_options);
  policy.rejected = at::cat(rejected).to(float_options);
  if (scoring.unlikelihood) policy.rejected_unlikelihood = at::cat(rejected_unlikelihood).to(float_options);
  if (scoring.wpo_weights) {
    policy.chosen_weight_logps = at::cat(chosen_weight_logps).to(float_options);
    policy.rejected_weight_logps = at::cat(rejected_weight_logps).to(float_options);
  }
  policy.chosen_tokens = counts.narrow(0, 0, pairs).to(input_ids.device());
  policy.rejected_tokens = counts.narrow(0, pairs, pairs).to(input_ids.device());
  return {policy, at::cat(chunk_losses), /*head_gradient_in_forward=*/true};
}

SequenceLogps nll_backward(CausalLMImpl& model, const at::Tensor& input_ids, const at::Tensor& response_mask,
                           double scale, int64_t chunk_logits) {
  check_rows(input_ids, response_mask);
  const int64_t rows = input_ids.size(0);
  const at::Tensor& weight = model.head_weight();
  const auto float_options = input_ids.options().dtype(float_type_of(weight.scalar_type()));
  if (input_ids.size(1) < 2 || rows == 0) return no_scored_tokens(rows, float_options, input_ids);
  const ScoredLists lists = scored_lists_of_mask(input_ids, response_mask);
  const int64_t tokens = lists.source.numel(), vocab = weight.size(0);
  if (tokens == 0) return no_scored_tokens(rows, float_options, input_ids);  // nothing to learn from
  check_in_vocabulary(lists.target, vocab);
  std::vector<int64_t> chunk_ends;
  const int64_t step = std::max<int64_t>(chunk_logits / std::max<int64_t>(vocab, 1), 1);
  for (int64_t end = step; end < tokens; end += step) chunk_ends.push_back(end);
  chunk_ends.push_back(tokens);
  const at::Tensor hidden = model.hidden_states(input_ids, {}, lists.source);
  const TokenGradient minus_scale = [&](int64_t, const at::Tensor& logps) { return at::full_like(logps, -scale); };
  const HeadLogpsWithGradient head = head_logps_with_gradient(hidden, weight, lists.target, model.matmul_dtype(),
                                                              chunk_ends, minus_scale, head_gradient_sum(weight));
  if (head.anchor.defined()) head.anchor.backward();
  const at::Tensor token_counts = at::bincount(lists.sequence, {}, rows);
  return {at::zeros({rows}, head.logps.options()).index_add(0, lists.sequence, head.logps), token_counts, {}, {}};
}

}  // namespace dpo
