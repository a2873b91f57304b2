// Added tokens, split out of text before the model sees it, as Hugging Face's AddedVocabulary:
// leftmost-longest matches, single_word tokens only between non-word characters, lstrip / rstrip
// taking the whitespace beside the token with it.
#include <algorithm>

#include "dpo/text/tokenizer_components.h"
#include "dpo/text/tokenizer_unicode.h"

namespace dpo {

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer) : tokens_(std::move(tokens)) {
  raw_trie_.emplace_back();
  normalized_trie_.emplace_back();
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const auto& token = tokens_[i];
    index_of_id_[token.id] = i;
    if (token.content.empty()) continue;
    if (!token.normalized || !normalizer) {
      insert(token.normalized ? normalized_trie_ : raw_trie_, token.content, static_cast<int32_t>(i));
      continue;
    }
    std::string content = token.content;
    normalizer->normalize(content);
    insert(normalized_trie_, content, static_cast<int32_t>(i));
  }
}

void AddedVocabulary::insert(std::vector<TrieNode>& trie, const std::string& key, int32_t token) {
  int32_t node = 0;
  for (unsigned char byte : key) {
    auto& children = trie[node].children;
    auto it = std::find_if(children.begin(), children.end(), [&](const auto& child) { return child.first == byte; });
    if (it != children.end()) {
      node = it->second;
      continue;
    }
    int32_t next = static_cast<int32_t>(trie.size());
    trie[node].children.emplace_back(byte, next);
    trie.emplace_back();
    node = next;
  }
  if (trie[node].token < 0) trie[node].token = token;  // the first of two equal contents wins
}

std::optional<std::pair<size_t, int32_t>> AddedVocabulary::longest_match(const std::vector<TrieNode>& trie,
                                                                       std::string_view text, size_t at) const {
  std::optional<std::pair<size_t, int32_t>> best;
  int32_t node = 0;
  for (size_t i = at; i < text.size(); ++i) {
    const auto& children = trie[node].children;
    auto byte = static_cast<unsigned char>(text[i]);
    auto it = std::find_if(children.begin(), children.end(), [&](const auto& child) { return child.first == byte; });
    if (it == children.end()) break;
    node = it->second;
    if (trie[node].token >= 0) best = std::make_pair(i + 1, trie[node].token);
  }
  return best;
}

namespace {

bool ends_with_word(std::string_view text) {
  if (text.empty()) return false;
  size_t start = text.size() - 1, length = 0;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return is_word_char(code_point_at(text, start, &length));
}

bool starts_with_word(std::string_view text) {
  size_t length = 0;
  return !text.empty() && is_word_char(code_point_at(text, 0, &length));
}

// Where the whitespace run that ends at `end` begins.
size_t whitespace_before(std::string_view text, size_t end) {
  size_t length = 0;
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    if (!is_rust_whitespace(code_point_at(text, start, &length))) break;
    end = start;
  }
  return end;
}

size_t whitespace_after(std::string_view text, size_t begin) {
  size_t length = 0;
  while (begin < text.size() && is_rust_whitespace(code_point_at(text, begin, &length))) begin += length;
  return begin;
}

}  // namespace

std::vector<TextSegment> AddedVocabulary::split(std::string_view text, bool normalized_tokens) const {
  const auto& trie = normalized_tokens ? normalized_trie_ : raw_trie_;
  std::vector<TextSegment> segments;
  size_t emitted = 0;
  for (size_t at = 0; at < text.size() && !trie[0].children.empty();) {
    auto match = longest_match(trie, text, at);
    if (!match) {
      ++at;
      continue;
    }
    size_t begin = at, end = match->first;
    at = end;
    const auto& token = tokens_[match->second];
    if (token.single_word && (ends_with_word(text.substr(0, begin)) || starts_with_word(text.substr(end)))) continue;
    if (token.lstrip) begin = std::max(whitespace_before(text, begin), emitted);
    if (token.rstrip) end = whitespace_after(text, end);
    if (emitted < begin) segments.push_back({emitted, begin, std::nullopt});
    segments.push_back({begin, end, token.id});
    emitted = end;
  }
  if (emitted < text.size() || segments.empty()) segments.push_back({emitted, text.size(), std::nullopt});
  return segments;
}

const AddedToken* AddedVocabulary::by_id(int64_t id) const {
  auto it = index_of_id_.find(id);
  return it == index_of_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int64_t> AddedVocabulary::id_of(const std::string& content) const {
  for (const auto& token : tokens_)
    if (token.content == content) return token.id;
  return std::nullopt;
}

int64_t AddedVocabulary::max_id() const {
  int64_t highest = -1;
  for (const auto& token : tokens_) highest = std::max(highest, token.id);
  return highest;
}

}  // namespace dpo
