// A model's chat template: tokenizer_config.json's `chat_template` (a string, or a list of
// {name, template}; else a chat_template.jinja beside it) rendered as transformers'
// apply_chat_template renders it, with bos_token/eos_token from the same file. Rendering only;
// tokenizing the result (without adding special tokens) is the tokenizer's job.
#pragma once
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "dpo/text/jinja.h"

namespace dpo {

class ChatTemplate {
 public:
  // `dir_or_file`: a model directory or its tokenizer_config.json. `name` picks one of a list of
  // named templates ("default" when the file holds a single string). A missing file, a missing or
  // unknown template, or a syntax error is dpo::Error naming the file and the template line.
  static ChatTemplate from_tokenizer_config(const std::filesystem::path& dir_or_file,
                                            const std::string& name = "default");
  // A template given as text (tests, --chat-template overrides); special tokens as strings, ""
  // where the model has none.
  ChatTemplate(const std::string& source, const std::string& bos_token, const std::string& eos_token,
               std::string label = "chat template");

  // messages: the conversation (a JSON list of {role, content, ...}); extra: more top-level
  // variables (tools, documents, date_string, ...), which override nothing but themselves.
  // Ordered JSON so that tojson (tool schemas) keeps the keys' order, as transformers does.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

  // 16 hex digits over the template text and the special tokens it is rendered with: two
  // tokenized datasets agree on the text only if their fingerprints match.
  std::string fingerprint() const;
  const std::string& source() const { return source_; }

 private:
  struct WithTokens {};
  ChatTemplate(WithTokens, const std::string& source, nlohmann::ordered_json special_tokens, std::string label);

  std::string source_;
  nlohmann::ordered_json special_tokens_;  // bos_token, eos_token, ... as the template sees them
  JinjaTemplate template_;
};

// A special token of tokenizer_config.json (`key`: bos_token, eos_token, unk_token, pad_token), as
// transformers writes it (a string or an AddedToken object); "" when the file does not set it.
// `dir_or_file`: a model directory or its tokenizer_config.json, which must exist.
std::string special_token(const std::filesystem::path& dir_or_file, const std::string& key);

}  // namespace dpo
