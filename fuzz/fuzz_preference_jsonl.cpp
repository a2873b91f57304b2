// libFuzzer harness: the pre-tokenized JSONL preference reader (read_preference_jsonl from a
// stream) and truncation of what it accepts.
//
// Input: the JSONL text, with its last bytes (when there are enough) taken as the vocabulary size
// and a truncation rule inside the range the config validation allows (0 < max_prompt_length <
// max_length). Accepted records must hold ids inside [0, vocab) and non-empty responses;
// truncated pairs must fit max_length. dpo::Error is the expected refusal; any other exception
// escapes and libFuzzer reports it.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "dpo/data/preference_data.h"
#include "dpo/error.h"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_preference_jsonl: accepted data breaks its contract: %s\n", what);
  std::abort();
}

void check_ids(const dpo::TokenIds& ids, int64_t vocab_size) {
  for (const int32_t id : ids) {
    if (id < 0 || (vocab_size > 0 && id >= vocab_size)) broken("a token id outside the vocabulary");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider provider(data, size);
  // The parameters come from the input's end (FuzzedDataProvider reads integers from there), so
  // a plain JSONL seed keeps its text intact except for the last few bytes.
  int64_t vocab_size = -1;
  dpo::TruncationRule rule;
  if (size > 64) {
    const uint8_t vocab_choice = provider.ConsumeIntegral<uint8_t>();
    vocab_size = vocab_choice < 128 ? -1 : provider.ConsumeIntegralInRange<int64_t>(1, 1 << 17);
    rule.max_length = provider.ConsumeIntegralInRange<int64_t>(2, 4096);
    rule.max_prompt_length = provider.ConsumeIntegralInRange<int64_t>(1, rule.max_length - 1);
    rule.mode = provider.ConsumeBool() ? dpo::TruncationMode::KeepEnd : dpo::TruncationMode::KeepStart;
  }
  std::istringstream text(provider.ConsumeRemainingBytesAsString());
  try {
    const std::vector<dpo::RawPreferencePair> pairs = dpo::read_preference_jsonl(text, "fuzz.jsonl", vocab_size);
    if (pairs.empty()) broken("no records but no error");
    for (const auto& pair : pairs) {
      check_ids(pair.prompt, vocab_size);
      check_ids(pair.chosen, vocab_size);
      check_ids(pair.rejected, vocab_size);
      if (pair.chosen.empty() || pair.rejected.empty()) broken("an empty response");
      const dpo::TruncatedPair t = dpo::truncate_pair(pair, rule);
      const auto& p = t.pair;
      const size_t longest = std::max(p.chosen.size(), p.rejected.size());
      if (static_cast<int64_t>(p.prompt.size() + longest) > rule.max_length) broken("truncated pair too long");
      if (t.truncated != (p.prompt.size() != pair.prompt.size() || p.chosen.size() != pair.chosen.size() ||
                          p.rejected.size() != pair.rejected.size()))
        broken("the truncated flag disagrees with what was cut");
      if (dpo::scored_token_count(p.prompt.size(), p.chosen.size()) > static_cast<int64_t>(p.chosen.size()))
        broken("more scored tokens than response tokens");
    }
  } catch (const dpo::Error&) {
    // the expected refusal of bad data
  }
  return 0;
}
