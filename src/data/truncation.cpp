// Truncation of one preference pair (README, "Data"; as TRL and the paper's code do it) and the count of
// response tokens that get a log-prob.
#include <algorithm>

#include "dpo/data/preference_data.h"
#include "dpo/error.h"

namespace dpo {

TruncationMode parse_truncation_mode(const std::string& name) {
  if (name == "keep_end") return TruncationMode::KeepEnd;
  if (name == "keep_start") return TruncationMode::KeepStart;
  fail("data.truncation: unknown mode '{}' (expected keep_end or keep_start)", name);
}

ResponseBudget parse_response_budget(const std::string& name) {
  if (name == "remaining") return ResponseBudget::Remaining;
  if (name == "paper") return ResponseBudget::Paper;
  fail("data.response_budget: unknown rule '{}' (expected remaining or paper)", name);
}

TruncatedPair truncate_pair(const RawPreferencePair& pair, const TruncationRule& rule) {
  TruncatedPair out{pair, false};
  TokenIds& prompt = out.pair.prompt;
  TokenIds& chosen = out.pair.chosen;
  TokenIds& rejected = out.pair.rejected;
  const auto longest_response = [&] {
    size_t longest = std::max(chosen.size(), rejected.size());
    for (const TokenIds& more : out.pair.more_rejected) longest = std::max(longest, more.size());
    return longest;
  };
  const auto too_long = [&] { return static_cast<int64_t>(prompt.size() + longest_response()) > rule.max_length; };
  if (!too_long()) return out;

  const auto max_prompt = static_cast<size_t>(std::max<int64_t>(rule.max_prompt_length, 0));
  if (prompt.size() > max_prompt) {
    if (rule.mode == TruncationMode::KeepEnd) {
      prompt.erase(prompt.begin(), prompt.end() - static_cast<std::ptrdiff_t>(max_prompt));
    } else {
      prompt.resize(max_prompt);
    }
  }
  if (too_long()) {
    // Every response is cut to the same budget; a prompt longer than max_length leaves none. The
    // paper's code (preference_datasets.py, tokenize_batch_element) and TRL's tokenize_row before
    // 2026 cut to max_length - max_prompt_length even when the prompt is shorter than that.
    const int64_t used = rule.budget == ResponseBudget::Paper ? rule.max_prompt_length : static_cast<int64_t>(prompt.size());
    const auto budget = static_cast<size_t>(std::max<int64_t>(rule.max_length - used, 0));
    if (chosen.size() > budget) chosen.resize(budget);
    if (rejected.size() > budget) rejected.resize(budget);
    for (TokenIds& more : out.pair.more_rejected)
      if (more.size() > budget) more.resize(budget);
  }
  out.truncated = prompt.size() != pair.prompt.size() || chosen.size() != pair.chosen.size() ||
                  rejected.size() != pair.rejected.size();
  for (size_t k = 0; k < pair.more_rejected.size(); ++k)
    out.truncated = out.truncated || out.pair.more_rejected[k].size() != pair.more_rejected[k].size();
  return out;
}

int64_t scored_token_count(size_t prompt_length, size_t response_length) {
  const auto r = static_cast<int64_t>(response_length);
  // The first token of a sequence has nothing before it to predict it from.
  return prompt_length >= 1 ? r : std::max<int64_t>(r - 1, 0);
}

TruncationRule truncation_rule(const DataOptions& data) {
  return {data.max_length, data.max_prompt_length, parse_truncation_mode(data.truncation),
          parse_response_budget(data.response_budget)};
}

}  // namespace dpo
