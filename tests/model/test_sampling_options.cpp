// generate's sampling options: temperature, top-p, seed, stop ids and banned ids, on tiny models.
#include "catch2_api.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "dpo/error.h"
#include "dpo/model/sampling.h"
#include "tiny_llama.h"

namespace {

// Vocab 32 with near-flat next-token distributions (the 0.02-std initialisation): samples differ
// from seed to seed.
const std::vector<dpo::TokenIds> kPrompts = {{5, 9, 3}, {17}, {0, 2, 2, 8, 11}};

// Every logit 0 (the final norm's weight zeroed): all 32 ids tie, so id 0 is the argmax and
// sampling is uniform.
dpo::CausalLM uniform_llama() {
  dpo::CausalLM model = tiny_llama(3);
  c10::NoGradGuard no_grad;
  model->named_parameters()["model.norm.weight"].zero_();
  return model;
}

// The ids nucleus_filter keeps (finite logits), checking that those keep their value.
std::set<int64_t> kept_ids(const at::Tensor& logits, double top_p) {
  const at::Tensor filtered = dpo::nucleus_filter(logits, top_p);
  std::set<int64_t> kept;
  for (int64_t i = 0; i < logits.size(0); ++i) {
    const float value = filtered[i].item<float>();
    if (std::isinf(value)) continue;
    CHECK(value == logits[i].item<float>());
    kept.insert(i);
  }
  return kept;
}

dpo::SamplingOptions options_with(int64_t max_new_tokens, double temperature, uint64_t seed = 0) {
  dpo::SamplingOptions options;
  options.max_new_tokens = max_new_tokens;
  options.temperature = temperature;
  options.seed = seed;
  return options;
}

std::vector<dpo::TokenIds> ids_of(const std::vector<dpo::Generation>& generations) {
  std::vector<dpo::TokenIds> ids;
  for (const auto& g : generations) ids.push_back(g.ids);
  return ids;
}

}  // namespace

TEST_CASE("top-p keeps the smallest set of most probable tokens whose mass reaches top_p", "[sampling]") {
  // Probabilities 0.05, 0.5, 0.1, 0.2, 0.15 for ids 0..4: by rank 1, 3, 4, 2, 0 with cumulative
  // mass 0.5, 0.7, 0.85, 0.95, 1.
  const at::Tensor logits = at::log(at::tensor(std::vector<float>{0.05f, 0.5f, 0.1f, 0.2f, 0.15f}));
  CHECK(kept_ids(logits, 0.4) == std::set<int64_t>{1});
  CHECK(kept_ids(logits, 0.6) == std::set<int64_t>{1, 3});
  CHECK(kept_ids(logits, 0.75) == std::set<int64_t>{1, 3, 4});
  CHECK(kept_ids(logits, 0.86) == std::set<int64_t>{1, 3, 4, 2});
  CHECK(kept_ids(logits, 0.96) == std::set<int64_t>{0, 1, 2, 3, 4});
  CHECK(kept_ids(logits, 1.0) == std::set<int64_t>{0, 1, 2, 3, 4});
  CHECK(kept_ids(logits, 1e-6) == std::set<int64_t>{1});  // always at least the most probable
  // Scaled logits (a temperature) give the same order, hence the same nucleus at a small top_p.
  CHECK(kept_ids(logits * 3.0, 0.6) == std::set<int64_t>{1});
  CHECK_THROWS_AS(dpo::nucleus_filter(logits, 0.0), dpo::Error);
}

TEST_CASE("greedy generation (temperature 0) equals an argmax loop over model.forward, id 0 included", "[sampling]") {
  dpo::CausalLM model = tiny_llama(7);
  const auto generations = dpo::generate(*model, kPrompts, options_with(8, 0.0));
  REQUIRE(generations.size() == kPrompts.size());
  c10::NoGradGuard no_grad;
  for (size_t p = 0; p < kPrompts.size(); ++p) {
    std::vector<int64_t> sequence(kPrompts[p].begin(), kPrompts[p].end());
    dpo::TokenIds expected;
    for (int step = 0; step < 8; ++step) {
      const at::Tensor logits = model->forward(at::tensor(sequence, at::kLong).unsqueeze(0))[0][-1];
      sequence.push_back(logits.argmax().item<int64_t>());
      expected.push_back(static_cast<int32_t>(sequence.back()));
    }
    CHECK(generations[p].ids == expected);
    CHECK(generations[p].finish_reason == dpo::FinishReason::Length);
  }
  // Where every id ties, the argmax is id 0: a real tokenizer's token, so generate may take it.
  dpo::CausalLM uniform = uniform_llama();
  CHECK(dpo::generate(*uniform, {{4, 5}}, options_with(3, 0.0))[0].ids == dpo::TokenIds{0, 0, 0});
}

