// The `dpo` command line: the table of subcommands (names, usage, flags, help), argument parsing
// and dispatch. The commands live in *_commands.cpp (commands.h); what a run sets up before its
// work (MPI, communicators, threads, stdout) is the Session's (dist/session.h).
#include "dpo/cli/cli.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/cli/commands.h"
#include "dpo/config/config.h"
#include "dpo/config/text_distance.h"
#include "dpo/error.h"
#include "dpo/runtime/preemption.h"
#include "dpo/dist/session.h"

namespace dpo {

const std::string& single(const FlagValues& flags, const std::string& name, const std::string& command) {
  const auto it = flags.find(name);
  if (it == flags.end()) fail("dpo {}: option {} is required", command, name);
  return it->second.front();
}

std::vector<std::string> all_of(const FlagValues& flags, const std::string& name) {
  const auto it = flags.find(name);
  return it == flags.end() ? std::vector<std::string>{} : it->second;
}

nlohmann::json json_scalar(const std::string& text) {
  if (text == "true" || text == "false") return text == "true";
  if (text == "null" || text == "~") return nullptr;
  try {
    size_t used = 0;
    const long long i = std::stoll(text, &used);
    if (used == text.size()) return i;
    const double d = std::stod(text, &used);
    if (used == text.size()) return d;
  } catch (const std::exception&) {
  }
  return text;
}

double numeric_flag(const FlagValues& flags, const std::string& name, double fallback, double minimum, bool integral) {
  const auto values = all_of(flags, name);
  if (values.empty()) return fallback;
  const nlohmann::json j = json_scalar(values.front());
  if (!(integral ? j.is_number_integer() : j.is_number()) || j.get<double>() < minimum)
    fail("{}: expected {} of at least {}, got '{}'", name, integral ? "an integer" : "a number", minimum, values.front());
  return j.get<double>();
}

int64_t integer_flag(const FlagValues& flags, const std::string& name, int64_t fallback, int64_t minimum) {
  return static_cast<int64_t>(numeric_flag(flags, name, static_cast<double>(fallback), static_cast<double>(minimum), true));
}

namespace {

std::string command_help(const Command& c) {
  std::string out = fmt::format("usage: dpo {}\n\n{}\n", c.usage, c.summary);
  if (!c.flags.empty()) out += "\noptions:\n";
  for (const auto& f : c.flags) {
    const std::string lhs = f.value_name.empty() ? f.name : f.name + " " + f.value_name;
    out += fmt::format("  {:<24} {}{}\n", lhs, f.help, f.repeatable ? " (repeatable)" : "");
  }
  out += fmt::format("  {:<24} {}\n", "--help", "show this help");
  return out;
}

ParsedArgs parse_args(const Command& c, const std::vector<std::string>& args) {
  ParsedArgs parsed;
  std::vector<std::string> names;
  for (const auto& f : c.flags) names.push_back(f.name);
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (arg == "--help" || arg == "-h") {
      parsed.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      parsed.positionals.push_back(arg);
      continue;
    }
    std::string value;
    bool has_inline_value = false;
    if (const auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline_value = true;
    }
    const Flag* flag = nullptr;
    for (const auto& f : c.flags)
      if (f.name == arg) flag = &f;
    if (!flag) {
      const std::string guess = closest_match(arg, names);
      fail("dpo {}: unknown option '{}'{}", c.name, arg, guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess));
    }
    if (flag->value_name.empty()) {
      if (has_inline_value) fail("dpo {}: option '{}' takes no value", c.name, arg);
      parsed.flags[arg].push_back("true");
      continue;
    }
    if (!has_inline_value) {
      if (i + 1 >= args.size()) fail("dpo {}: option '{}' needs a value {}", c.name, arg, flag->value_name);
      value = args[++i];
    }
    auto& values = parsed.flags[arg];
    if (!values.empty() && !flag->repeatable) fail("dpo {}: option '{}' given twice", c.name, arg);
    values.push_back(value);
  }
  const auto given = static_cast<int>(parsed.positionals.size());
  if (!parsed.help && (c.more_positionals ? given < c.positionals : given != c.positionals))
    fail("dpo {}: expected {}{} argument(s), got {} (usage: dpo {})", c.name, c.more_positionals ? "at least " : "",
         c.positionals, given, c.usage);
  return parsed;
}

