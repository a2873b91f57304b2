// Hugging Face tokenizer.json in C++: the BPE model with its added tokens, normalizers,
// pre-tokenizers, post-processors and decoders, checked against Hugging Face's own `tokenizers`
// (tests/text/test_tokenizer_goldens.cpp). Plain C++17 (no libtorch): regexes through PCRE2,
// Unicode normalization through utf8proc. What it does not own: chat templates
// (chat_template.h) and turning rows of text into preference examples (data/).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dpo {

struct TokenizerPipeline;  // tokenizer_components.h

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json, or the file itself when given one. A malformed file, a missing
  // key or a component type that is not supported is an error naming the file and the key.
  static Tokenizer load(const std::filesystem::path& dir_or_tokenizer_json);
  // The same from a parsed tokenizer.json; `source` names it in errors.
  static Tokenizer from_json(const nlohmann::json& spec, const std::string& source, std::string fingerprint);

  // The ids of `text` (valid UTF-8, else an error), as Hugging Face's Tokenizer.encode; with
  // `add_special_tokens` the post-processor adds its tokens (BOS, ...).
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens) const;
  // The text of `ids` as Hugging Face's Tokenizer.decode; an id the tokenizer does not know is
  // skipped, as there.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;
  // The id of a token (an added token first, then the model's vocabulary).
  std::optional<int64_t> token_to_id(std::string_view token) const;
  // The token of an id, nullopt when there is none.
  std::optional<std::string> id_to_token(int64_t id) const;
  // One more than the highest id (model vocabulary and added tokens): every id is below it.
  int64_t vocab_size() const;
  // A hash of the tokenizer.json bytes ("fnv1a64:<16 hex digits>"), for provenance checks.
  std::string fingerprint() const;
  // The same hash of a tokenizer.json (or DIR/tokenizer.json) without loading it.
  static std::string file_fingerprint(const std::filesystem::path& dir_or_tokenizer_json);

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerPipeline> pipeline) : pipeline_(std::move(pipeline)) {}
  std::shared_ptr<const TokenizerPipeline> pipeline_;
};

}  // namespace dpo
