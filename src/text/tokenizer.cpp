// Loading tokenizer.json and the encode / decode pipelines (tokenizer.h).
#include "dpo/text/tokenizer.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/io/json_input.h"
#include "dpo/text/tokenizer_components.h"
#include "dpo/text/tokenizer_unicode.h"

namespace dpo {

const nlohmann::json& required_key(const nlohmann::json& spec, const char* key, const std::string& where) {
  if (!spec.is_object()) fail("{}: must be an object, not {}", where, json_excerpt(spec));
  auto it = spec.find(key);
  if (it == spec.end()) fail("{}: key '{}' is missing", where, key);
  return *it;
}

namespace {

std::string fnv1a64(const std::string& bytes) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char byte : bytes) hash = (hash ^ byte) * 0x100000001b3ULL;
  return fmt::format("fnv1a64:{:016x}", hash);
}

std::vector<AddedToken> read_added_tokens(const nlohmann::json& spec, const std::string& source) {
  std::vector<AddedToken> tokens;
  auto list = spec.find("added_tokens");
  if (list == spec.end() || list->is_null()) return tokens;
  for (size_t i = 0; i < list->size(); ++i) {
    auto where = fmt::format("{}: added_tokens[{}]", source, i);
    const auto& entry = (*list)[i];
    AddedToken token;
    token.content = required_key(entry, "content", where).get<std::string>();
    token.id = required_key(entry, "id", where).get<int64_t>();
    token.special = optional_key<bool>(entry, "special", false, where);
    token.normalized = optional_key<bool>(entry, "normalized", !token.special, where);
    token.lstrip = optional_key<bool>(entry, "lstrip", false, where);
    token.rstrip = optional_key<bool>(entry, "rstrip", false, where);
    token.single_word = optional_key<bool>(entry, "single_word", false, where);
    tokens.push_back(std::move(token));
  }
  return tokens;
}

// Hugging Face adds the added tokens to the model on load, and their ids are the ones it gives
// them, not the file's (they agree in every consistent file): the model's id when the vocabulary
// has the content, the id of an earlier token with the same content, else the next free id.
void assign_added_token_ids(std::vector<AddedToken>& tokens, const BpeModel& model) {
  const int64_t model_size = model.vocab_count();
  std::optional<int64_t> highest;
  std::unordered_map<std::string, int64_t> seen;
  for (auto& token : tokens) {
    if (auto id = model.token_to_id(token.content)) token.id = *id;
    else if (auto it = seen.find(token.content); it != seen.end()) token.id = it->second;
    else token.id = !highest ? model_size : (*highest >= model_size || model_size == 0 ? *highest + 1 : model_size);
    seen.emplace(token.content, token.id);
    highest = std::max(highest.value_or(token.id), token.id);
  }
}

std::unique_ptr<BpeModel> make_model(const nlohmann::json& spec, const std::string& where) {
  auto type = optional_key<std::string>(spec, "type", spec.contains("merges") ? "BPE" : "", where);
  if (type != "BPE") fail("{}: model type '{}' is not supported (only BPE)", where, type);
  return std::make_unique<BpeModel>(spec, where);
}

}  // namespace

Tokenizer Tokenizer::from_json(const nlohmann::json& spec, const std::string& source, std::string fingerprint) {
  auto pipeline = std::make_shared<TokenizerPipeline>();
  auto section = [&](const char* key) -> const nlohmann::json& {
    static const nlohmann::json null_value;
    auto it = spec.find(key);
    return it == spec.end() ? null_value : *it;
  };
  if (!spec.is_object()) fail("{}: must be a JSON object", source);
  pipeline->normalizer = make_normalizer(section("normalizer"), source + ": normalizer");
  pipeline->pre_tokenizer = make_pre_tokenizer(section("pre_tokenizer"), source + ": pre_tokenizer");
  pipeline->model = make_model(required_key(spec, "model", source), source + ": model");
  pipeline->post_processor = make_post_processor(section("post_processor"), source + ": post_processor");
  pipeline->decoder = make_decoder(section("decoder"), source + ": decoder");
  auto added_tokens = read_added_tokens(spec, source);
  assign_added_token_ids(added_tokens, *pipeline->model);
  pipeline->added = std::make_unique<AddedVocabulary>(std::move(added_tokens), pipeline->normalizer.get());
  pipeline->fingerprint = std::move(fingerprint);
  return Tokenizer(std::move(pipeline));
}