const std::vector<Flag> kConfigFlags = {
    {"--config", "FILE", "YAML run configuration"},
    {"--set", "KEY=VALUE", "override a config key, e.g. --set loss.beta=0.2", true},
    {"--dump-config", "", "print the resolved configuration and exit"},
};

// train and sft resume from run.output_dir's newest checkpoint, refusing changed keys unless named.
const std::vector<Flag> kTrainingFlags = {
    kConfigFlags[0], kConfigFlags[1], kConfigFlags[2],
    {"--allow-changed", "KEY", "resume although KEY (e.g. train.lr) differs from the checkpoint's run", true},
};

std::vector<Command> commands() {
  return {
      {"eval", "Preference metrics of model.policy against model.reference on data.eval, printed and written to "
               "<run.output_dir>/eval_metrics.json.",
       "eval --config FILE [--set KEY=VALUE]...", kConfigFlags, 0, cmd_eval},
      {"train", "DPO training of model.policy against model.reference on data.train (resumes from the newest "
                "checkpoint in run.output_dir).",
       "train --config FILE [--set KEY=VALUE]... [--allow-changed KEY]...", kTrainingFlags, 0, cmd_train, true},
      {"precompute-ref", "Compute the reference model's log-probs of data.train (and data.eval) once into "
                         "reference.logps_path (HDF5); train and eval then never load the reference model.",
       "precompute-ref --config FILE [--set KEY=VALUE]...", kConfigFlags, 0, cmd_precompute_ref, true},
      {"prepare-data", "Tokenize data.train (and data.eval) once into <run.output_dir>/train.h5 (eval.h5), text in "
                       "TRL's formats with model.tokenizer's tokenizer and chat template; under mpirun the ranks "
                       "split the rows.",
       "prepare-data --config FILE [--set KEY=VALUE]...", kConfigFlags, 0, cmd_prepare_data},
      {"sft", "Supervised fine-tuning on prompt+chosen with the prompt masked (makes a reference model).",
       "sft --config FILE [--set KEY=VALUE]... [--allow-changed KEY]...", kTrainingFlags, 0, cmd_sft, true},
      {"bench", "Time training steps on synthetic batches of the configured shapes; tokens/s and fraction of the "
                "measured matmul peak.",
       "bench --config FILE [--set KEY=VALUE]... [--steps N] [--warmup N] [--seq-len T] [--prompt-len P] "
       "[--length-spread F] [--compare KEY=V1,V2,...]",
       {kConfigFlags[0], kConfigFlags[1], kConfigFlags[2],
        {"--steps", "N", "timed steps (default 5)"},
        {"--warmup", "N", "untimed warm-up steps (default 2)"},
        {"--seq-len", "T", "prompt + response length (default data.max_length)"},
        {"--prompt-len", "P", "prompt length (default half of T)"},
        {"--length-spread", "F", "draw each prompt and response length from [(1-F) x, x] of its maximum (default 0)"},
        {"--compare", "KEY=V1,V2,...", "bench the config once per value of KEY, in turn, and compare them"}},
       0, cmd_bench},
      {"bench-comm", "Allreduce bandwidth of gradient-sized buffers across the ranks of the job (run under mpirun).",
       "bench-comm [--repeats N]", {{"--repeats", "N", "timed repetitions per size, best kept (default 5)"}}, 0,
       cmd_bench_comm},
      {"init-model", "Write a randomly initialised model in Hugging Face layout (config.json + model.safetensors).",
       "init-model --arch gpt2|llama --out DIR [--set KEY=VALUE]...",
       {{"--arch", "NAME", "gpt2 or llama"},
        {"--out", "DIR", "output directory"},
        {"--set", "KEY=VALUE", "a config.json key, e.g. --set hidden_size=128 (llama) or n_embd=128 (gpt2)", true},
        {"--seed", "N", "initialisation seed (default 0)"},
        {"--dtype", "NAME", "float32 (default), bfloat16 or float16"}},
       0, cmd_init_model},
      {"inspect", "Describe a model directory, a JSONL / HDF5 preference dataset, or a reference log-prob file.", "inspect PATH", {}, 1, cmd_inspect},
      {"convert-data", "Convert a preference dataset between JSONL and HDF5 (by the output's extension).",
       "convert-data IN OUT", {}, 2, cmd_convert_data},
      {"make-demo-data", "Write train.jsonl and eval.jsonl of a synthetic preference task with a known reward.",
       "make-demo-data --out DIR [--train-pairs N] [--eval-pairs N] [--vocab-size V] [--seed S] [--responses K]",
       {{"--out", "DIR", "output directory"},
        {"--responses", "K", "responses per prompt, best first (default 2: pairs; K > 2 writes ranked records, "
                             "responses_input_ids, for loss.type plackett_luce)"},
        {"--train-pairs", "N", "training pairs (default 2048)"},
        {"--eval-pairs", "N", "held-out pairs (default 256)"},
        {"--vocab-size", "V", "vocabulary size (default 256)"},
        {"--seed", "S", "seed (default 1)"}},
       0, cmd_make_demo_data},
      {"score-synthetic", "Sample responses of a model to the prompts of a synthetic-task file and report their mean "
                          "ground-truth reward and, with --reference, the sequence-level KL to that model estimated "
                          "from the samples.",
       "score-synthetic --model DIR --data FILE [--reference DIR] [--max-new-tokens K] [--temperature T] [--seed S] "
       "[--json]",
       {{"--model", "DIR", "Hugging Face model directory"},
        {"--data", "FILE", "preference file of the synthetic task (its prompts are used)"},
        {"--reference", "DIR", "also estimate KL(model || DIR) as the mean of log p - log p_ref over the samples "
                               "(temperature 1 only)"},
        {"--max-new-tokens", "K", "tokens sampled per prompt (default 6)"},
        {"--temperature", "T", "sampling temperature, 0 = greedy (default 1.0)"},
        {"--seed", "S", "sampling seed (default 0)"},
        {"--json", "", "also print the numbers as one JSON line"}},
       0, cmd_score_synthetic},
      {"tokenize", "Tokenize each line of a JSONL file (JSON strings) with a tokenizer.json; one {\"ids\": [...]} line "
                   "per input line.",
       "tokenize --tokenizer DIR [--no-special] [--decode] [--stats] FILE.jsonl",
       {{"--tokenizer", "DIR", "directory with tokenizer.json (or the file itself)"},
        {"--no-special", "", "do not add the post-processor's special tokens (BOS, ...)"},
        {"--decode", "", "also print the decoded \"text\""},
        {"--stats", "", "print the encoding throughput (MB/s) to stderr"}},
       1, cmd_tokenize},
      {"generate", "Sample continuations of a text prompt, or of each conversation of a JSONL chat file, from a model "
                   "directory and print them decoded (chat: one {\"completion\", \"ids\", \"finish_reason\"} line per "
                   "input line). Stops at generation_config.json's eos_token_id and tokenizer_config.json's eos_token.",
       "generate --model DIR (--prompt TEXT | --chat FILE.jsonl) [--tokenizer DIR] [--max-new-tokens N] [--temperature T] "
       "[--top-p P] [--seed S]",
       {{"--model", "DIR", "Hugging Face model directory"},
        {"--prompt", "TEXT", "a text prompt, tokenized with the tokenizer's special tokens (BOS, ...)"},
        {"--chat", "FILE", "JSONL, one {\"messages\": [...], ...} per line, rendered with the chat template"},
        {"--tokenizer", "DIR", "directory with tokenizer.json and tokenizer_config.json (default --model)"},
        {"--max-new-tokens", "N", "most tokens generated per prompt (default 128)"},
        {"--temperature", "T", "sampling temperature, 0 = greedy (default 1.0)"},
        {"--top-p", "P", "nucleus sampling: the most probable tokens up to mass P, in (0, 1] (default 1.0 = off)"},
        {"--seed", "S", "sampling seed (default 0)"}},
       0, cmd_generate},
      {"plot", "Training curves of one or more runs as PNG and SVG, from each RUN_DIR's metrics.jsonl. A panel per "
               "metric group (loss, rewards/accuracies, rewards/margins, rewards/chosen and rewards/rejected, "
               "logps/chosen and logps/rejected, lr, grad_norm, tokens/s; those the runs logged), evaluations as dots "
               "on the same axes, one colour per run with a legend naming each RUN_DIR. Written as PREFIX.png and "
               "PREFIX.svg (default: plot.png and plot.svg in the first RUN_DIR), each under a temporary name "
               "renamed into place. For a live view of a running job: tensorboard --logdir RUN_DIR/tensorboard.",
       "plot RUN_DIR [RUN_DIR...] [--out PREFIX]",
       {{"--out", "PREFIX", "write PREFIX.png and PREFIX.svg (default RUN_DIR/plot, of the first RUN_DIR)"}},
       1, cmd_plot, false, true},
  };
}

