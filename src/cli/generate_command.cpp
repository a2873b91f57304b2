// `dpo generate`: continuations of a text prompt (--prompt) or of chat conversations (--chat
// FILE.jsonl) sampled from a model directory and decoded with its tokenizer, stopping at the
// model's end-of-sequence / end-of-turn tokens (generation_config.json, tokenizer_config.json).
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/cli/commands.h"
#include "dpo/error.h"
#include "dpo/io/json_input.h"
#include "dpo/model/model.h"
#include "dpo/model/sampling.h"
#include "dpo/text/chat_template.h"
#include "dpo/text/tokenizer.h"

namespace dpo {

namespace {

namespace fs = std::filesystem;

// A prompt's ids and where it came from ("--prompt" or FILE:LINE), for error messages.
struct Prompt {
  TokenIds ids;
  std::string where;
};

// generation_config.json's eos_token_id (an int or a list of ints), as transformers' generate
// stops at; none when the file or the key is absent.
std::vector<int64_t> generation_config_eos_ids(const std::string& model_dir) {
  const fs::path path = fs::path(model_dir) / "generation_config.json";
  if (!fs::exists(path)) return {};
  const nlohmann::json config = read_json_file(path.string());
  if (!config.is_object() || !config.contains("eos_token_id") || config["eos_token_id"].is_null()) return {};
  const nlohmann::json& value = config["eos_token_id"];
  const nlohmann::json list = value.is_array() ? value : nlohmann::json::array({value});
  std::vector<int64_t> ids;
  for (const nlohmann::json& id : list) {
    if (!id.is_number_integer()) fail("{}: 'eos_token_id' must be an integer or a list of integers, not {}", path.string(), json_excerpt(value));
    ids.push_back(id.get<int64_t>());
  }
  return ids;
}

// tokenizer_config.json's eos_token as an id; none when the file or the key is absent (a bare
// tokenizer.json).
std::optional<int64_t> tokenizer_config_eos_id(const fs::path& config_dir, const Tokenizer& tokenizer) {
  if (!fs::exists(config_dir / "tokenizer_config.json")) return std::nullopt;
  const std::string token = special_token(config_dir, "eos_token");
  if (token.empty()) return std::nullopt;
  const auto id = tokenizer.token_to_id(token);
  if (!id) fail("{}: eos_token '{}' is not a token of the tokenizer beside it", (config_dir / "tokenizer_config.json").string(), token);
  return id;
}

// The chat file's lines, each rendered with the generation prompt and tokenized without adding
// special tokens (the template writes them), as transformers' apply_chat_template.
std::vector<Prompt> chat_prompts(const std::string& path, const Tokenizer& tokenizer, const fs::path& config_dir) {
  const ChatTemplate chat_template = ChatTemplate::from_tokenizer_config(config_dir);
  std::ifstream in(path);
  if (!in) fail("{}: cannot be opened", path);
  std::vector<Prompt> prompts;
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    const std::string where = fmt::format("{}:{}", path, number);
    nlohmann::ordered_json value = parse_ordered_json(line, where);
    if (!value.is_object() || !value.contains("messages"))
      fail("{}: a line must be an object with \"messages\", not {}", where, json_excerpt(value));
    const std::string text = render_chat_line(chat_template, std::move(value), where, /*add_generation_prompt=*/true);
    const std::vector<int64_t> ids = tokenizer.encode(text, /*add_special_tokens=*/false);
    prompts.push_back({TokenIds(ids.begin(), ids.end()), where});
  }
  if (in.bad()) fail("{}: cannot be read", path);
  if (prompts.empty()) fail("{}: no chat lines", path);
  return prompts;
}

SamplingOptions sampling_options(const FlagValues& flags) {
  SamplingOptions options;
  options.max_new_tokens = integer_flag(flags, "--max-new-tokens", 128, 1);
  options.temperature = numeric_flag(flags, "--temperature", 1.0, 0.0, false);
  options.top_p = numeric_flag(flags, "--top-p", 1.0, 0.0, false);
  if (options.top_p <= 0 || options.top_p > 1) fail("--top-p: expected a number in (0, 1], got {}", options.top_p);
  options.seed = static_cast<uint64_t>(integer_flag(flags, "--seed", 0, 0));
  return options;
}

// Before any sampling: every prompt and stop id inside the model's vocabulary (a tokenizer of
// another model shows here), every prompt non-empty and short enough for max_new_tokens.
void check_prompts(const std::vector<Prompt>& prompts, const std::vector<int64_t>& stop_ids, const ModelSpec& spec,
                   const SamplingOptions& options, const std::string& tokenizer, const Tokenizer& vocab, const std::string& model) {
  const auto mismatch = [&](const std::string& what, int64_t id) {
    fail("{} has token id {}, outside the model: tokenizer {} has vocab {} but model {} has vocab_size {}", what, id,
         tokenizer, vocab.vocab_size(), model, spec.vocab_size);
  };
  for (int64_t id : stop_ids)
    if (id < 0 || id >= spec.vocab_size) mismatch("the stop tokens (eos)", id);
  for (const Prompt& prompt : prompts) {
    if (prompt.ids.empty()) fail("{}: the prompt has no tokens", prompt.where);
    for (int32_t id : prompt.ids)
      if (id >= spec.vocab_size) mismatch(prompt.where, id);
    if (static_cast<int64_t>(prompt.ids.size()) + options.max_new_tokens > spec.max_position_embeddings)
      fail("{}: the prompt's {} tokens + --max-new-tokens {} exceed the model's max_position_embeddings {} ({})",
           prompt.where, prompt.ids.size(), options.max_new_tokens, spec.max_position_embeddings, model);
  }
}

}  // namespace

