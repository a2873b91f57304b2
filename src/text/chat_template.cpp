// Chat templates from tokenizer_config.json, rendered with transformers' variables.
#include "dpo/text/chat_template.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/io/json_input.h"

namespace dpo {
namespace {

// transformers writes special tokens as a string or as an AddedToken object {"content": ...}.
nlohmann::ordered_json special_tokens_of(const nlohmann::json& config, const std::string& path) {
  nlohmann::ordered_json tokens = nlohmann::ordered_json::object();
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    if (!config.contains(key) || config[key].is_null()) continue;
    const nlohmann::json& token = config[key];
    if (token.is_string()) tokens[key] = token;
    else if (token.is_object() && token.contains("content") && token["content"].is_string()) tokens[key] = token["content"];
    else fail("{}: '{}' is neither a string nor an object with a string 'content'", path, key);
  }
  return tokens;
}

// The template text: chat_template as a string, or the entry of a list of {name, template} named
// `name`; without chat_template, a chat_template.jinja next to the file (newer transformers).
std::string template_source(const nlohmann::json& config, const std::filesystem::path& path, const std::string& name) {
  if (!config.contains("chat_template")) {
    const std::filesystem::path jinja_file = path.parent_path() / "chat_template.jinja";
    std::ifstream in(jinja_file, std::ios::binary);
    if (!in) fail("{}: no 'chat_template', and no {} beside it", path.string(), jinja_file.string());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }
  const nlohmann::json& value = config["chat_template"];
  if (value.is_string()) {
    if (name != "default") fail("{}: 'chat_template' is a single template, there is no template named '{}'", path.string(), name);
    return value.get<std::string>();
  }
  if (!value.is_array()) fail("{}: 'chat_template' is neither a string nor a list of {{name, template}}", path.string());
  std::vector<std::string> names;
  for (const nlohmann::json& entry : value) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() || !entry.contains("template") ||
        !entry["template"].is_string())
      fail("{}: each entry of 'chat_template' needs a string 'name' and 'template'", path.string());
    if (entry["name"] == name) return entry["template"].get<std::string>();
    names.push_back(entry["name"].get<std::string>());
  }
  fail("{}: no chat template named '{}' (there are: {})", path.string(), name, fmt::join(names, ", "));
}

// FNV-1a, 64 bits: a template is a few KB, so a simple bytewise hash is fast enough (the
// reference module's Hasher sits in a later layer).
std::string fnv1a_hex(const std::string& text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return fmt::format("{:016x}", hash);
}

}  // namespace

namespace {

std::filesystem::path tokenizer_config_path(const std::filesystem::path& dir_or_file) {
  return std::filesystem::is_directory(dir_or_file) ? dir_or_file / "tokenizer_config.json" : dir_or_file;
}

nlohmann::json read_tokenizer_config(const std::filesystem::path& path) {
  nlohmann::json config = read_json_file(path.string());
  if (!config.is_object()) fail("{}: not a JSON object", path.string());
  return config;
}

}  // namespace

std::string special_token(const std::filesystem::path& dir_or_file, const std::string& key) {
  const std::filesystem::path path = tokenizer_config_path(dir_or_file);
  const nlohmann::ordered_json tokens = special_tokens_of(read_tokenizer_config(path), path.string());
  return tokens.contains(key) ? tokens[key].get<std::string>() : std::string();
}

ChatTemplate ChatTemplate::from_tokenizer_config(const std::filesystem::path& dir_or_file, const std::string& name) {
  const std::filesystem::path path = tokenizer_config_path(dir_or_file);
  const nlohmann::json config = read_tokenizer_config(path);
  const std::string label = name == "default" ? "chat template" : fmt::format("chat template '{}'", name);
  return ChatTemplate(WithTokens{}, template_source(config, path, name), special_tokens_of(config, path.string()), label);
}

ChatTemplate::ChatTemplate(const std::string& source, const std::string& bos_token, const std::string& eos_token,
                           std::string label)
    : ChatTemplate(WithTokens{}, source, nlohmann::ordered_json{{"bos_token", bos_token}, {"eos_token", eos_token}}, std::move(label)) {}

ChatTemplate::ChatTemplate(WithTokens, const std::string& source, nlohmann::ordered_json special_tokens, std::string label)
    : source_(source), special_tokens_(std::move(special_tokens)), template_(source, std::move(label)) {}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& extra) const {
  nlohmann::ordered_json context = special_tokens_;
  if (!extra.is_null()) {
    if (!extra.is_object()) fail("chat template: the extra variables must be a JSON object");
    for (const auto& [key, value] : extra.items()) context[key] = value;
  }
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  return template_.render(context);
}

std::string ChatTemplate::fingerprint() const { return fnv1a_hex(special_tokens_.dump() + '\0' + source_); }

}  // namespace dpo