TEST_CASE("a tiny top_p samples what greedy takes, at any temperature and seed", "[sampling]") {
  dpo::CausalLM model = tiny_llama(7);
  const auto greedy = ids_of(dpo::generate(*model, kPrompts, options_with(8, 0.0)));
  for (uint64_t seed : {1, 2}) {
    dpo::SamplingOptions nucleus = options_with(8, 1.5, seed);
    nucleus.top_p = 1e-6;
    CHECK(ids_of(dpo::generate(*model, kPrompts, nucleus)) == greedy);
  }
  // Without the nucleus the same sampling departs from greedy (the distributions are near flat).
  CHECK(ids_of(dpo::generate(*model, kPrompts, options_with(8, 1.5, 1))) != greedy);
}

TEST_CASE("generation is deterministic for a seed and differs across seeds", "[sampling]") {
  dpo::CausalLM model = tiny_llama(7);
  dpo::SamplingOptions options = options_with(12, 1.0, 42);
  options.top_p = 0.9;
  const auto first = ids_of(dpo::generate(*model, kPrompts, options));
  CHECK(ids_of(dpo::generate(*model, kPrompts, options)) == first);
  options.seed = 43;
  CHECK(ids_of(dpo::generate(*model, kPrompts, options)) != first);
}

TEST_CASE("a stop id ends generation without being part of it, finish reason stop", "[sampling]") {
  dpo::CausalLM model = tiny_llama(7);
  const dpo::TokenIds prompt = {5, 9, 3};
  const dpo::Generation free_run = dpo::generate(*model, {prompt}, options_with(10, 0.0))[0];
  REQUIRE(free_run.ids.size() == 10);
  CHECK(free_run.finish_reason == dpo::FinishReason::Length);
  CHECK(std::string(dpo::finish_reason_name(free_run.finish_reason)) == "length");
  // Stop at the third token's id: generation ends where that id first comes.
  const int32_t stop = free_run.ids[2];
  const auto first = std::find(free_run.ids.begin(), free_run.ids.end(), stop);
  dpo::SamplingOptions options = options_with(10, 0.0);
  options.stop_ids = {31, stop};
  const dpo::Generation stopped = dpo::generate(*model, {prompt}, options)[0];
  CHECK(stopped.ids == dpo::TokenIds(free_run.ids.begin(), first));
  CHECK(stopped.finish_reason == dpo::FinishReason::Stop);
  CHECK(std::string(dpo::finish_reason_name(stopped.finish_reason)) == "stop");
  // A stop id as the very first token: an empty completion.
  options.stop_ids = {free_run.ids[0]};
  const dpo::Generation empty = dpo::generate(*model, {prompt}, options)[0];
  CHECK(empty.ids.empty());
  CHECK(empty.finish_reason == dpo::FinishReason::Stop);
}

TEST_CASE("banned ids are never sampled, greedy or not", "[sampling]") {
  dpo::CausalLM model = uniform_llama();  // unbanned, uniform sampling would draw each id ~1 in 32
  const std::set<int32_t> banned = {0, 3, 5, 30};
  for (double temperature : {0.0, 1.0}) {
    dpo::SamplingOptions options = options_with(128, temperature, 9);
    options.banned_ids.assign(banned.begin(), banned.end());
    options.top_p = temperature == 0 ? 1.0 : 0.95;
    for (const auto& generation : dpo::generate(*model, {{1, 2}, {7}}, options)) {
      REQUIRE(generation.ids.size() == 128);
      for (int32_t id : generation.ids) CHECK(banned.count(id) == 0);
    }
  }
}

TEST_CASE("generate refuses a top_p of 0, an id outside the vocabulary, a stop id outside it and a prompt too long", "[sampling]") {
  dpo::CausalLM model = tiny_llama(7);
  dpo::SamplingOptions options = options_with(4, 1.0);
  options.top_p = 0;
  CHECK_THROWS_WITH(dpo::generate(*model, kPrompts, options), Catch::Contains("top_p must be in (0, 1]"));
  CHECK_THROWS_WITH(dpo::generate(*model, {{1, 32}}, options_with(4, 1.0)),
                    Catch::Contains("prompt 0 has token id 32 outside the model's vocabulary (vocab_size 32)"));
  CHECK_THROWS_WITH(dpo::generate(*model, {{1}, {1, 2}}, options_with(511, 1.0)),
                    Catch::Contains("prompt 1 (2 tokens) + 511 new tokens exceeds max_position_embeddings 512"));
  options = options_with(4, 1.0);
  options.stop_ids = {32};
  CHECK_THROWS_WITH(dpo::generate(*model, kPrompts, options), Catch::Contains("stop id 32 is outside"));
}
