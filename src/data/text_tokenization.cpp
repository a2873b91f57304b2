// Text preference files through the config's tokenizer, and the identity of that tokenization.
#include "dpo/data/text_tokenization.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/io/compressed_input.h"
#include "dpo/text/chat_template.h"
#include "dpo/text/tokenizer.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;

PreferenceFormat format_of_jsonl(const std::string& path) {
  const std::unique_ptr<std::istream> in = open_possibly_compressed(path);
  return detect_preference_format(*in, path);
}

// What a text file of `format` needs from the tokenizer directory, refused naming the key and file.
void require_tokenizer_files(const std::string& key, const std::string& path, PreferenceFormat format,
                             const Config& config) {
  const std::string dir = tokenizer_dir(config);
  if (!fs::is_regular_file(fs::path(dir) / "tokenizer.json"))
    fail("{}: {} holds text ({}) and needs a tokenizer, but {} {} has no tokenizer.json", key, path,
         preference_format_name(format), tokenizer_key(config), dir);
  if (!fs::is_regular_file(fs::path(dir) / "tokenizer_config.json"))
    fail("{}: {} holds text ({}) and needs {}'s tokenizer_config.json ({}), which {} lacks", key, path,
         preference_format_name(format), tokenizer_key(config),
         is_conversational(format) ? "its chat template" : "its eos_token", dir);
}

// The tokenizer (and chat template) a text file is tokenized with, behind TRL's two calls.
struct TextEncoder {
  TextEncoder(const std::string& dir, PreferenceFormat format, const std::string& key, const std::string& path)
      : tokenizer(Tokenizer::load(dir)) {
    if (is_conversational(format)) chat_template.emplace(ChatTemplate::from_tokenizer_config(dir));
    encoding.encode_text = [this](const std::string& text) { return tokenizer.encode(text, true); };
    encoding.encode_rendered = [this](const std::string& text) { return tokenizer.encode(text, false); };
    encoding.chat_template = chat_template ? &*chat_template : nullptr;
    if (!is_conversational(format)) {
      encoding.eos_token = special_token(dir, "eos_token");
      if (encoding.eos_token.empty())
        fail("{}: {} holds standard text, to whose responses TRL appends the EOS token, but {}/tokenizer_config.json "
             "sets no eos_token", key, path, dir);
    }
  }
  TextEncoder(const TextEncoder&) = delete;  // the encoding's functions point into this object
  TextEncoder& operator=(const TextEncoder&) = delete;

  // What the ids depend on: the tokenizer, and the chat template (conversational) or the EOS
  // string (standard), from what is loaded here (no file is read again).
  TokenizationId id(const std::string& dir, const std::string& boundary_mismatch) const {
    TokenizationId id;
    id.tokenizer = dir;
    id.tokenizer_fingerprint = tokenizer.fingerprint();
    if (chat_template) id.chat_template_fingerprint = chat_template->fingerprint();
    id.eos_token = encoding.eos_token;
    id.boundary_mismatch = boundary_mismatch;
    return id;
  }

  Tokenizer tokenizer;
  std::optional<ChatTemplate> chat_template;
  TextEncoding encoding;
};

// A prepared file must have been tokenized as this config would tokenize it (where the config's
// tokenizer directory has the files to tell).
void require_same_tokenizer(const std::string& key, const std::string& path, const TokenizationId& recorded,
                            const Config& config) {
  const std::string dir = tokenizer_dir(config);
  if (!fs::is_regular_file(fs::path(dir) / "tokenizer.json")) return;
  const std::string now = Tokenizer::file_fingerprint(dir);
  if (now != recorded.tokenizer_fingerprint)
    fail("{}: {} was tokenized with the tokenizer of {} (fingerprint {}), but {} {} has fingerprint {}: run dpo "
         "prepare-data again with this tokenizer, or set model.tokenizer to the one it was made with",
         key, path, recorded.tokenizer, recorded.tokenizer_fingerprint, tokenizer_key(config), dir, now);
  if (recorded.chat_template_fingerprint.empty() || !fs::is_regular_file(fs::path(dir) / "tokenizer_config.json")) return;
  const std::string template_now = ChatTemplate::from_tokenizer_config(dir).fingerprint();
  if (template_now != recorded.chat_template_fingerprint)
    fail("{}: {} was rendered with another chat template (fingerprint {}, from {}) than {} {} has ({}): run dpo "
         "prepare-data again", key, path, recorded.chat_template_fingerprint, recorded.tokenizer, tokenizer_key(config),
         dir, template_now);
}

}  // namespace

std::string tokenizer_dir(const Config& config) {
  return config.model.tokenizer.empty() ? config.model.policy : config.model.tokenizer;
}

std::string tokenizer_key(const Config& config) {
  return config.model.tokenizer.empty() ? "model.tokenizer (= model.policy)" : "model.tokenizer";
}

TokenizedRows tokenize_preference_rows(const std::string& key, const std::string& path, const Config& config,
                                       int64_t vocab_size, RowShare share) {
  const PreferenceFormat format = format_of_jsonl(path);
  const BoundaryMismatch on_mismatch = parse_boundary_mismatch(config.data.boundary_mismatch);
  TokenizedRows out;
  if (format == PreferenceFormat::PreTokenized) {
    const auto start = std::chrono::steady_clock::now();
    out.file = read_text_preferences(path, TextEncoding{}, on_mismatch, vocab_size, share);
    out.tokenize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return out;
  }
  require_tokenizer_files(key, path, format, config);
  const auto start = std::chrono::steady_clock::now();
  const TextEncoder encoder(tokenizer_dir(config), format, key, path);
  const auto loaded = std::chrono::steady_clock::now();
  out.file = read_text_preferences(path, encoder.encoding, on_mismatch, vocab_size, share);
  out.load_seconds = std::chrono::duration<double>(loaded - start).count();
  out.tokenize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - loaded).count();
  out.tokenization = encoder.id(tokenizer_dir(config), config.data.boundary_mismatch);
  return out;
}

PreferenceDataset load_preference_data(const std::string& key, const std::string& path, const Config& config,
                                       int64_t vocab_size) {
  const TruncationRule rule = truncation_rule(config.data);
  std::string origin;  // stays "" for ids that came as ids
  if (is_hdf5_file(path)) {
    TokenizationId recorded = read_preference_hdf5_tokenization(path);
    if (!recorded.empty()) {
      require_same_tokenizer(key, path, recorded, config);
      origin = fmt::format("prepared by dpo prepare-data with the tokenizer of {}", recorded.tokenizer);
    }
    return PreferenceDataset::from_pairs(path, read_preference_hdf5(path, vocab_size), rule, origin, std::move(recorded));
  }
  TokenizedRows rows = tokenize_preference_rows(key, path, config, vocab_size);
  if (!rows.tokenization.empty())
    origin = fmt::format("text tokenized by {}: {}", rows.tokenization.tokenizer,
                         text_preferences_summary(rows.file, parse_boundary_mismatch(config.data.boundary_mismatch)));
  return PreferenceDataset::from_pairs(path, std::move(rows.file.pairs), rule, origin, std::move(rows.tokenization));
}

}  // namespace dpo
