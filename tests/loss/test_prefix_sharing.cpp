// Prefix sharing and packed rows (PairLayout::SharedPrefix): the collated layout itself, and
// log-probs, token counts and parameter gradients equal to the right-padded rows' (one row per
// response, plain causal attention) to float rounding, for GPT-2 (learned positions) and Llama
// (RoPE, grouped-query attention), in float64, float32 and bf16-mixed.
#include <array>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"

#include "dpo/data/collate.h"
#include "dpo/data/token_layout.h"
#include "dpo/loss/logps.h"
#include "dpo/loss/loss.h"
#include "float_rounding.h"
#include "tiny_llama.h"

namespace {

using dpo::TokenIds;

dpo::PreferenceDataset dataset_of(std::vector<dpo::RawPreferencePair> pairs) {
  dpo::TruncationRule keep_all;
  keep_all.max_length = keep_all.max_prompt_length = 64;
  return dpo::PreferenceDataset::from_pairs("pairs.jsonl", std::move(pairs), keep_all, "", {});
}

std::vector<int64_t> row_of(const at::Tensor& t, int64_t r) {
  const at::Tensor row = t[r].contiguous();
  return {row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()};
}

std::vector<int64_t> values(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

TEST_CASE("shared-prefix collation packs each pair's prompt once, then its responses as branches", "[logps][prefix]") {
  // Lengths 2+3+1 = 6 and 1+1+2 = 4 (+2 more_rejected tokens = 6): one row of 6 each, longest first.
  const dpo::PreferenceDataset data =
      dataset_of({{{1, 2}, {3, 4, 5}, {6}, {}}, {{7}, {8}, {9, 10}, {TokenIds{11, 12}}}, {{13, 14, 15}, {16}, {17}, {}}});
  const dpo::PairBatch b = dpo::collate_pairs(data, {0, 1}, dpo::PairLayout::SharedPrefix);
  REQUIRE(b.input_ids.sizes() == at::IntArrayRef({2, 6}));
  CHECK(b.sequences() == 5);
  CHECK(b.padded_tokens == 0);
  CHECK(row_of(b.input_ids, 0) == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
  CHECK(row_of(b.layout.positions, 0) == std::vector<int64_t>{0, 1, 2, 3, 4, 2});
  CHECK(row_of(b.layout.branches, 0) == std::vector<int64_t>{0, 0, 1, 1, 1, 2});
  CHECK(row_of(b.input_ids, 1) == std::vector<int64_t>{7, 8, 9, 10, 11, 12});
  CHECK(row_of(b.layout.positions, 1) == std::vector<int64_t>{0, 1, 1, 2, 1, 2});
  CHECK(row_of(b.layout.branches, 1) == std::vector<int64_t>{0, 1, 2, 2, 3, 3});
  CHECK(row_of(b.layout.documents, 1) == std::vector<int64_t>{1, 1, 1, 1, 1, 1});
  // Sequences: chosen 0, 1; rejected 2, 3; pair 1's more_rejected 4. Each response's first token is
  // predicted at its prompt's last position (flat index row * 6 + t).
  CHECK(values(b.scored_sequence) == std::vector<int64_t>{0, 0, 0, 1, 2, 3, 3, 4, 4});
  CHECK(values(b.scored_target) == std::vector<int64_t>{3, 4, 5, 8, 6, 9, 10, 11, 12});
  CHECK(values(b.scored_source) == std::vector<int64_t>{1, 2, 3, 6, 1, 6, 8, 6, 10});
  CHECK(values(b.more_rows) == std::vector<int64_t>{-1, 4});
  // The rejected response sees the prompt and itself, never the chosen one.
  const at::Tensor allowed = dpo::attention_allowed(b.layout);
  CHECK(values(allowed[0][5].to(at::kLong)) == std::vector<int64_t>{1, 1, 0, 0, 0, 1});
  CHECK(values(allowed[1][5].to(at::kLong)) == std::vector<int64_t>{1, 0, 0, 0, 1, 1});

  // Two short pairs share a row as two documents; the padding after them is a document of its own.
  const dpo::PairBatch packed = dpo::collate_pairs(data, {2, 0, 1}, dpo::PairLayout::SharedPrefix);
  REQUIRE(packed.input_ids.sizes() == at::IntArrayRef({3, 6}));
  CHECK(row_of(packed.layout.documents, 2) == std::vector<int64_t>{0, 0, 0, 0, 0, -1});
  CHECK(packed.padded_tokens == 1);
  const at::Tensor seen = dpo::attention_allowed(packed.layout);
  CHECK(values(seen[2][5].to(at::kLong)) == std::vector<int64_t>{0, 0, 0, 0, 0, 1});
}

namespace {

// Pairs of varied lengths: an empty prompt (its responses' first tokens are not scored), a
// one-token response, a ranked example, long and short ones, so rows pack unevenly.
dpo::PreferenceDataset varied_pairs(bool ranked) {
  at::manual_seed(11);
  const auto tokens = [](int64_t n) {
    const at::Tensor t = at::randint(0, 32, {n}, at::kLong);
    return TokenIds(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
  };
  std::vector<dpo::RawPreferencePair> pairs;
  const std::vector<std::array<int64_t, 3>> lengths = {{5, 7, 3}, {0, 4, 6}, {9, 1, 2}, {3, 3, 3}, {12, 8, 11}, {1, 2, 9}};
  for (const auto& [p, c, r] : lengths) pairs.push_back({tokens(p), tokens(c), tokens(r), {}});
  if (ranked) pairs[3].more_rejected = {tokens(4), tokens(2)};
  return dataset_of(std::move(pairs));
}

std::map<std::string, at::Tensor> grads_of(dpo::CausalLMImpl& model, const dpo::PairLogps& l) {
  model.zero_grad();
  at::Tensor total = (l.chosen * at::linspace(0.5, 1.5, l.chosen.size(0), l.chosen.options())).sum() - 0.7 * l.rejected.sum();
  if (l.more.defined()) total = total + 0.3 * l.more.sum();
  if (l.rejected_unlikelihood.defined()) total = total + 0.1 * l.rejected_unlikelihood.sum();
  total.backward();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : model.named_parameters()) grads[p.key()] = p.value().grad().clone();
  return grads;
}

void check_shared_equals_padded(dpo::CausalLMImpl& model, at::ScalarType matmul, double tolerance, bool ranked,
                                const dpo::ResponseScoring& scoring = {}) {
  model.set_matmul_dtype(matmul);
  const dpo::PreferenceDataset data = varied_pairs(ranked);
  const std::vector<int64_t> indices = {4, 1, 0, 3, 5, 2};
  const dpo::PairBatch padded = dpo::collate_pairs(data, indices, dpo::PairLayout::Padded);
  const dpo::PairBatch shared = dpo::collate_pairs(data, indices, dpo::PairLayout::SharedPrefix);
  CHECK(shared.input_ids.numel() < padded.input_ids.numel());
  const dpo::PairLogps want = dpo::pair_logps(model, padded, scoring);
  const auto want_grads = grads_of(model, want);
  const dpo::PairLogps got = dpo::pair_logps(model, shared, scoring);
  const auto got_grads = grads_of(model, got);
  CHECK(at::equal(got.chosen_tokens, want.chosen_tokens));
  CHECK(at::equal(got.rejected_tokens, want.rejected_tokens));
  CHECK(got.chosen_tokens[1].item<int64_t>() == 3);  // the empty prompt's first token is not scored
  const auto close = [&](const at::Tensor& a, const at::Tensor& b) {
    INFO(a << "\nagainst\n" << b);
    CHECK(at::allclose(a.to(at::kDouble), b.to(at::kDouble), tolerance, tolerance));
  };
  close(got.chosen, want.chosen);
  close(got.rejected, want.rejected);
  if (ranked) {
    CHECK(at::equal(got.more_tokens, want.more_tokens));
    close(got.more, want.more);
  }
  if (scoring.unlikelihood) close(got.rejected_unlikelihood, want.rejected_unlikelihood);
  if (scoring.wpo_weights) close(got.chosen_weight_logps, want.chosen_weight_logps);
  for (const auto& [name, grad] : want_grads) {
    INFO(name);
    CHECK(float_rounding::normwise_relative_difference(got_grads.at(name), grad) < 10 * tolerance);
  }
}

}  // namespace

TEST_CASE("shared prefixes and packed rows give the padded rows' log-probs and gradients", "[logps][prefix]") {
  SECTION("llama float64, ranked") {
    auto model = tiny_llama(3);
    model->to(at::kDouble);
    // RMSNorm normalises in float32 whatever the dtype (as transformers' LlamaRMSNorm), so the
    // gradients carry float32 roundings (~3e-8 relative here); GPT-2 is float64 throughout.
    check_shared_equals_padded(*model, at::ScalarType::Undefined, 1e-8, true);
  }
  SECTION("gpt2 float64, ranked") {
    auto model = tiny_gpt2(3);
    model->to(at::kDouble);
    check_shared_equals_padded(*model, at::ScalarType::Undefined, 1e-10, true);
  }
  SECTION("llama fp32, LD-DPO weighting, unlikelihood and WPO weights") {
    auto model = tiny_llama(4);
    dpo::ResponseScoring scoring;
    scoring.ld_alpha = 0.5;
    scoring.unlikelihood = true;
    scoring.wpo_weights = true;
    check_shared_equals_padded(*model, at::ScalarType::Undefined, float_rounding::kForwardRelative, false, scoring);
  }
  SECTION("gpt2 fp32") {
    auto model = tiny_gpt2(4);
    check_shared_equals_padded(*model, at::ScalarType::Undefined, float_rounding::kForwardRelative, false);
  }
  SECTION("llama bf16-mixed") {
    auto model = tiny_llama(5);
    check_shared_equals_padded(*model, at::kBFloat16, 2e-2, false);
  }
  SECTION("gpt2 bf16-mixed, activation checkpointing") {
    auto model = tiny_gpt2(5);
    model->set_gradient_checkpointing(true);
    check_shared_equals_padded(*model, at::kBFloat16, 2e-2, false);
  }
}

TEST_CASE("a packed row longer than n_positions is accepted when its sequences fit", "[logps][prefix]") {
  // A pair of 30 + 30 + 30 tokens packs into a row of 90, more than the tiny GPT-2's 64 positions,
  // while each of its sequences (prompt + one response) is 60 tokens long.
  auto model = tiny_gpt2(1);
  const TokenIds thirty(30, 3);
  const dpo::PreferenceDataset data = dataset_of({{thirty, thirty, thirty, {}}});
  const dpo::PairBatch shared = dpo::collate_pairs(data, {0}, dpo::PairLayout::SharedPrefix);
  REQUIRE(shared.input_ids.size(1) == 90);
  const dpo::PairLogps got = dpo::pair_logps(*model, shared);
  const dpo::PairLogps want = dpo::pair_logps(*model, dpo::collate_pairs(data, {0}));
  CHECK(at::allclose(got.chosen, want.chosen, 1e-5, 1e-5));
}

namespace {

// Every parameter's gradient that `step` adds: from none, or (`onto_held`) onto random values
// already in every .grad, as the trainer's gradient buckets hold them.
template <typename F>
std::map<std::string, at::Tensor> grads_after(dpo::CausalLMImpl& model, F step, bool onto_held = false) {
  model.zero_grad();
  std::map<std::string, at::Tensor> held;
  if (onto_held) {
    for (const auto& p : model.named_parameters()) {
      held[p.key()] = 0.1 * at::randn_like(p.value());
      p.value().mutable_grad() = held[p.key()].clone();
    }
  }
  step();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : model.named_parameters())
    grads[p.key()] = onto_held ? p.value().grad() - held[p.key()] : p.value().grad().clone();
  return grads;
}

// pair_loss_backward on `batch` against the plain way (pair_logps, the same per-pair losses,
// backward()): log-probs, losses and every gradient, and whether the head's gradient was formed in
// forward. The gradients twice: from none, and added onto gradients already held (then the head
// weight's goes straight into its .grad, and a tied embedding's sparse one is added there too).
void check_gradient_in_forward(dpo::CausalLMImpl& model, const dpo::PairBatch& batch, const dpo::LossOptions& loss,
                               double tolerance, int64_t chunk_logits, bool in_forward) {
  const int64_t pairs = batch.num_pairs;
  dpo::PairLogps reference;
  reference.chosen = at::linspace(-30.0, -10.0, pairs, at::kFloat);
  reference.rejected = at::linspace(-12.0, -28.0, pairs, at::kFloat);
  const dpo::BatchTotals totals{static_cast<double>(pairs), 17.0};
  const auto losses_of = [&](const dpo::PairLogps& policy, int64_t first, int64_t count) {
    const dpo::PairLogps ref = dpo::pairs_of(reference, first, count);
    return dpo::preference_losses(dpo::preference_logps(policy, &ref), loss, totals);
  };
  const double scale = 0.25;
  dpo::PairLogps want;
  at::Tensor want_losses;
  const dpo::ResponseScoring scoring = dpo::response_scoring(loss);
  const auto want_grads = grads_after(model, [&] {
    want = dpo::pair_logps(model, batch, scoring);
    want_losses = losses_of(want, 0, pairs);
    (want_losses.sum() * scale).backward();
  });
  dpo::PairLossStep got;
  const auto got_grads =
      grads_after(model, [&] { got = dpo::pair_loss_backward(model, batch, scoring, losses_of, scale, chunk_logits); });
  CHECK(got.head_gradient_in_forward == in_forward);
  CHECK(at::equal(got.policy.chosen_tokens, want.chosen_tokens));
  CHECK(at::equal(got.policy.rejected_tokens, want.rejected_tokens));
  const auto close = [&](const at::Tensor& a, const at::Tensor& b) {
    INFO(a << "\nagainst\n" << b);
    CHECK(!a.requires_grad());
    CHECK(at::allclose(a.to(at::kDouble), b.to(at::kDouble), tolerance, tolerance));
  };
  close(got.policy.chosen, want.chosen);
  close(got.policy.rejected, want.rejected);
  close(got.losses, want_losses);
  CHECK(got.policy.rejected_unlikelihood.defined() == scoring.unlikelihood);
  if (scoring.unlikelihood) close(got.policy.rejected_unlikelihood, want.rejected_unlikelihood);
  CHECK(got.policy.chosen_weight_logps.defined() == scoring.wpo_weights);
  if (scoring.wpo_weights) {
    close(got.policy.chosen_weight_logps, want.chosen_weight_logps);
    close(got.policy.rejected_weight_logps, want.rejected_weight_logps);
  }
  const auto added_grads = grads_after(
      model, [&] { dpo::pair_loss_backward(model, batch, scoring, losses_of, scale, chunk_logits); }, true);
  for (const auto& [name, grad] : want_grads) {
    INFO(name);
    CHECK(float_rounding::normwise_relative_difference(got_grads.at(name), grad) < 10 * tolerance);
    CHECK(float_rounding::normwise_relative_difference(added_grads.at(name), grad) < 10 * tolerance);
  }
}

dpo::LossOptions loss_of(const std::string& type, double rpo_alpha = 0.0, double ld_alpha = 1.0) {
  dpo::LossOptions loss;
  loss.type = type;
  loss.beta = 0.5;
  loss.rpo_alpha = rpo_alpha;
  loss.ld_alpha = ld_alpha;
  return loss;
}

}  // namespace

TEST_CASE("the head's gradient formed in forward, pair chunk by pair chunk, equals the plain backward's",
          "[logps][prefix]") {
  const dpo::PreferenceDataset data = varied_pairs(false);
  const std::vector<int64_t> indices = {4, 1, 0, 3, 5, 2};
  const double fp32 = float_rounding::kForwardRelative;
  // chunk_logits: the most logits per chunk of whole pairs; at vocab 32, 2^25 holds every pair in
  // one chunk, 32 x 25 holds the largest pair (12 prompt tokens, responses of 8 and 11: 19 scored)
  // and then a new chunk for nearly every pair, 32 x 10 holds no pair of 19 (the plain way runs).
  const int64_t one = int64_t{1} << 25, several = 32 * 25, too_few = 32 * 10;
  SECTION("gpt2 fp32, shared prefixes, sigmoid with an sft term, one chunk and several") {
    auto model = tiny_gpt2(6);
    const dpo::PairBatch batch = dpo::collate_pairs(data, indices, dpo::PairLayout::SharedPrefix);
    check_gradient_in_forward(*model, batch, loss_of("sigmoid", 0.7), fp32, one, true);
    check_gradient_in_forward(*model, batch, loss_of("sigmoid", 0.7), fp32, several, true);
    check_gradient_in_forward(*model, batch, loss_of("sigmoid", 0.7), fp32, too_few, false);
  }
  SECTION("llama fp32, padded rows, ipo (per-token means) and hinge") {
    auto model = tiny_llama(6);
    const dpo::PairBatch batch = dpo::collate_pairs(data, indices, dpo::PairLayout::Padded);
    check_gradient_in_forward(*model, batch, loss_of("ipo"), fp32, several, true);
    check_gradient_in_forward(*model, batch, loss_of("sigmoid,hinge"), fp32, one, true);
  }
  SECTION("LD-DPO's weighting, unlikelihood's sums and WPO's weights are formed in forward too") {
    auto model = tiny_llama(6);
    for (const auto layout : {dpo::PairLayout::SharedPrefix, dpo::PairLayout::Padded}) {
      const dpo::PairBatch batch = dpo::collate_pairs(data, indices, layout);
      check_gradient_in_forward(*model, batch, loss_of("sigmoid", 0.0, 0.4), fp32, several, true);
      check_gradient_in_forward(*model, batch, loss_of("sigmoid,unlikelihood", 0.0, 0.4), fp32, one, true);
      dpo::LossOptions wpo = loss_of("sigmoid");
      wpo.use_weighting = true;
      check_gradient_in_forward(*model, batch, wpo, fp32, several, true);
      wpo.ld_alpha = 0.4;
      check_gradient_in_forward(*model, batch, wpo, fp32, one, true);
    }
  }
  SECTION("llama and gpt2 bf16-mixed, shared prefixes") {
    for (auto model : {tiny_llama(7), tiny_gpt2(7)}) {
      model->set_matmul_dtype(at::kBFloat16);
      const dpo::PairBatch batch = dpo::collate_pairs(data, indices, dpo::PairLayout::SharedPrefix);
      check_gradient_in_forward(*model, batch, loss_of("sigmoid"), 2e-2, several, true);
      dpo::LossOptions wpo = loss_of("sigmoid,unlikelihood", 0.0, 0.4);
      wpo.use_weighting = true;
      check_gradient_in_forward(*model, batch, wpo, 2e-2, several, true);
    }
  }
  SECTION("float64 gpt2: the two ways agree to float64 rounding") {
    auto model = tiny_gpt2(8);
    model->to(at::kDouble);
    const dpo::PairBatch batch = dpo::collate_pairs(data, indices, dpo::PairLayout::SharedPrefix);
    check_gradient_in_forward(*model, batch, loss_of("sigmoid", 0.3), 1e-10, several, true);
    dpo::LossOptions scored = loss_of("sigmoid,unlikelihood", 0.0, 0.4);
    scored.use_weighting = true;
    check_gradient_in_forward(*model, batch, scored, 1e-10, several, true);
  }
}

TEST_CASE("SFT's backward with the head's gradient formed in forward equals the plain backward", "[logps]") {
  const dpo::PreferenceDataset data = varied_pairs(false);
  const dpo::PairBatch batch = dpo::collate_chosen(data, {4, 1, 0, 3, 5, 2});
  const double scale = 0.3;
  // nll_backward against model_sequence_logps and backward() of scale * -(sum of log-probs):
  // sums, counts, and every gradient from none and onto gradients already held. At vocabulary 32,
  // 32 x 7 logits per chunk cut the scored tokens into chunks of 7, across rows.
  const auto check = [&](dpo::CausalLMImpl& model, double tolerance, int64_t chunk_logits) {
    dpo::SequenceLogps want;
    const auto want_grads = grads_after(model, [&] {
      want = dpo::model_sequence_logps(model, batch.input_ids, batch.response_mask);
      (-want.logps.sum() * scale).backward();
    });
    dpo::SequenceLogps got;
    const auto got_grads =
        grads_after(model, [&] { got = dpo::nll_backward(model, batch.input_ids, batch.response_mask, scale, chunk_logits); });
    CHECK(at::equal(got.token_counts, want.token_counts));
    CHECK_FALSE(got.logps.requires_grad());
    CHECK(at::allclose(got.logps.to(at::kDouble), want.logps.to(at::kDouble), tolerance, tolerance));
    const auto added_grads = grads_after(
        model, [&] { dpo::nll_backward(model, batch.input_ids, batch.response_mask, scale, chunk_logits); }, true);
    for (const auto& [name, grad] : want_grads) {
      INFO(name);
      CHECK(float_rounding::normwise_relative_difference(got_grads.at(name), grad) < 10 * tolerance);
      CHECK(float_rounding::normwise_relative_difference(added_grads.at(name), grad) < 10 * tolerance);
    }
  };
  const int64_t one = int64_t{1} << 25, sevens = 32 * 7;
  SECTION("gpt2 (tied head, sparse embedding gradient) and llama, fp32, one chunk and chunks across rows") {
    for (auto model : {tiny_gpt2(6), tiny_llama(6)}) {
      check(*model, float_rounding::kForwardRelative, one);
      check(*model, float_rounding::kForwardRelative, sevens);
    }
  }
  SECTION("bf16-mixed") {
    for (auto model : {tiny_gpt2(7), tiny_llama(7)}) {
      model->set_matmul_dtype(at::kBFloat16);
      check(*model, 2e-2, sevens);
    }
  }
  SECTION("float64: the two ways agree to float64 rounding") {
    auto model = tiny_gpt2(8);
    model->to(at::kDouble);
    check(*model, 1e-10, sevens);
  }
  SECTION("bad input is refused, naming it") {
    auto model = tiny_gpt2(6);
    CHECK_THROWS_WITH(dpo::nll_backward(*model, batch.input_ids, batch.response_mask.narrow(1, 1, 3), scale),
                      Catch::Contains("response_mask: expected"));
    CHECK_THROWS_WITH(dpo::nll_backward(*model, batch.input_ids.reshape({-1}), batch.response_mask, scale),
                      Catch::Contains("input_ids: expected [R, T]"));
    const at::Tensor outside = batch.input_ids.clone();
    outside.masked_fill_(batch.response_mask.to(at::kBool), 32);  // the tiny models' vocabulary is 32
    CHECK_THROWS_WITH(dpo::nll_backward(*model, outside, batch.response_mask, scale),
                      Catch::Contains("a token id is outside the vocabulary of the logits (size 32)"));
  }
  SECTION("rows with no scored token give zeros and no gradient") {
    auto model = tiny_gpt2(6);
    const at::Tensor none = at::zeros_like(batch.response_mask);
    model->zero_grad();
    const dpo::SequenceLogps s = dpo::nll_backward(*model, batch.input_ids, none, scale);
    CHECK(at::equal(s.logps, at::zeros({6})));
    CHECK(at::equal(s.token_counts, at::zeros({6}, at::kLong)));
    for (const auto& p : model->named_parameters()) {
      INFO(p.key());
      CHECK_FALSE(p.value().grad().defined());
    }
  }
}
