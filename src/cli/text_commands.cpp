// `dpo tokenize`: each line of a JSONL file through the tokenizer (tokenizer.json), one output line
// per input line, for inspection and for checking against Hugging Face.
#include <chrono>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/cli/commands.h"
#include "dpo/error.h"
#include "dpo/io/json_input.h"
#include "dpo/text/tokenizer.h"

namespace dpo {

namespace {

// A {"messages": [...], "add_generation_prompt": bool} line, rendered with the chat template and
// tokenized without special tokens; printed as {"text": rendered, "ids": [...]}.
nlohmann::json tokenize_chat_line(const Tokenizer&, const nlohmann::json&, const std::string& where) {
  fail("{}: chat lines need the chat template (not yet)", where);
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

int cmd_tokenize(Session&, const ParsedArgs& args) {
  auto tokenizer = Tokenizer::load(single(args.flags, "--tokenizer", "tokenize"));
  bool add_special_tokens = !args.flags.count("--no-special");
  bool decode = args.flags.count("--decode") > 0;
  EncodeStats stats;
  const std::string& path = args.positionals.at(0);
  std::ifstream in(path);
  if (!in) fail("{}: cannot be opened", path);
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    auto where = fmt::format("{}:{}", path, number);
    auto value = parse_json(line, where);
    nlohmann::json out;
    if (value.is_string()) out = tokenize_text_line(tokenizer, value.get<std::string>(), add_special_tokens, decode, stats);
    else if (value.is_object() && value.contains("messages")) out = tokenize_chat_line(tokenizer, value, where);
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
