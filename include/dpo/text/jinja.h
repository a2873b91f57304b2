// A Jinja2 subset, enough for the chat templates of tokenizer_config.json files (docs/chat_templates.md
// lists what is supported). Semantics follow Jinja2 as transformers configures it: trim_blocks and
// lstrip_blocks on, no autoescape, undefined renders empty and is falsy, loopcontrols, and
// transformers' tojson and raise_exception. Owns parsing and rendering; not tokenization.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace dpo::jinja {
struct Node;
}

namespace dpo {

class JinjaTemplate {
 public:
  // Parses `source`; a syntax error is dpo::Error "<name> line N: ...".
  explicit JinjaTemplate(const std::string& source, std::string name = "template");
  // Renders with the top-level variables of `context` (a JSON object). A runtime error, and the
  // message of raise_exception(...), is dpo::Error "<name> line N: ...". Ordered JSON, because
  // tojson writes keys in their given order as Python does (an nlohmann::json converts, sorted).
  std::string render(const nlohmann::ordered_json& context) const;

 private:
  std::string name_;
  std::shared_ptr<const std::vector<std::shared_ptr<const jinja::Node>>> body_;
};

// JinjaTemplate(source).render(context), for one-off use and tests.
std::string render_jinja(const std::string& source, const nlohmann::ordered_json& context);

}  // namespace dpo
