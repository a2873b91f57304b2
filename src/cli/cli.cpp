#include "dpo/cli/cli.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/cli/inspect.h"
#include "dpo/config/config.h"
#include "dpo/config/text_distance.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/model/model.h"
#include "dpo/model/sampling.h"
#include "dpo/reference/precompute.h"
#include "dpo/reference/reference_store.h"
#include "dpo/runtime/preemption.h"
#include "dpo/runtime/runtime.h"
#include "dpo/train/bench.h"
#include "dpo/train/evaluate.h"
#include "dpo/train/trainer.h"

namespace dpo {
namespace {

struct Flag {
  std::string name;  // "--config"
  std::string value_name;  // "" for a switch
  std::string help;
  bool repeatable = false;
};

struct Command {
  std::string name, summary, usage;
  std::vector<Flag> flags;
  int positionals = 0;
  std::function<int(const std::map<std::string, std::vector<std::string>>&, const std::vector<std::string>&)> run;
  bool saves_progress_on_stop = false;  // SIGTERM/SIGUSR1 end it after saving its progress (preemption.h)
};

struct ParsedArgs {
  std::map<std::string, std::vector<std::string>> flags;
  std::vector<std::string> positionals;
  bool help = false;
};

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
  if (!parsed.help && static_cast<int>(parsed.positionals.size()) != c.positionals)
    fail("dpo {}: expected {} argument(s), got {} (usage: dpo {})", c.name, c.positionals, parsed.positionals.size(),
         c.usage);
  return parsed;
}

const std::string& single(const std::map<std::string, std::vector<std::string>>& flags, const std::string& name,
                          const std::string& command) {
  const auto it = flags.find(name);
  if (it == flags.end()) fail("dpo {}: option {} is required", command, name);
  return it->second.front();
}

std::vector<std::string> all_of(const std::map<std::string, std::vector<std::string>>& flags, const std::string& name) {
  const auto it = flags.find(name);
  return it == flags.end() ? std::vector<std::string>{} : it->second;
}

// A --set value as JSON: integers, floats, booleans and null by their YAML spelling, else a string.
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

// The value of a numeric flag, `fallback` when absent; an error naming the flag unless it is a
// number (an integer when `integral`) of at least `minimum`.
double numeric_flag(const std::map<std::string, std::vector<std::string>>& flags, const std::string& name,
                    double fallback, double minimum, bool integral) {
  const auto values = all_of(flags, name);
  if (values.empty()) return fallback;
  const nlohmann::json j = json_scalar(values.front());
  if (!(integral ? j.is_number_integer() : j.is_number()) || j.get<double>() < minimum)
    fail("{}: expected {} of at least {}, got '{}'", name, integral ? "an integer" : "a number", minimum, values.front());
  return j.get<double>();
}

int64_t integer_flag(const std::map<std::string, std::vector<std::string>>& flags, const std::string& name,
                     int64_t fallback, int64_t minimum) {
  return static_cast<int64_t>(numeric_flag(flags, name, static_cast<double>(fallback), static_cast<double>(minimum), true));
}

Config config_from_flags(const std::map<std::string, std::vector<std::string>>& flags, const std::string& command) {
  return load_config(single(flags, "--config", command), all_of(flags, "--set"));
}

const std::vector<Flag> kConfigFlags = {
    {"--config", "FILE", "YAML run configuration"},
    {"--set", "KEY=VALUE", "override a config key, e.g. --set loss.beta=0.2", true},
    {"--dump-config", "", "print the resolved configuration and exit"},
};

// The communicators of a run: host values (and CPU tensors) over MPI, or alone; CUDA tensors over
// NCCL when the backend is nccl (its host collectives go to `host`).
struct Distributed {
  std::unique_ptr<Communicator> host, device;
  Communicator& tensors() { return device ? *device : *host; }
};

const MpiRuntime* g_runtime = nullptr;  // the process's MPI, set by run_cli

// Resolves the config of a config command, refuses an srun that started no MPI job, checks every
// rank runs the same config, picks the communicators and threads, and quiets stdout on ranks
// other than 0 (their errors still reach stderr). With --dump-config prints the config and returns nullopt.
std::optional<std::pair<Config, Distributed>> prepare(const std::map<std::string, std::vector<std::string>>& flags,
                                                      const std::string& command) {
  Config config = config_from_flags(flags, command);
  const ProcessInfo& info = g_runtime->info();
  if (flags.count("--dump-config")) {
    if (info.rank == 0) fmt::print("{}", dump_config(config));
    return std::nullopt;
  }
  if (const std::string why = srun_without_mpi_reason(info.world_size); !why.empty()) fail("dpo {}: {}", command, why);
  Distributed dist;
  dist.host = make_host_communicator(*g_runtime);
  require_same_config(*dist.host, dump_config(config));
  std::string backend = config.dist.backend;
  if (backend == "auto") backend = config.model.device == "cuda" ? "nccl" : "mpi";
  if (backend == "nccl") {
#ifdef DPO_WITH_NCCL
    dist.device = make_nccl_communicator(*dist.host, info.local_rank);
#else
    fail("dist.backend: nccl is not available in this build (built without NCCL); use dist.backend: mpi on cpu");
#endif
  }
  if (info.rank != 0 && !std::freopen("/dev/null", "w", stdout)) fail("cannot redirect stdout of rank {}", info.rank);
  if (info.rank == 0) write_resolved_config(config);
  const int threads = configure_threads(info.cores);
  fmt::print("dpo {}: {} on {}, {} rank(s) ({} backend), {} threads per rank\n", command, config.model.dtype,
             config.model.device, info.world_size, dist.tensors().name(), threads);
  return std::make_pair(std::move(config), std::move(dist));
}

void print_metrics(const std::map<std::string, double>& means) {
  for (const auto& name : MetricSums::preference_metric_names()) fmt::print("  {:<20} {:>12.6f}\n", name, means.at(name));
}

int cmd_eval(const std::map<std::string, std::vector<std::string>>& flags, const std::vector<std::string>&) {
  auto prepared = prepare(flags, "eval");
  if (!prepared) return 0;
  const Config& config = prepared->first;
  const auto means = run_eval(config, prepared->second.tensors());
  fmt::print("eval metrics over {} pairs (loss {}, beta {}):\n", static_cast<int64_t>(means.at("pairs")),
             config.loss.type, config.loss.beta);
  print_metrics(means);
  fmt::print("wrote {}\n", (std::filesystem::path(config.run.output_dir) / "eval_metrics.json").string());
  return 0;
}

int cmd_train(const std::map<std::string, std::vector<std::string>>& flags, Objective objective) {
  auto prepared = prepare(flags, objective == Objective::Dpo ? "train" : "sft");
  if (!prepared) return 0;
  const TrainSummary summary = run_training(prepared->first, objective, prepared->second.tensors());
  if (summary.preempted) return kPreemptedExitCode;
  fmt::print("done: {} steps{}; model in {}\n", summary.steps,
             summary.skipped_steps ? fmt::format(" ({} skipped as non-finite)", summary.skipped_steps) : "",
             summary.final_model_dir);
  return 0;
}

int cmd_precompute_ref(const std::map<std::string, std::vector<std::string>>& flags, const std::vector<std::string>&) {
  auto prepared = prepare(flags, "precompute-ref");
  if (!prepared) return 0;
  const Config& config = prepared->first;
  // Host vectors only: the gather needs no device communicator.
  const PrecomputeSummary s = precompute_reference(config, *prepared->second.host);
  if (s.preempted) return kPreemptedExitCode;
  fmt::print("wrote {}: {} pairs{} ({} scored at {:.1f} pairs/s, {} resumed from a .partial file)\n",
             config.reference.logps_path, s.examples,
             s.eval_examples ? fmt::format(" + {} eval pairs", s.eval_examples) : "", s.computed,
             s.seconds > 0 ? static_cast<double>(s.computed) / s.seconds : 0.0, s.resumed);
  return 0;
}

int cmd_bench(const std::map<std::string, std::vector<std::string>>& flags, const std::vector<std::string>&) {
  const auto prepared = prepare(flags, "bench");
  if (!prepared) return 0;
  const Config* config = &prepared->first;
  BenchOptions options;
  options.warmup_steps = integer_flag(flags, "--warmup", options.warmup_steps, 0);
  options.timed_steps = integer_flag(flags, "--steps", options.timed_steps, 1);
  options.seq_len = integer_flag(flags, "--seq-len", 0, 0);
  fmt::print("{}", format_bench(run_bench(*config, options)));
  return 0;
}

// Allreduce bandwidth of gradient-sized float32 buffers over the job's host communicator.
int cmd_bench_comm(const std::map<std::string, std::vector<std::string>>& flags, const std::vector<std::string>&) {
  if (const std::string why = srun_without_mpi_reason(g_runtime->info().world_size); !why.empty())
    fail("dpo bench-comm: {}", why);
  const auto comm = make_host_communicator(*g_runtime);
  const int64_t repeats = integer_flag(flags, "--repeats", 5, 1);
  const int world = comm->world_size();
  if (comm->rank() == 0)
    fmt::print("allreduce (sum, float32) over {} rank(s), {}; best of {} runs\n{:>10} {:>12} {:>14} {:>14}\n", world,
               comm->name(), repeats, "MiB", "time ms", "algbw GB/s", "busbw GB/s");
  for (const int64_t mib : {1, 4, 16, 25, 64, 128}) {
    at::Tensor buffer = at::ones({mib * (int64_t{1} << 20) / 4}, at::kFloat);
    comm->all_reduce_sum(buffer);  // warm-up: connections and pinned buffers
    double best = 1e30;
    for (int64_t r = 0; r < repeats; ++r) {
      comm->barrier();
      const auto start = std::chrono::steady_clock::now();
      comm->all_reduce_sum(buffer);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const double bytes = static_cast<double>(buffer.numel()) * 4.0;
    // busbw: the ring algorithm moves 2(n-1)/n of the buffer per rank (NCCL's convention).
    const double algbw = bytes / best / 1e9, busbw = algbw * 2.0 * (world - 1) / std::max(world, 1);
    if (comm->rank() == 0) fmt::print("{:>10} {:>12.3f} {:>14.2f} {:>14.2f}\n", mib, best * 1e3, algbw, busbw);
  }
  return 0;
}

int cmd_init_model(const std::map<std::string, std::vector<std::string>>& flags, const std::vector<std::string>&) {
  const Architecture arch = parse_architecture(single(flags, "--arch", "init-model"));
  nlohmann::json hf = default_hf_config(arch);
  for (const auto& kv : all_of(flags, "--set")) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail("--set {}: expected KEY=VALUE", kv);
    const std::string key = kv.substr(0, eq);
    if (!hf.contains(key)) {
      std::vector<std::string> keys;
      for (const auto& item : hf.items()) keys.push_back(item.key());
      const std::string guess = closest_match(key, keys);
      fail("--set {}: unknown config.json key '{}' for this architecture{}", kv, key,
           guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess));
    }
    hf[key] = json_scalar(kv.substr(eq + 1));
  }
  const ModelSpec spec = model_spec_from_hf_config(hf, "--set");
  const auto seed = static_cast<uint64_t>(integer_flag(flags, "--seed", 0, 0));
  CausalLM model = build_model(spec, seed);
  const auto dtype_flags = all_of(flags, "--dtype");
  if (!dtype_flags.empty()) model->to(parse_dtype(dtype_flags.front()));
  const std::string out = single(flags, "--out", "init-model");
  save_model(*model, out);
  fmt::print("{}", describe_model_dir(out));
  return 0;
}

