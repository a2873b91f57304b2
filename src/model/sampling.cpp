#include "dpo/model/sampling.h"

#include <limits>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "dpo/error.h"

namespace dpo {

std::vector<TokenIds> sample_responses(CausalLMImpl& model, const std::vector<TokenIds>& prompts,
                                       int64_t max_new_tokens, double temperature, uint64_t seed) {
  if (max_new_tokens < 0) fail("sampling: max_new_tokens must be >= 0, got {}", max_new_tokens);
  if (temperature < 0) fail("sampling: temperature must be >= 0, got {}", temperature);
  c10::InferenceMode no_autograd;
  const at::Device device = model.device();
  const int64_t max_positions = model.spec().max_position_embeddings;
  // One generator for all prompts, drawn from in order, on the CPU: the same samples for a seed
  // whatever the device.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);

  std::vector<TokenIds> responses;
  responses.reserve(prompts.size());
  for (size_t p = 0; p < prompts.size(); ++p) {
    const TokenIds& prompt = prompts[p];
    if (prompt.empty()) fail("sampling: prompt {} is empty", p);
    const int64_t length = static_cast<int64_t>(prompt.size()) + max_new_tokens;
    if (max_positions > 0 && length > max_positions)
      fail("sampling: prompt {} ({} tokens) + {} new tokens exceeds max_position_embeddings {}", p,
           prompt.size(), max_new_tokens, max_positions);

    std::vector<int64_t> sequence(prompt.begin(), prompt.end());
    TokenIds response;
    for (int64_t step = 0; step < max_new_tokens; ++step) {
      // No KV cache: the whole sequence again each step (the models here are small).
      const at::Tensor input = at::tensor(sequence, at::kLong).unsqueeze(0).to(device);
      at::Tensor logits = model.forward(input).select(0, 0).select(0, -1).to(at::kCPU, at::kFloat);
      logits[0] = -std::numeric_limits<float>::infinity();  // the padding id is never a token
      int64_t token = 0;
      if (temperature == 0) {
        token = logits.argmax().item<int64_t>();
      } else {
        const at::Tensor probs = at::softmax(logits / temperature, -1);
        token = at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
      }
      sequence.push_back(token);
      response.push_back(static_cast<int32_t>(token));
    }
    responses.push_back(std::move(response));
  }
  return responses;
}

}  // namespace dpo