std::string main_help(const std::vector<Command>& cmds) {
  std::string out = "usage: dpo COMMAND [OPTIONS]\n\nDirect Preference Optimization for causal language models.\n\ncommands:\n";
  for (const auto& c : cmds) {
    const auto sentence_end = c.summary.find(". ");  // the first sentence only
    out += fmt::format("  {:<16} {}\n", c.name, sentence_end == std::string::npos ? c.summary : c.summary.substr(0, sentence_end + 1));
  }
  out += "\n`dpo COMMAND --help` describes a command; `dpo --version` prints the version; `dpo --help-markdown` prints "
         "commands and config keys as Markdown (docs/reference.md).\n\nconfig keys:\n";
  out += options_help();
  return out;
}

// The generated part of docs/reference.md: every command with its flags, then every config key
// (so that the document cannot drift from what the binary accepts; a test compares them).
std::string reference_markdown(const std::vector<Command>& cmds) {
  std::string out = "## Commands\n";
  for (const auto& c : cmds) {
    out += fmt::format("\n### `dpo {}`\n\n```\ndpo {}\n```\n\n{}\n", c.name, c.usage, c.summary);
    if (c.flags.empty()) continue;
    out += "\n| option | meaning |\n| --- | --- |\n";
    for (const auto& f : c.flags) {
      const std::string lhs = f.value_name.empty() ? f.name : f.name + " " + f.value_name;
      out += fmt::format("| `{}` | {}{} |\n", lhs, f.help, f.repeatable ? " (repeatable)" : "");
    }
  }
  out += "\n## Config keys\n\nYAML sections and keys, or `--set section.key=value` on the command line.\n";
  out += options_markdown();
  return out;
}

