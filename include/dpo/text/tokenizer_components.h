// The stages of a tokenizer.json pipeline, each built from its JSON by a factory that refuses a
// type it does not support by name. Hugging Face's order: added tokens are split out of the raw
// text, each remaining segment is normalized (then normalized added tokens split out), pre-
// tokenized into pieces, each piece run through the BPE model; the post-processor adds special
// tokens. Decoding maps ids to tokens and runs the decoder chain over them.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "dpo/error.h"
#include "dpo/text/tokenizer_unicode.h"

namespace dpo {

// A piece of text between pre-tokenizers; `at_text_start` says it begins at offset 0 of the
// original text (Metaspace's prepend_scheme "first" asks).
struct TextPiece {
  std::string text;
  bool at_text_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<TextPiece>& pieces) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int64_t>& ids, bool add_special_tokens) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Hugging Face's decode_chain: tokens in, tokens out (joined by the caller).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// `where` names the file and key in errors ("tokenizer.json: pre_tokenizer.pretokenizers[1]").
// A JSON null gives nullptr (no such stage).
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& spec, const std::string& where);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& spec, const std::string& where);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& spec, const std::string& where);

// The key `key` of object `spec`, an error "<where>: key '<key>' is missing" without it.
const nlohmann::json& required_key(const nlohmann::json& spec, const char* key, const std::string& where);
// spec[key] as T when present and not null, else `fallback`; a value of another type is an error.
template <typename T>
T optional_key(const nlohmann::json& spec, const char* key, T fallback, const std::string& where) {
  auto it = spec.find(key);
  if (it == spec.end() || it->is_null()) return fallback;
  try {
    return it->template get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: key '{}' has the wrong type", where, key);
  }
}

// The steps of a Sequence component: each entry of the list spec[key] made by `make` (one of the
// factories above), named "<where>.<key>[i]" in errors.
template <typename Make>
auto sequence_steps(const nlohmann::json& spec, const char* key, const std::string& where, Make make) {
  const nlohmann::json& list = required_key(spec, key, where);
  std::vector<decltype(make(list, where))> steps;
  for (size_t i = 0; i < list.size(); ++i) steps.push_back(make(list[i], fmt::format("{}.{}[{}]", where, key, i)));
  return steps;
}

// Replace's {"String": s} or {"Regex": r} pattern and its content (normalizer and decoder).
class TextReplacement {
 public:
  TextReplacement(const nlohmann::json& spec, const std::string& where);
  std::string apply(const std::string& text) const;

 private:
  std::string literal_, content_;
  std::unique_ptr<Regex> regex_;
};

// The BPE model: vocabulary, merge ranks, byte_fallback, unk (fused or not), ignore_merges,
// continuing_subword_prefix / end_of_word_suffix. Words are merged lowest rank first with a
// priority queue, and cached.
class BpeModel {
 public:
  BpeModel(const nlohmann::json& spec, const std::string& where);
  void tokenize(std::string_view word, std::vector<int64_t>& ids) const;
  std::optional<int64_t> token_to_id(const std::string& token) const;
  const std::string* id_to_token(int64_t id) const;
  int64_t max_id() const { return static_cast<int64_t>(tokens_.size()) - 1; }
  int64_t vocab_count() const { return static_cast<int64_t>(vocab_.size()); }

 private:
  struct Merge { int32_t rank, new_id; };
  void read_merges(const nlohmann::json& merges, const std::string& where);
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_symbols(std::vector<int32_t>& ids) const;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> tokens_;  // by id; "" where the vocabulary has a gap
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  std::string prefix_, suffix_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> tokens, -1 when absent
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false, normalized = false, lstrip = false, rstrip = false, single_word = false;
};

// A stretch of text: [begin, end) in the string it was split from, with the added token's id
// when it is one.
struct TextSegment {
  size_t begin = 0, end = 0;
  std::optional<int64_t> token_id;
};

// The added tokens, matched leftmost-longest (as Hugging Face's Aho-Corasick) in the raw text
// (normalized: false) or in the normalized segments (normalized: true), honouring single_word,
// lstrip and rstrip.
class AddedVocabulary {
 public:
  AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer);
  std::vector<TextSegment> split(std::string_view text, bool normalized_tokens) const;
  const AddedToken* by_id(int64_t id) const;
  std::optional<int64_t> id_of(const std::string& content) const;
  int64_t max_id() const;

 private:
  struct TrieNode {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token = -1;  // index into tokens_
  };
  void insert(std::vector<TrieNode>& trie, const std::string& key, int32_t token);
  std::optional<std::pair<size_t, int32_t>> longest_match(const std::vector<TrieNode>& trie, std::string_view text,
                                                          size_t at) const;
  std::vector<AddedToken> tokens_;
  std::vector<TrieNode> raw_trie_, normalized_trie_;
  std::unordered_map<int64_t, size_t> index_of_id_;
};

struct TokenizerPipeline {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::unique_ptr<AddedVocabulary> added;
  std::string fingerprint;
};

}  // namespace dpo