int cmd_inspect(const std::map<std::string, std::vector<std::string>>&, const std::vector<std::string>& pos) {
  fmt::print("{}", inspect_path(pos.at(0)));
  return 0;
}

bool is_hdf5_name(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".h5" || ext == ".hdf5";
}

int cmd_convert_data(const std::map<std::string, std::vector<std::string>>&, const std::vector<std::string>& pos) {
  const std::string& in = pos.at(0);
  const std::string& out = pos.at(1);
  const auto pairs = read_preference_file(in);
  if (is_hdf5_name(out)) write_preference_hdf5(out, pairs);
  else if (std::filesystem::path(out).extension() == ".jsonl") write_preference_jsonl(out, pairs);
  else fail("{}: output must end in .h5, .hdf5 or .jsonl", out);
  fmt::print("{}: wrote {} pairs from {}\n", out, pairs.size(), in);
  return 0;
}

int cmd_make_demo_data(const std::map<std::string, std::vector<std::string>>& flags, const std::vector<std::string>&) {
  auto integer = [&](const std::string& name, int64_t fallback) { return integer_flag(flags, name, fallback, 1); };
  const std::filesystem::path out = single(flags, "--out", "make-demo-data");
  SyntheticTaskOptions options;
  options.vocab_size = integer("--vocab-size", 256);
  options.seed = static_cast<uint64_t>(integer("--seed", 1));
  options.pairs = integer("--train-pairs", 2048);
  std::filesystem::create_directories(out);
  write_preference_jsonl((out / "train.jsonl").string(), make_synthetic_pairs(options));
  options.seed += 1000003;  // held-out pairs from a different stream
  options.pairs = integer("--eval-pairs", 256);
  write_preference_jsonl((out / "eval.jsonl").string(), make_synthetic_pairs(options));
  fmt::print("wrote {} and {} (synthetic task: a response is better the more of its tokens occur in the prompt)\n",
             (out / "train.jsonl").string(), (out / "eval.jsonl").string());
  return 0;
}