namespace {

// DIR/tokenizer.json, or the file itself; and its bytes.
std::filesystem::path tokenizer_json_path(const std::filesystem::path& dir_or_tokenizer_json) {
  return std::filesystem::is_directory(dir_or_tokenizer_json) ? dir_or_tokenizer_json / "tokenizer.json"
                                                              : dir_or_tokenizer_json;
}

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail("{}: cannot be opened", path.string());
  std::stringstream bytes;
  bytes << file.rdbuf();
  if (file.bad()) fail("{}: cannot be read", path.string());
  return bytes.str();
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& dir_or_tokenizer_json) {
  const std::filesystem::path path = tokenizer_json_path(dir_or_tokenizer_json);
  const std::string text = read_bytes(path);
  return from_json(parse_json(text, path.string()), path.string(), fnv1a64(text));
}

std::string Tokenizer::file_fingerprint(const std::filesystem::path& dir_or_tokenizer_json) {
  return fnv1a64(read_bytes(tokenizer_json_path(dir_or_tokenizer_json)));
}

namespace {

// Normalizes one segment without added tokens, splits out the normalized added tokens, and runs
// the pre-tokenizer and the model over the rest.
void encode_segment(const TokenizerPipeline& p, std::string_view raw, bool at_text_start, std::vector<int64_t>& ids) {
  std::string normalized(raw);
  if (p.normalizer) p.normalizer->normalize(normalized);
  std::vector<TextPiece> pieces;
  for (const auto& segment : p.added->split(normalized, true)) {
    if (segment.token_id) {
      ids.push_back(*segment.token_id);
      continue;
    }
    if (segment.end == segment.begin) continue;
    pieces.assign(1, TextPiece{normalized.substr(segment.begin, segment.end - segment.begin), at_text_start && segment.begin == 0});
    if (p.pre_tokenizer) p.pre_tokenizer->pre_tokenize(pieces);
    for (const auto& piece : pieces) p.model->tokenize(piece.text, ids);
  }
}

}  // namespace

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (!is_valid_utf8(text)) fail("tokenizer: the text to encode is not valid UTF-8");
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const auto& segment : pipeline_->added->split(text, false)) {
    if (segment.token_id) ids.push_back(*segment.token_id);
    else if (segment.end > segment.begin)
      encode_segment(*pipeline_, text.substr(segment.begin, segment.end - segment.begin), segment.begin == 0, ids);
  }
  if (pipeline_->post_processor) pipeline_->post_processor->process(ids, add_special_tokens);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    if (const auto* added = pipeline_->added->by_id(id)) {
      if (!(skip_special_tokens && added->special)) tokens.push_back(added->content);
    } else if (const auto* token = pipeline_->model->id_to_token(id)) {
      tokens.push_back(*token);
    }
  }
  if (pipeline_->decoder) pipeline_->decoder->decode_chain(tokens);
  else return fmt::format("{}", fmt::join(tokens, " "));
  std::string text;
  for (const auto& token : tokens) text += token;
  return text;
}

std::optional<int64_t> Tokenizer::token_to_id(std::string_view token) const {
  std::string key(token);
  if (auto id = pipeline_->added->id_of(key)) return id;
  return pipeline_->model->token_to_id(key);
}

std::optional<std::string> Tokenizer::id_to_token(int64_t id) const {
  if (const auto* added = pipeline_->added->by_id(id)) return added->content;
  if (const auto* token = pipeline_->model->id_to_token(id)) return *token;
  return std::nullopt;
}

int64_t Tokenizer::vocab_size() const { return std::max(pipeline_->model->max_id(), pipeline_->added->max_id()) + 1; }

std::string Tokenizer::fingerprint() const { return pipeline_->fingerprint; }

}  // namespace dpo
