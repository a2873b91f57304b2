// Loading a preference dataset: format detection, truncation, skipping of pairs left without a
// scored response token, the counts reported to the user, and `dpo inspect`'s description.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>

#include "dpo/data/preference_data.h"
#include "dpo/error.h"

namespace dpo {
namespace {

int64_t max_id(const TokenIds& ids, int64_t current) {
  for (const int32_t id : ids) current = std::max<int64_t>(current, id);
  return current;
}

}  // namespace

bool is_hdf5_file(const std::string& path) {
  static const char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  std::ifstream in(path, std::ios::binary);
  char head[8] = {};
  return in.read(head, sizeof head) && std::memcmp(head, kSignature, sizeof head) == 0;
}

std::string TokenizationId::key() const {
  if (empty()) return "";
  return fmt::format("tokenizer={};chat_template={};eos={};boundary_mismatch={}", tokenizer_fingerprint,
                     chat_template_fingerprint, eos_token, boundary_mismatch);
}

std::string TokenizationId::describe() const {
  if (empty()) return "token ids as given";
  std::string out = fmt::format("tokenizer {} ({})", tokenizer, tokenizer_fingerprint);
  if (!chat_template_fingerprint.empty()) out += fmt::format(", chat template {}", chat_template_fingerprint);
  if (!eos_token.empty()) out += fmt::format(", EOS '{}'", eos_token);
  return out + fmt::format(", boundary_mismatch {}", boundary_mismatch);
}

std::vector<RawPreferencePair> read_preference_file(const std::string& path, int64_t vocab_size) {
  return is_hdf5_file(path) ? read_preference_hdf5(path, vocab_size)
                                          : read_preference_jsonl(path, vocab_size);
}

PreferenceDataset PreferenceDataset::load(const std::string& path, const TruncationRule& rule, int64_t vocab_size) {
  return from_pairs(path, read_preference_file(path, vocab_size), rule, "", TokenizationId{});
}

PreferenceDataset PreferenceDataset::from_pairs(const std::string& path, std::vector<RawPreferencePair> raw,
                                                const TruncationRule& rule, std::string origin,
                                                TokenizationId tokenization) {
  PreferenceDataset data;
  data.path_ = path;
  data.origin_ = std::move(origin);
  data.tokenization_ = std::move(tokenization);
  DataSummary& s = data.summary_;
  s.records = static_cast<int64_t>(raw.size());
  data.examples_.reserve(raw.size());
  data.source_index_.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    TruncatedPair t = truncate_pair(raw[i], rule);
    raw[i] = RawPreferencePair{};  // keep peak memory near one copy of the data
    const RawPreferencePair& p = t.pair;
    const auto unscored = [&](const TokenIds& response) { return scored_token_count(p.prompt.size(), response.size()) == 0; };
    if (unscored(p.chosen) || unscored(p.rejected) || std::any_of(p.more_rejected.begin(), p.more_rejected.end(), unscored)) {
      ++s.skipped;
      continue;
    }
    if (!p.more_rejected.empty()) {
      ++s.ranked;
      s.max_responses = std::max<int64_t>(s.max_responses, static_cast<int64_t>(p.responses()));
    }
    s.truncated += t.truncated ? 1 : 0;
    s.identical += p.chosen == p.rejected ? 1 : 0;
    s.prompt_tokens += static_cast<int64_t>(p.prompt.size());
    s.chosen_tokens += static_cast<int64_t>(p.chosen.size());
    s.rejected_tokens += static_cast<int64_t>(p.rejected.size());
    s.max_token_id = max_id(p.rejected, max_id(p.chosen, max_id(p.prompt, s.max_token_id)));
    for (const TokenIds& more : p.more_rejected) s.max_token_id = max_id(more, s.max_token_id);
    data.examples_.push_back(std::move(t.pair));
    data.source_index_.push_back(static_cast<int64_t>(i));
  }
  s.examples = static_cast<int64_t>(data.examples_.size());
  if (s.examples == 0) {
    fail("{}: no usable pairs: each of the {} pairs has a response with no scored token after truncation (max_length {}, "
         "max_prompt_length {})",
         path, s.records, rule.max_length, rule.max_prompt_length);
  }
  return data;
}

std::string PreferenceDataset::summary_line() const {
  const DataSummary& s = summary_;
  const std::string ranked =
      s.ranked == 0 ? "" : fmt::format(", {} ranked (up to {} responses)", s.ranked, s.max_responses);
  return fmt::format("{}: {}{} pairs read, {} used{}, {} truncated, {} skipped (a response left with no scored "
                     "token after truncation), {} with chosen == rejected",
                     path_, origin_.empty() ? "" : origin_ + "; ", s.records, s.examples, ranked, s.truncated,
                     s.skipped, s.identical);
}

std::string describe_preference_file(const std::string& path) {
  const bool hdf5 = is_hdf5_file(path);
  const std::vector<RawPreferencePair> pairs = hdf5 ? read_preference_hdf5(path) : read_preference_jsonl(path);
  std::string out = fmt::format("{}: preference data ({}), {} records\n", path, hdf5 ? "HDF5" : "JSONL", pairs.size());
  const TokenizationId tokenization = hdf5 ? read_preference_hdf5_tokenization(path) : TokenizationId{};
  if (!tokenization.empty()) out += fmt::format("  tokenized with   {}\n", tokenization.describe());
  const char* names[3] = {"prompt", "chosen", "rejected"};
  const TokenIds RawPreferencePair::*members[3] = {&RawPreferencePair::prompt, &RawPreferencePair::chosen,
                                                   &RawPreferencePair::rejected};
  int64_t largest = -1, identical = 0;
  for (int f = 0; f < 3; ++f) {
    size_t shortest = std::numeric_limits<size_t>::max(), longest = 0, total = 0;
    for (const auto& pair : pairs) {
      const TokenIds& ids = pair.*members[f];
      shortest = std::min(shortest, ids.size());
      longest = std::max(longest, ids.size());
      total += ids.size();
      largest = max_id(ids, largest);
    }
    out += fmt::format("  {:<9} tokens per record: min {}, mean {:.1f}, max {} ({} in all)\n",
                       std::string(names[f]) + ":", shortest,
                       static_cast<double>(total) / static_cast<double>(pairs.size()), longest, total);
  }
  size_t ranked = 0, most = 2;
  for (const auto& pair : pairs) {
    identical += pair.chosen == pair.rejected ? 1 : 0;
    ranked += pair.more_rejected.empty() ? 0 : 1;
    most = std::max(most, pair.responses());
    for (const TokenIds& more : pair.more_rejected) largest = max_id(more, largest);
  }
  if (ranked > 0)
    out += fmt::format("  ranked records (more than 2 responses, best first): {}, up to {} responses\n", ranked, most);
  out += fmt::format("  largest token id: {}\n", largest);
  out += fmt::format("  records with chosen == rejected: {}", identical);
  return out;
}

}  // namespace dpo
