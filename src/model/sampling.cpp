#include "dpo/model/sampling.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "dpo/error.h"

namespace dpo {

namespace {

constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();

void check_options(const SamplingOptions& options, int64_t vocab_size) {
  if (options.max_new_tokens < 0) fail("sampling: max_new_tokens must be >= 0, got {}", options.max_new_tokens);
  if (!(options.temperature >= 0)) fail("sampling: temperature must be >= 0, got {}", options.temperature);
  if (!(options.top_p > 0 && options.top_p <= 1)) fail("sampling: top_p must be in (0, 1], got {}", options.top_p);
  for (const auto* ids : {&options.stop_ids, &options.banned_ids})
    for (int64_t id : *ids)
      if (id < 0 || id >= vocab_size)
        fail("sampling: {} id {} is outside the model's vocabulary (vocab_size {})",
             ids == &options.stop_ids ? "stop" : "banned", id, vocab_size);
}

void check_prompt(const TokenIds& prompt, size_t index, const ModelSpec& spec, int64_t max_new_tokens) {
  if (prompt.empty()) fail("sampling: prompt {} is empty", index);
  for (int32_t id : prompt)
    if (id < 0 || id >= spec.vocab_size)
      fail("sampling: prompt {} has token id {} outside the model's vocabulary (vocab_size {})", index, id, spec.vocab_size);
  const int64_t length = static_cast<int64_t>(prompt.size()) + max_new_tokens;
  if (spec.max_position_embeddings > 0 && length > spec.max_position_embeddings)
    fail("sampling: prompt {} ({} tokens) + {} new tokens exceeds max_position_embeddings {}", index, prompt.size(),
         max_new_tokens, spec.max_position_embeddings);
}

// The next token from the last position's logits (float32, on the CPU, banned ids already -inf).
int64_t pick_token(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator) {
  if (options.temperature == 0) return logits.argmax().item<int64_t>();
  const at::Tensor warped = nucleus_filter(logits / options.temperature, options.top_p);
  const at::Tensor probs = at::softmax(warped, -1);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

Generation generate_one(CausalLMImpl& model, const TokenIds& prompt, const SamplingOptions& options,
                        const at::Tensor& banned, at::Generator& generator) {
  const at::Device device = model.device();
  std::vector<int64_t> sequence(prompt.begin(), prompt.end());
  Generation generation;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    // No KV cache: the whole sequence again each step (the models here are small).
    const at::Tensor input = at::tensor(sequence, at::kLong).unsqueeze(0).to(device);
    at::Tensor logits = model.forward(input).select(0, 0).select(0, -1).to(at::kCPU, at::kFloat);
    if (banned.numel() > 0) logits.index_fill_(0, banned, kMinusInfinity);
    const int64_t token = pick_token(logits, options, generator);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) != options.stop_ids.end()) {
      generation.finish_reason = FinishReason::Stop;
      return generation;
    }
    sequence.push_back(token);
    generation.ids.push_back(static_cast<int32_t>(token));
  }
  generation.finish_reason = FinishReason::Length;
  return generation;
}

}  // namespace

const char* finish_reason_name(FinishReason reason) { return reason == FinishReason::Stop ? "stop" : "length"; }

at::Tensor nucleus_filter(const at::Tensor& logits, double top_p) {
  if (top_p >= 1) return logits;
  if (!(top_p > 0)) fail("sampling: top_p must be in (0, 1], got {}", top_p);
  if (logits.dim() != 1) fail("sampling: nucleus_filter takes one row of logits, got {} dimensions", logits.dim());
  // Double precision, so that a nucleus whose mass is exactly top_p on paper is not cut by float
  // rounding more often than it must be; ties keep the lower id first (a stable sort).
  const at::Tensor probs = at::softmax(logits.to(at::kDouble), -1);
  const auto sorted = probs.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true);
  const at::Tensor& sorted_probs = std::get<0>(sorted);
  const at::Tensor& order = std::get<1>(sorted);
  // The mass of the tokens more probable than each one: it is dropped once that mass reaches
  // top_p (the most probable token has mass 0 before it, so it always stays).
  const at::Tensor mass_before = sorted_probs.cumsum(-1) - sorted_probs;
  const at::Tensor drop_sorted = mass_before >= top_p;
  const at::Tensor drop = at::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
  return logits.masked_fill(drop, kMinusInfinity);
}

std::vector<Generation> generate(CausalLMImpl& model, const std::vector<TokenIds>& prompts, const SamplingOptions& options) {
  const ModelSpec& spec = model.spec();
  check_options(options, spec.vocab_size);
  for (size_t p = 0; p < prompts.size(); ++p) check_prompt(prompts[p], p, spec, options.max_new_tokens);
  c10::InferenceMode no_autograd;
  // One generator for all prompts, drawn from in order, on the CPU: the same samples for a seed
  // whatever the device.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const at::Tensor banned = at::tensor(options.banned_ids, at::kLong);
  std::vector<Generation> generations;
  generations.reserve(prompts.size());
  for (const TokenIds& prompt : prompts) generations.push_back(generate_one(model, prompt, options, banned, generator));
  return generations;
}

std::vector<TokenIds> sample_responses(CausalLMImpl& model, const std::vector<TokenIds>& prompts,
                                       int64_t max_new_tokens, double temperature, uint64_t seed) {
  SamplingOptions options;
  options.max_new_tokens = max_new_tokens;
  options.temperature = temperature;
  options.seed = seed;
  options.banned_ids = {0};  // the synthetic task's padding id is never a token
  std::vector<TokenIds> responses;
  for (Generation& generation : generate(model, prompts, options)) responses.push_back(std::move(generation.ids));
  return responses;
}

}  // namespace dpo
