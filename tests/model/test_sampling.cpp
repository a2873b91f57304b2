#include "catch2_api.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include <c10/core/GradMode.h>

#include "dpo/config/config.h"
#include "dpo/model/model.h"
#include "dpo/model/sampling.h"
#include "dpo/train/bench.h"
#include "dpo/train/throughput.h"
#include "scratch_dir.h"

namespace {

namespace fs = std::filesystem;

dpo::CausalLM tiny_llama(int64_t vocab, uint64_t seed = 7) {
  nlohmann::json config = dpo::default_hf_config(dpo::Architecture::Llama);
  config["vocab_size"] = vocab;
  config["hidden_size"] = 32;
  config["intermediate_size"] = 64;
  config["max_position_embeddings"] = 64;
  dpo::CausalLM model = dpo::build_model(dpo::model_spec_from_hf_config(config, "test"), seed);
  // Sharper next-token distributions than the 0.02-std initialisation gives, so that greedy
  // choices are far from ties.
  c10::NoGradGuard no_grad;
  for (auto& p : model->named_parameters())
    if (p.key().find("norm") == std::string::npos) p.value().mul_(20.0);
  return model;
}

const std::vector<dpo::TokenIds> kPrompts = {{5, 9, 3}, {17}, {40, 2, 2, 8, 11}};

}  // namespace

TEST_CASE("greedy sampling takes the argmax of the model's next-token logits at every step", "[sampling]") {
  dpo::CausalLM model = tiny_llama(64);
  const int64_t new_tokens = 6;
  const auto responses = dpo::sample_responses(*model, kPrompts, new_tokens, 0.0, 1);
  REQUIRE(responses.size() == kPrompts.size());
  c10::NoGradGuard no_grad;
  for (size_t p = 0; p < kPrompts.size(); ++p) {
    REQUIRE(responses[p].size() == static_cast<size_t>(new_tokens));
    // One causal forward of the finished sequence gives every step's next-token logits.
    std::vector<int64_t> full(kPrompts[p].begin(), kPrompts[p].end());
    full.insert(full.end(), responses[p].begin(), responses[p].end());
    const at::Tensor logits = model->forward(at::tensor(full, at::kLong).unsqueeze(0))[0].to(at::kDouble);
    for (int64_t t = 0; t < new_tokens; ++t) {
      const int64_t position = static_cast<int64_t>(kPrompts[p].size()) - 1 + t;
      const at::Tensor candidates = logits[position].narrow(0, 1, logits.size(-1) - 1);  // without id 0
      CHECK(responses[p][t] == candidates.argmax().item<int64_t>() + 1);
    }
  }
}

TEST_CASE("sampling at a temperature is deterministic for a seed and differs across seeds", "[sampling]") {
  dpo::CausalLM model = tiny_llama(64);
  const auto first = dpo::sample_responses(*model, kPrompts, 8, 1.5, 123);
  const auto again = dpo::sample_responses(*model, kPrompts, 8, 1.5, 123);
  const auto other = dpo::sample_responses(*model, kPrompts, 8, 1.5, 124);
  CHECK(first == again);
  CHECK(first != other);
  for (const auto& response : first) CHECK(response.size() == 8);
}

TEST_CASE("the padding id 0 is never sampled, even where it ties for the most likely", "[sampling]") {
  // With the final norm's weight zero every logit is 0: an unmasked argmax would pick id 0, and
  // uniform sampling over 8 ids would draw it about once in 8.
  dpo::CausalLM model = tiny_llama(8);
  {
    c10::NoGradGuard no_grad;
    model->named_parameters()["model.norm.weight"].zero_();
  }
  const std::vector<dpo::TokenIds> prompts = {{1, 2}, {3}, {4, 5, 6}, {7}};
  for (double temperature : {0.0, 1.0}) {
    const auto responses = dpo::sample_responses(*model, prompts, 16, temperature, 5);
    for (const auto& response : responses) {
      REQUIRE(response.size() == 16);
      for (int32_t token : response) {
        CHECK(token >= 1);
        CHECK(token < 8);
      }
    }
  }
}

TEST_CASE("the matmul peak is a positive, finite FLOP rate", "[throughput]") {
  const auto start = std::chrono::steady_clock::now();
  const double flops = dpo::measure_matmul_peak_flops("cpu", at::kFloat, 0.05);
  CHECK(std::isfinite(flops));
  CHECK(flops > 1e6);
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 5.0);
  CHECK(dpo::peak_memory_mib("cpu") > 0);
}

TEST_CASE("bench times DPO steps of the configured shape and reports a sane MFU", "[bench]") {
  const ScratchDir scratch("bench");
  const fs::path& dir = scratch.path;
  dpo::save_model(*tiny_llama(64), (dir / "policy").string());

  const std::string yaml = "run: {output_dir: " + (dir / "run").string() + "}\nmodel: {policy: " +
                           (dir / "policy").string() + ", device: cpu}\n";
  const dpo::Config config = dpo::config_from_yaml_text(
      yaml, {"train.micro_batch_size=2", "train.global_batch_size=4", "data.max_length=16", "data.max_prompt_length=8"}, "bench.yaml");
  dpo::BenchOptions options;
  options.warmup_steps = 1;
  options.timed_steps = 1;
  const dpo::BenchResult result = dpo::run_bench(config, options, at::kCPU);

  CHECK(result.tokens_per_step == 2 * 4 * 16);
  CHECK(result.accumulation_steps == 2);
  CHECK(std::isfinite(result.tokens_per_s));
  CHECK(result.tokens_per_s > 0);
  CHECK(result.mfu > 0);
  CHECK(result.mfu <= 1.5);
  CHECK(std::abs(result.tokens_per_s * result.step_seconds - result.tokens_per_step) < 1e-6 * result.tokens_per_step);
  const std::string report = dpo::format_bench(result);
  CHECK_THAT(report, Catch::Contains("tokens/s"));
  CHECK_THAT(report, Catch::Contains("MFU"));
}