int cmd_score_synthetic(const std::map<std::string, std::vector<std::string>>& flags, const std::vector<std::string>&) {
  auto number = [&](const std::string& name, double fallback) { return numeric_flag(flags, name, fallback, 0.0, false); };
  configure_threads();
  const std::string model_dir = single(flags, "--model", "score-synthetic");
  CausalLM model = load_model(model_dir, at::kFloat);
  model->eval();
  const auto pairs = read_preference_file(single(flags, "--data", "score-synthetic"), model->spec().vocab_size);
  std::vector<TokenIds> prompts;
  for (const auto& p : pairs) prompts.push_back(p.prompt);
  const auto new_tokens = static_cast<int64_t>(number("--max-new-tokens", 6));
  const auto responses = sample_responses(*model, prompts, new_tokens, number("--temperature", 1.0),
                                          static_cast<uint64_t>(number("--seed", 0)));
  double total = 0, chosen = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    total += synthetic_reward(pairs[i].prompt, responses[i]);
    chosen += synthetic_reward(pairs[i].prompt, pairs[i].chosen);
  }
  const double n = static_cast<double>(std::max<size_t>(pairs.size(), 1));
  fmt::print("{}: mean ground-truth reward of sampled responses {:.4f} over {} prompts (the data's chosen: {:.4f})\n",
             model_dir, total / n, pairs.size(), chosen / n);
  return 0;
}