// libtorch's messages carry a C++ backtrace after the first line; users need the first line.
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

int run_cli(int argc, char** argv) {
  const std::vector<Command> cmds = commands();
  const std::vector<std::string> args(argv + 1, argv + argc);
  // Commands that save their progress on SIGTERM/SIGUSR1 take those signals from the start: a
  // preemption while MPI starts or the model loads must not end them before the watcher exists.
  const bool saves_on_stop = std::any_of(cmds.begin(), cmds.end(), [&](const Command& c) {
    return !args.empty() && c.name == args[0] && c.saves_progress_on_stop;
  });
  if (saves_on_stop) watch_stop_signals();
  else release_deferred_stop_signals();
  // Under mpirun/srun every rank runs this; MPI is initialised only when a launcher started us.
  Session session;
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(main_help(cmds).c_str(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    fmt::print("dpo {}\n", DPO_VERSION);
    return 0;
  }
  if (args[0] == "--help-markdown") {
    fmt::print("{}", reference_markdown(cmds));
    return 0;
  }
  try {
    const Command* command = nullptr;
    std::vector<std::string> names;
    for (const auto& c : cmds) {
      names.push_back(c.name);
      if (c.name == args[0]) command = &c;
    }
    if (!command) {
      const std::string guess = closest_match(args[0], names);
      fail("unknown command '{}'{}; see dpo --help", args[0], guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess));
    }
    const ParsedArgs parsed = parse_args(*command, std::vector<std::string>(args.begin() + 1, args.end()));
    if (parsed.help) {
      fmt::print("{}", command_help(*command));
      return 0;
    }
    return command->run(session, parsed);
  } catch (const Error& e) {
    return session.report_error(e.what());
  } catch (const c10::Error& e) {
    return session.report_error(first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return session.report_error(first_line(e.what()));
  }
}

}  // namespace dpo
