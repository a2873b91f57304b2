#include "dpo/data/synthetic_task.h"

#include <algorithm>
#include <optional>
#include <random>
#include <unordered_set>


#include "dpo/error.h"

namespace dpo {

double synthetic_reward(const TokenIds& prompt, const TokenIds& response) {
  if (response.empty()) return 0.0;
  const std::unordered_set<int32_t> in_prompt(prompt.begin(), prompt.end());
  const auto hits = std::count_if(response.begin(), response.end(), [&](int32_t t) { return in_prompt.count(t) > 0; });
  return static_cast<double>(hits) / static_cast<double>(response.size());
}

std::vector<RawPreferencePair> make_synthetic_pairs(const SyntheticTaskOptions& o) {
  if (o.vocab_size < 16) fail("synthetic task: vocab_size must be at least 16, got {}", o.vocab_size);
  std::mt19937_64 rng(o.seed);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  auto random_token = [&] { return static_cast<int32_t>(uniform(1, o.vocab_size - 1)); };
  // Each response copies from the prompt at its own rate, so pairs range from easy to subtle.
  auto response_for = [&](const TokenIds& prompt) {
    const double copy_rate = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    TokenIds r(static_cast<size_t>(uniform(o.min_response_length, o.max_response_length)));
    for (auto& t : r)
      t = std::bernoulli_distribution(copy_rate)(rng) ? prompt[static_cast<size_t>(uniform(0, prompt.size() - 1))]
                                                      : random_token();
    return r;
  };
  // K responses of distinct rewards, best first; none when two tie (no strict order to learn).
  auto ranked_responses = [&](const TokenIds& prompt) -> std::optional<RawPreferencePair> {
    std::vector<std::pair<double, TokenIds>> scored;
    for (int64_t k = 0; k < o.responses; ++k) {
      TokenIds r = response_for(prompt);
      scored.emplace_back(synthetic_reward(prompt, r), std::move(r));
    }
    std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t k = 1; k < scored.size(); ++k)
      if (scored[k].first == scored[k - 1].first) return std::nullopt;
    RawPreferencePair ranked{prompt, std::move(scored[0].second), std::move(scored[1].second), {}};
    for (size_t k = 2; k < scored.size(); ++k) ranked.more_rejected.push_back(std::move(scored[k].second));
    return ranked;
  };
  std::vector<RawPreferencePair> pairs;
  pairs.reserve(static_cast<size_t>(o.pairs));
  while (static_cast<int64_t>(pairs.size()) < o.pairs) {
    TokenIds prompt(static_cast<size_t>(uniform(o.min_prompt_length, o.max_prompt_length)));
    for (auto& t : prompt) t = random_token();
    if (o.responses > 2) {
      if (auto ranked = ranked_responses(prompt)) pairs.push_back(std::move(*ranked));
      continue;
    }
    TokenIds a = response_for(prompt), b = response_for(prompt);
    const double ra = synthetic_reward(prompt, a), rb = synthetic_reward(prompt, b);
    if (ra == rb) continue;  // no preference to learn from
    if (ra > rb) pairs.push_back({prompt, a, b, {}});
    else pairs.push_back({prompt, b, a, {}});
  }
  return pairs;
}

}  // namespace dpo
