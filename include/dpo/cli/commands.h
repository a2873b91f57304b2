// Private to the CLI (src/cli/): what a subcommand is, the flag helpers the commands read their
// options with, and the commands themselves, grouped by theme (train_commands.cpp,
// data_commands.cpp, model_commands.cpp). cli.cpp holds the table of commands (names, usage,
// flags, help), parses the arguments and dispatches; every command runs inside the process's
// Session (dist/session.h), which does the set-up a run needs.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "dpo/config/config.h"
#include "dpo/dist/session.h"

namespace dpo {

class ChatTemplate;  // text/chat_template.h

struct Flag {
  std::string name;  // "--config"
  std::string value_name;  // "" for a switch
  std::string help;
  bool repeatable = false;
};

// The values given to each flag ("true" for a switch), in command-line order.
using FlagValues = std::map<std::string, std::vector<std::string>>;

struct ParsedArgs {
  FlagValues flags;
  std::vector<std::string> positionals;
  bool help = false;
};

struct Command {
  std::string name, summary, usage;
  std::vector<Flag> flags;
  int positionals = 0;
  std::function<int(Session&, const ParsedArgs&)> run;
  bool saves_progress_on_stop = false;  // SIGTERM/SIGUSR1 end it after saving its progress (preemption.h)
  bool more_positionals = false;  // the last positional may repeat: at least `positionals` of them
};

// The one value of a flag; an error naming the command when it is absent.
const std::string& single(const FlagValues& flags, const std::string& name, const std::string& command);
// Every value of a repeatable flag, none when absent.
std::vector<std::string> all_of(const FlagValues& flags, const std::string& name);
// A --set value as JSON: integers, floats, booleans and null by their YAML spelling, else a string.
nlohmann::json json_scalar(const std::string& text);
// The value of a numeric flag, `fallback` when absent; an error naming the flag unless it is a
// number (an integer when `integral`) of at least `minimum`.
double numeric_flag(const FlagValues& flags, const std::string& name, double fallback, double minimum, bool integral);
int64_t integer_flag(const FlagValues& flags, const std::string& name, int64_t fallback, int64_t minimum);

// The config of a config command (--config, --set) with the session started for it; nullopt
// after --dump-config printed it (rank 0) instead.
// (`exclusive`: the command writes checkpoints and metrics into run.output_dir and locks it; the
// config also takes the command's --allow-changed keys.)
std::optional<Config> start_config_command(Session& session, const FlagValues& flags, const std::string& command,
                                           bool exclusive = false);

// train_commands.cpp: the commands that run a config, and the communication benchmark.
int cmd_eval(Session& session, const ParsedArgs& args);
int cmd_train(Session& session, const ParsedArgs& args);
int cmd_sft(Session& session, const ParsedArgs& args);
int cmd_precompute_ref(Session& session, const ParsedArgs& args);
// prepare_data_command.cpp
int cmd_prepare_data(Session& session, const ParsedArgs& args);
int cmd_bench(Session& session, const ParsedArgs& args);
int cmd_bench_comm(Session& session, const ParsedArgs& args);
// data_commands.cpp: preference files and model directories on disk.
int cmd_convert_data(Session& session, const ParsedArgs& args);
int cmd_make_demo_data(Session& session, const ParsedArgs& args);
int cmd_inspect(Session& session, const ParsedArgs& args);
// model_commands.cpp: creating a model and scoring one on the synthetic task.
int cmd_init_model(Session& session, const ParsedArgs& args);
int cmd_score_synthetic(Session& session, const ParsedArgs& args);
// text_commands.cpp: text through the tokenizer.
int cmd_tokenize(Session& session, const ParsedArgs& args);
// --tokenizer names a directory or its tokenizer.json; tokenizer_config.json (the chat template,
// eos_token) sits in that directory, or beside the file.
std::filesystem::path tokenizer_config_dir(const std::string& tokenizer);
// A JSONL chat line {"messages": [...], "add_generation_prompt": bool, ...} (a JSON object parsed
// by parse_ordered_json, so that tojson keeps its keys' order) rendered with the chat template; its
// other keys, e.g. "tools", are template variables; `add_generation_prompt` where the line does not
// say. Errors name `where` (file:line).
std::string render_chat_line(const ChatTemplate& chat_template, nlohmann::ordered_json line, const std::string& where,
                             bool add_generation_prompt);
// generate_command.cpp: sampled continuations of text prompts and chats, decoded.
int cmd_generate(Session& session, const ParsedArgs& args);
// plot_command.cpp: training curves of runs as PNG and SVG.
int cmd_plot(Session& session, const ParsedArgs& args);

}  // namespace dpo
