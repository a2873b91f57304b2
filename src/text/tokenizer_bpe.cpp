// The BPE model of tokenizer.json, as Hugging Face's models/bpe: characters (or their <0xXX>
// bytes, or unk) merged pairwise, lowest merge rank first, leftmost first among equals.
#include <algorithm>
#include <queue>

#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/text/tokenizer_components.h"
#include "dpo/text/tokenizer_unicode.h"

namespace dpo {

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// A merge's two halves: "a b" strings (split at the one space) or ["a", "b"] pairs.
std::pair<std::string, std::string> merge_halves(const nlohmann::json& merge, const std::string& where) {
  if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string())
    return {merge[0].get<std::string>(), merge[1].get<std::string>()};
  if (merge.is_string()) {
    const auto& text = merge.get_ref<const std::string&>();
    auto space = text.find(' ');
    if (space != std::string::npos && text.find(' ', space + 1) == std::string::npos)
      return {text.substr(0, space), text.substr(space + 1)};
  }
  fail("{}: a merge must be \"a b\" or [\"a\", \"b\"], not {}", where, merge.dump());
}

// Words this long are not cached: the cache is for the many repeats of ordinary words.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 18;

}  // namespace

BpeModel::BpeModel(const nlohmann::json& spec, const std::string& where) {
  auto dropout = optional_key<double>(spec, "dropout", 0.0, where);
  if (dropout != 0.0) fail("{}: key 'dropout' ({}) is not supported: encoding would not be deterministic", where, dropout);
  const auto& vocab = required_key(spec, "vocab", where);
  if (!vocab.is_object()) fail("{}: key 'vocab' must be an object", where);
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      fail("{}: vocab: token '{}' has id {}, not an integer id", where, token, id.dump());
    auto index = id.get<int32_t>();
    vocab_[token] = index;
    if (tokens_.size() <= static_cast<size_t>(index)) tokens_.resize(index + 1);
    tokens_[index] = token;
  }
  prefix_ = optional_key<std::string>(spec, "continuing_subword_prefix", "", where);
  suffix_ = optional_key<std::string>(spec, "end_of_word_suffix", "", where);
  byte_fallback_ = optional_key<bool>(spec, "byte_fallback", false, where);
  fuse_unk_ = optional_key<bool>(spec, "fuse_unk", false, where);
  ignore_merges_ = optional_key<bool>(spec, "ignore_merges", false, where);
  auto unk = optional_key<std::string>(spec, "unk_token", "", where);
  if (!unk.empty()) {
    auto it = vocab_.find(unk);
    if (it == vocab_.end()) fail("{}: unk_token '{}' is not in the vocab", where, unk);
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  read_merges(required_key(spec, "merges", where), where + ".merges");
}

void BpeModel::read_merges(const nlohmann::json& merges, const std::string& where) {
  if (!merges.is_array()) fail("{}: must be a list", where);
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    auto [left, right] = merge_halves(merges[rank], fmt::format("{}[{}]", where, rank));
    auto left_id = vocab_.find(left), right_id = vocab_.find(right);
    std::string joined = left + (right.compare(0, prefix_.size(), prefix_) == 0 ? right.substr(prefix_.size()) : right);
    auto joined_id = vocab_.find(joined);
    if (left_id == vocab_.end() || right_id == vocab_.end() || joined_id == vocab_.end())
      fail("{}[{}]: merge '{} {}' names a token that is not in the vocab", where, rank, left, right);
    merges_.emplace(pair_key(left_id->second, right_id->second),
                    Merge{static_cast<int32_t>(rank), joined_id->second});  // the first of duplicates wins, as in HF
  }
}

// One symbol per character: its token (with the subword prefix / word suffix), else its
// <0xXX> byte tokens, else unk (consecutive unks fused when fuse_unk), else nothing.
void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  bool last_was_unk = false;
  std::string symbol;
  for (size_t at = 0; at < word.size();) {
    size_t length = utf8_length(static_cast<unsigned char>(word[at]));
    length = std::min(length, word.size() - at);
    symbol.assign(at == 0 ? "" : prefix_).append(word.substr(at, length));
    if (at + length == word.size()) symbol += suffix_;
    auto it = vocab_.find(symbol);
    bool all_bytes = byte_fallback_;
    for (size_t i = 0; all_bytes && i < length; ++i) all_bytes = byte_ids_[static_cast<unsigned char>(word[at + i])] >= 0;
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      last_was_unk = false;
    } else if (all_bytes) {
      for (size_t i = 0; i < length; ++i) ids.push_back(byte_ids_[static_cast<unsigned char>(word[at + i])]);
      last_was_unk = false;
    } else if (unk_id_) {
      if (!(fuse_unk_ && last_was_unk)) ids.push_back(*unk_id_);
      last_was_unk = true;
    }
    at += length;
  }
}

// Hugging Face's Word::merge_all: a queue of mergeable neighbours ordered by (rank, position);
// an entry whose pair has changed since it was queued is skipped.
void BpeModel::merge_symbols(std::vector<int32_t>& ids) const {
  struct Candidate {
    int32_t rank, position, new_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  const int32_t n = static_cast<int32_t>(ids.size());
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> removed(n, false);
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto offer = [&](int32_t position) {
    if (next[position] >= n) return;
    auto it = merges_.find(pair_key(ids[position], ids[next[position]]));
    if (it != merges_.end()) queue.push({it->second.rank, position, it->second.new_id});
  };
  for (int32_t i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1;
  for (int32_t i = 0; i + 1 < n; ++i) offer(i);
  while (!queue.empty()) {
    auto top = queue.top();
    queue.pop();
    if (removed[top.position] || next[top.position] >= n) continue;
    int32_t right = next[top.position];
    auto it = merges_.find(pair_key(ids[top.position], ids[right]));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    ids[top.position] = top.new_id;
    removed[right] = true;
    next[top.position] = next[right];
    if (next[right] < n) prev[next[right]] = top.position;
    if (prev[top.position] >= 0) offer(prev[top.position]);
    offer(top.position);
  }
  int32_t kept = 0;
  for (int32_t i = 0; i < n; ++i)
    if (!removed[i]) ids[kept++] = ids[i];
  ids.resize(kept);
}

void BpeModel::tokenize(std::string_view word, std::vector<int64_t>& ids) const {
  if (word.empty()) return;
  std::string key(word);
  if (ignore_merges_) {
    auto whole = vocab_.find(key);
    if (whole != vocab_.end()) return ids.push_back(whole->second);
  }
  bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto hit = cache_.find(key);
    if (hit != cache_.end()) return ids.insert(ids.end(), hit->second.begin(), hit->second.end()), void();
  }
  std::vector<int32_t> symbols;
  initial_symbols(word, symbols);
  merge_symbols(symbols);
  ids.insert(ids.end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::move(key), std::move(symbols));
  }
}

std::optional<int64_t> BpeModel::token_to_id(const std::string& token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(tokens_.size()) || tokens_[id].empty()) return nullptr;
  return &tokens_[id];
}

}  // namespace dpo