std::vector<Command> commands() {
  return {
      {"eval", "Preference metrics of model.policy against model.reference on data.eval, printed and written to "
               "<run.output_dir>/eval_metrics.json.",
       "eval --config FILE [--set KEY=VALUE]...", kConfigFlags, 0, cmd_eval},
      {"train", "DPO training of model.policy against model.reference on data.train (resumes from the newest "
                "checkpoint in run.output_dir).",
       "train --config FILE [--set KEY=VALUE]...", kConfigFlags, 0,
       [](const auto& flags, const auto&) { return cmd_train(flags, Objective::Dpo); }, true},
      {"precompute-ref", "Compute the reference model's log-probs of data.train (and data.eval) once into "
                         "reference.logps_path (HDF5); train and eval then never load the reference model.",
       "precompute-ref --config FILE [--set KEY=VALUE]...", kConfigFlags, 0, cmd_precompute_ref, true},
      {"sft", "Supervised fine-tuning on prompt+chosen with the prompt masked (makes a reference model).",
       "sft --config FILE [--set KEY=VALUE]...", kConfigFlags, 0,
       [](const auto& flags, const auto&) { return cmd_train(flags, Objective::Sft); }, true},
      {"bench", "Time training steps on synthetic batches of the configured shapes; tokens/s and fraction of the "
                "measured matmul peak.",
       "bench --config FILE [--set KEY=VALUE]... [--steps N] [--warmup N] [--seq-len T]",
       {kConfigFlags[0], kConfigFlags[1], kConfigFlags[2],
        {"--steps", "N", "timed steps (default 5)"},
        {"--warmup", "N", "untimed warm-up steps (default 2)"},
        {"--seq-len", "T", "row length (default data.max_length)"}},
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
       "make-demo-data --out DIR [--train-pairs N] [--eval-pairs N] [--vocab-size V] [--seed S]",
       {{"--out", "DIR", "output directory"},
        {"--train-pairs", "N", "training pairs (default 2048)"},
        {"--eval-pairs", "N", "held-out pairs (default 256)"},
        {"--vocab-size", "V", "vocabulary size (default 256)"},
        {"--seed", "S", "seed (default 1)"}},
       0, cmd_make_demo_data},
      {"score-synthetic", "Sample responses of a model to the prompts of a synthetic-task file and report their mean "
                          "ground-truth reward.",
       "score-synthetic --model DIR --data FILE [--max-new-tokens K] [--temperature T] [--seed S]",
       {{"--model", "DIR", "Hugging Face model directory"},
        {"--data", "FILE", "preference file of the synthetic task (its prompts are used)"},
        {"--max-new-tokens", "K", "tokens sampled per prompt (default 6)"},
        {"--temperature", "T", "sampling temperature, 0 = greedy (default 1.0)"},
        {"--seed", "S", "sampling seed (default 0)"}},
       0, cmd_score_synthetic},
  };
}

