// Chat templates of real models rendered byte for byte as @huggingface/jinja renders them
// (tests/fixtures/chat_templates, made by scripts/make_chat_template_goldens.sh), and how a
// tokenizer_config.json's chat_template and special tokens are read.
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "catch2_api.h"
#include "scratch_dir.h"

#include "dpo/error.h"
#include "dpo/text/chat_template.h"

namespace {

const std::filesystem::path kFixtures = DPO_CHAT_TEMPLATE_FIXTURES;

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const dpo::Error& error) {
    return error.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("every golden of real chat templates renders byte for byte as @huggingface/jinja", "[chat_template]") {
  std::ifstream goldens(kFixtures / "goldens.jsonl");
  REQUIRE(goldens);
  std::string line;
  int checked = 0, refused = 0;
  while (std::getline(goldens, line)) {
    const auto golden = nlohmann::ordered_json::parse(line);
    const std::string model = golden["model"];
    INFO(model << " / " << golden["conversation"].get<std::string>() << " / add_generation_prompt="
               << golden["add_generation_prompt"].get<bool>());
    const auto chat = dpo::ChatTemplate::from_tokenizer_config(kFixtures / (model + ".tokenizer_config.json"));
    const auto render = [&] { return chat.render(golden["messages"], golden["add_generation_prompt"], golden["extra"]); };
    if (golden.contains("error")) {  // the template itself refuses the conversation (raise_exception)
      CHECK_THAT(error_of([&] { render(); }), Catch::Contains(golden["error"].get<std::string>()));
      ++refused;
    } else {
      CHECK(render() == golden["text"].get<std::string>());
    }
    ++checked;
  }
  CHECK(checked == 108);  // 6 models x 9 conversations x add_generation_prompt false/true
  CHECK(refused == 4);  // Gemma-3 refuses the tool role
}

TEST_CASE("special tokens come from tokenizer_config.json as strings or AddedToken objects", "[chat_template]") {
  ScratchDir dir("chat_template_tokens");
  write_file(dir.path / "tokenizer_config.json",
             R"({"bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>",)"
             R"( "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"})");
  const auto chat = dpo::ChatTemplate::from_tokenizer_config(dir.path);
  CHECK(chat.render(nlohmann::ordered_json::parse(R"([{"role": "user", "content": "hi"}])"), false) == "<s>hi</s>");
}

TEST_CASE("a list of named templates is picked by name, an unknown name is refused listing the names", "[chat_template]") {
  ScratchDir dir("chat_template_named");
  const auto config = dir.path / "tokenizer_config.json";
  write_file(config, R"({"chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T{{ tools | length }}"}]})");
  CHECK(dpo::ChatTemplate::from_tokenizer_config(config).render(nlohmann::ordered_json::array(), false) == "D");
  CHECK(dpo::ChatTemplate::from_tokenizer_config(config, "tool_use")
            .render(nlohmann::ordered_json::array(), false, {{"tools", {1, 2}}}) == "T2");
  CHECK(error_of([&] { dpo::ChatTemplate::from_tokenizer_config(config, "rag"); }) ==
        config.string() + ": no chat template named 'rag' (there are: default, tool_use)");
}

TEST_CASE("a model without chat_template falls back to chat_template.jinja, else is refused naming the file", "[chat_template]") {
  ScratchDir dir("chat_template_jinja_file");
  write_file(dir.path / "tokenizer_config.json", R"({"eos_token": "<e>"})");
  CHECK_THAT(error_of([&] { dpo::ChatTemplate::from_tokenizer_config(dir.path); }),
             Catch::Contains("tokenizer_config.json: no 'chat_template', and no"));
  write_file(dir.path / "chat_template.jinja", "{{ messages | length }}{{ eos_token }}");
  CHECK(dpo::ChatTemplate::from_tokenizer_config(dir.path).render(nlohmann::ordered_json::array({1}), false) == "1<e>");
}

TEST_CASE("a chat template's errors name the template line", "[chat_template]") {
  CHECK(error_of([] { dpo::ChatTemplate("a\n{% if %}", "", ""); }) == "chat template line 2: unexpected 'end of tag'");
  const dpo::ChatTemplate strict("{% if messages[0].role != 'user' %}\n{{ raise_exception('first message must be user') }}{% endif %}", "", "");
  CHECK(error_of([&] { strict.render(nlohmann::ordered_json::parse(R"([{"role": "system"}])"), false); }) ==
        "chat template line 2: first message must be user");
}

TEST_CASE("the fingerprint changes with the template text and with the special tokens", "[chat_template]") {
  const dpo::ChatTemplate a("{{ bos_token }}x", "<s>", "</s>");
  CHECK(a.fingerprint() == dpo::ChatTemplate("{{ bos_token }}x", "<s>", "</s>").fingerprint());
  CHECK(a.fingerprint() != dpo::ChatTemplate("{{ bos_token }}y", "<s>", "</s>").fingerprint());
  CHECK(a.fingerprint() != dpo::ChatTemplate("{{ bos_token }}x", "<bos>", "</s>").fingerprint());
  CHECK(a.fingerprint().size() == 16);
}