int cmd_generate(Session& session, const ParsedArgs& args) {
  const std::string model_dir = single(args.flags, "--model", "generate");
  const bool chat = args.flags.count("--chat") > 0;
  if (chat == (args.flags.count("--prompt") > 0)) fail("dpo generate: give exactly one of --prompt and --chat");
  const auto tokenizer_flag = all_of(args.flags, "--tokenizer");
  const std::string tokenizer_path = tokenizer_flag.empty() ? model_dir : tokenizer_flag.front();
  SamplingOptions options = sampling_options(args.flags);

  const Tokenizer tokenizer = Tokenizer::load(tokenizer_path);
  const fs::path config_dir = tokenizer_config_dir(tokenizer_path);
  std::vector<Prompt> prompts;
  if (chat) {
    prompts = chat_prompts(single(args.flags, "--chat", "generate"), tokenizer, config_dir);
  } else {
    const std::vector<int64_t> ids = tokenizer.encode(single(args.flags, "--prompt", "generate"), /*add_special_tokens=*/true);
    prompts.push_back({TokenIds(ids.begin(), ids.end()), "--prompt"});
  }
  options.stop_ids = generation_config_eos_ids(model_dir);
  if (const auto eos = tokenizer_config_eos_id(config_dir, tokenizer)) options.stop_ids.push_back(*eos);

  session.use_all_cpus();
  CausalLM model = load_model(model_dir, at::kFloat);
  model->eval();
  check_prompts(prompts, options.stop_ids, model->spec(), options, tokenizer_path, tokenizer, model_dir);
  std::vector<TokenIds> prompt_ids;
  for (const Prompt& prompt : prompts) prompt_ids.push_back(prompt.ids);
  const std::vector<Generation> generations = generate(*model, prompt_ids, options);

  for (const Generation& generation : generations) {
    const std::vector<int64_t> ids(generation.ids.begin(), generation.ids.end());
    const std::string completion = tokenizer.decode(ids, /*skip_special_tokens=*/true);
    if (!chat) {
      fmt::print("{}\n", completion);
      continue;
    }
    const nlohmann::json out = {{"completion", completion}, {"ids", ids}, {"finish_reason", finish_reason_name(generation.finish_reason)}};
    fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  return 0;
}

}  // namespace dpo
