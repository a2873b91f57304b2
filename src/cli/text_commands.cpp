// `dpo tokenize`: each line of a JSONL file through the tokenizer (tokenizer.json), one output line
// per input line, for inspection and for checking against Hugging Face.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/cli/commands.h"
#include "dpo/error.h"
#include "dpo/io/json_input.h"
#include "dpo/text/chat_template.h"
#include "dpo/text/tokenizer.h"

namespace dpo {

namespace {

// A chat line rendered by render_chat_line and tokenized without adding special tokens, as
// transformers' apply_chat_template; printed as {"text": rendered, "ids": [...]}.
nlohmann::json tokenize_chat_line(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                  nlohmann::ordered_json line, const std::string& where) {
  nlohmann::json out;
  out["text"] = render_chat_line(chat_template, std::move(line), where, /*add_generation_prompt=*/false);
  out["ids"] = tokenizer.encode(out["text"].get<std::string>(), /*add_special_tokens=*/false);
  return out;
}

// Time spent in encode and the bytes it took, for --stats.
struct EncodeStats {
  double seconds = 0;
  size_t bytes = 0, lines = 0;
};

nlohmann::json tokenize_text_line(const Tokenizer& tokenizer, const std::string& text, bool add_special_tokens, bool decode,
                                  EncodeStats& stats) {
  nlohmann::json out;
  auto start = std::chrono::steady_clock::now();
  auto ids = tokenizer.encode(text, add_special_tokens);
  stats.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats.bytes += text.size();
  stats.lines += 1;
  out["ids"] = ids;
  if (decode) out["text"] = tokenizer.decode(ids, false);
  return out;
}

}  // namespace

std::filesystem::path tokenizer_config_dir(const std::string& tokenizer) {
  return std::filesystem::is_directory(tokenizer) ? std::filesystem::path(tokenizer)
                                                  : std::filesystem::path(tokenizer).parent_path();
}

std::string render_chat_line(const ChatTemplate& chat_template, nlohmann::ordered_json value, const std::string& where,
                             bool add_generation_prompt) {
  const nlohmann::ordered_json messages = value["messages"];
  if (!messages.is_array()) fail("{}: \"messages\" must be a list of {{role, content}} objects", where);
  if (value.contains("add_generation_prompt")) {
    if (!value["add_generation_prompt"].is_boolean()) fail("{}: \"add_generation_prompt\" must be true or false", where);
    add_generation_prompt = value["add_generation_prompt"].get<bool>();
  }
  value.erase("messages");
  value.erase("add_generation_prompt");
  try {
    return chat_template.render(messages, add_generation_prompt, value);
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
}

int cmd_tokenize(Session&, const ParsedArgs& args) {
  const std::string tokenizer_dir = single(args.flags, "--tokenizer", "tokenize");
  auto tokenizer = Tokenizer::load(tokenizer_dir);
  std::optional<ChatTemplate> chat_template;  // read at the first chat line: text-only files need none
  bool add_special_tokens = !args.flags.count("--no-special");
  bool decode = args.flags.count("--decode") > 0;
  EncodeStats stats;
  const std::string& path = args.positionals.at(0);
  std::ifstream in(path);
  if (!in) fail("{}: cannot be opened", path);
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    auto where = fmt::format("{}:{}", path, number);
    auto value = parse_ordered_json(line, where);
    nlohmann::json out;
    if (value.is_string()) out = tokenize_text_line(tokenizer, value.get<std::string>(), add_special_tokens, decode, stats);
    else if (value.is_object() && value.contains("messages")) {
      if (!chat_template) chat_template = ChatTemplate::from_tokenizer_config(tokenizer_config_dir(tokenizer_dir));
      out = tokenize_chat_line(tokenizer, *chat_template, std::move(value), where);
    }
    else fail("{}: a line must be a JSON string or an object with \"messages\", not {}", where, json_excerpt(value));
    fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  if (in.bad()) fail("{}: cannot be read", path);
  if (args.flags.count("--stats"))
    fmt::print(stderr, "tokenize: {} lines, {:.2f} MB encoded in {:.3f} s: {:.2f} MB/s (encode only, one thread)\n", stats.lines,
               stats.bytes / 1e6, stats.seconds, stats.seconds > 0 ? stats.bytes / 1e6 / stats.seconds : 0.0);
  return 0;
}

}  // namespace dpo