std::string main_help(const std::vector<Command>& cmds) {
  std::string out = "usage: dpo COMMAND [OPTIONS]\n\nDirect Preference Optimization for causal language models.\n\ncommands:\n";
  for (const auto& c : cmds) {
    const auto sentence_end = c.summary.find(". ");  // the first sentence only
    out += fmt::format("  {:<16} {}\n", c.name, sentence_end == std::string::npos ? c.summary : c.summary.substr(0, sentence_end + 1));
  }
  out += "\n`dpo COMMAND --help` describes a command; `dpo --version` prints the version.\n\nconfig keys:\n";
  out += options_help();
  return out;
}

// libtorch's messages carry a C++ backtrace after the first line; users need the first line.
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// One line on stderr. With several ranks the others may be waiting in a collective for this one,
// so the whole job is aborted rather than this rank returning.
int report_error(const MpiRuntime& runtime, const std::string& message) {
  if (runtime.active() && runtime.info().world_size > 1) abort_job(message);
  fmt::print(stderr, "dpo: error: {}\n", message);
  return 1;
}

}  // namespace

int run_cli(int argc, char** argv) {
  const std::vector<Command> cmds = commands();
  const std::vector<std::string> args(argv + 1, argv + argc);
  // Commands that save their progress on SIGTERM/SIGUSR1 take those signals from the start: a
  // preemption while MPI starts or the model loads must not end them before the handler exists.
  for (const Command& c : cmds)
    if (!args.empty() && c.name == args[0] && c.saves_progress_on_stop) install_stop_signal_handlers();
  // Under mpirun/srun every rank runs this; MPI is initialised only when a launcher started us.
  const MpiRuntime runtime;
  g_runtime = &runtime;
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(main_help(cmds).c_str(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    fmt::print("dpo {}\n", DPO_VERSION);
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
    return command->run(parsed.flags, parsed.positionals);
  } catch (const Error& e) {
    return report_error(runtime, e.what());
  } catch (const c10::Error& e) {
    return report_error(runtime, first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return report_error(runtime, first_line(e.what()));
  }
}

}  // namespace dpo
