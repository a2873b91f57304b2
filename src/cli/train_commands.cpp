// The commands that run a config (eval, train, sft, precompute-ref, bench) and the communication
// benchmark (bench-comm): each starts the session for its run and prints what it did.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "dpo/cli/commands.h"
#include "dpo/config/config.h"
#include "dpo/error.h"
#include "dpo/loss/loss.h"
#include "dpo/reference/precompute.h"
#include "dpo/runtime/preemption.h"
#include "dpo/train/bench.h"
#include "dpo/train/evaluate.h"
#include "dpo/train/metrics.h"
#include "dpo/train/trainer.h"

namespace dpo {

std::optional<Config> start_config_command(Session& session, const FlagValues& flags, const std::string& command,
                                           bool exclusive) {
  Config config = load_config(single(flags, "--config", command), all_of(flags, "--set"));
  config.allow_changed = all_of(flags, "--allow-changed");
  if (flags.count("--dump-config")) {
    if (session.info().rank == 0) fmt::print("{}", dump_config(config));
    return std::nullopt;
  }
  session.start_run(config, command, exclusive);
  return config;
}

namespace {

void print_metrics(const std::map<std::string, double>& means, const LossOptions& loss) {
  for (const auto& name : MetricSums::metric_names(loss)) fmt::print("  {:<20} {:>12.6f}\n", name, means.at(name));
}

int train_with(Session& session, const ParsedArgs& args, Objective objective) {
  const auto config =
      start_config_command(session, args.flags, objective == Objective::Dpo ? "train" : "sft", /*exclusive=*/true);
  if (!config) return 0;
  const TrainSummary summary = run_training(*config, objective, session.tensors(), session.device());
  if (summary.preempted) return kPreemptedExitCode;
  fmt::print("done: {} steps{}; model in {}\n", summary.steps,
             summary.skipped_steps ? fmt::format(" ({} skipped as non-finite)", summary.skipped_steps) : "",
             summary.final_model_dir);
  return 0;
}

}  // namespace

int cmd_eval(Session& session, const ParsedArgs& args) {
  const auto config = start_config_command(session, args.flags, "eval");
  if (!config) return 0;
  const auto means = run_eval(*config, session.tensors(), session.device());
  fmt::print("eval metrics over {} pairs (loss {}, beta {}):\n", static_cast<int64_t>(means.at("pairs")),
             config->loss.type, config->loss.beta);
  print_metrics(means, config->loss);
  fmt::print("wrote {}\n", (std::filesystem::path(config->run.output_dir) / "eval_metrics.json").string());
  return 0;
}

int cmd_train(Session& session, const ParsedArgs& args) { return train_with(session, args, Objective::Dpo); }

int cmd_sft(Session& session, const ParsedArgs& args) { return train_with(session, args, Objective::Sft); }

int cmd_precompute_ref(Session& session, const ParsedArgs& args) {
  const auto config = start_config_command(session, args.flags, "precompute-ref");
  if (!config) return 0;
  if (!uses_reference(config->loss)) {
    fmt::print("dpo precompute-ref: loss.type {} does not use a reference model, so there is nothing to compute: "
               "train without reference.logps_path\n", config->loss.type);
    return 0;
  }
  // Host vectors only: the gather needs no device communicator.
  const PrecomputeSummary s = precompute_reference(*config, session.host(), session.device());
  if (s.preempted) return kPreemptedExitCode;
  fmt::print("wrote {}: {} pairs{} ({} scored at {:.1f} pairs/s, {} resumed from a .partial file)\n",
             config->reference.logps_path, s.examples,
             s.eval_examples ? fmt::format(" + {} eval pairs", s.eval_examples) : "", s.computed,
             s.seconds > 0 ? static_cast<double>(s.computed) / s.seconds : 0.0, s.resumed);
  return 0;
}

int cmd_bench(Session& session, const ParsedArgs& args) {
  const auto config = start_config_command(session, args.flags, "bench");
  if (!config) return 0;
  BenchOptions options;
  options.warmup_steps = integer_flag(args.flags, "--warmup", options.warmup_steps, 0);
  options.timed_steps = integer_flag(args.flags, "--steps", options.timed_steps, 1);
  options.seq_len = integer_flag(args.flags, "--seq-len", 0, 0);
  options.prompt_len = integer_flag(args.flags, "--prompt-len", 0, 0);
  options.length_spread = numeric_flag(args.flags, "--length-spread", 0.0, 0.0, false);
  const auto compare = all_of(args.flags, "--compare");
  if (compare.empty()) {
    fmt::print("{}", format_bench(run_bench(*config, options, session.device())));
    return 0;
  }
  // --compare KEY=V1,V2,...: the config once per value, each benched in turn on the same shapes.
  const std::string& spec = compare.front();
  const size_t equals = spec.find('=');
  if (compare.size() > 1 || equals == std::string::npos || equals == 0 || equals + 1 == spec.size())
    fail("bench --compare: expected one KEY=VALUE1,VALUE2,... (e.g. --compare train.precision=fp32,bf16-mixed)");
  const std::string key = spec.substr(0, equals);
  std::vector<std::string> values, overrides = all_of(args.flags, "--set");
  for (size_t begin = equals + 1;;) {
    const size_t comma = spec.find(',', begin);
    values.push_back(spec.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  std::vector<BenchResult> results;
  for (const std::string& value : values) {
    overrides.push_back(key + "=" + value);
    const Config variant = load_config(single(args.flags, "--config", "bench"), overrides);
    overrides.pop_back();
    fmt::print("== {}={}\n", key, value);
    results.push_back(run_bench(variant, options, session.device()));
    fmt::print("{}\n", format_bench(results.back()));
  }
  fmt::print("{}", format_bench_comparison(key, values, results));
  return 0;
}

// Allreduce bandwidth of gradient-sized float32 buffers over the job's host communicator.
int cmd_bench_comm(Session& session, const ParsedArgs& args) {
  Communicator& comm = session.join_job("bench-comm");
  const int64_t repeats = integer_flag(args.flags, "--repeats", 5, 1);
  const int world = comm.world_size();
  if (comm.rank() == 0)
    fmt::print("allreduce (sum, float32) over {} rank(s), {}; best of {} runs\n{:>10} {:>12} {:>14} {:>14}\n", world,
               comm.name(), repeats, "MiB", "time ms", "algbw GB/s", "busbw GB/s");
  for (const int64_t mib : {1, 4, 16, 25, 64, 128}) {
    at::Tensor buffer = at::ones({mib * (int64_t{1} << 20) / 4}, at::kFloat);
    comm.all_reduce_sum(buffer);  // warm-up: connections and pinned buffers
    double best = 1e30;
    for (int64_t r = 0; r < repeats; ++r) {
      comm.barrier();
      const auto start = std::chrono::steady_clock::now();
      comm.all_reduce_sum(buffer);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const double bytes = static_cast<double>(buffer.numel()) * 4.0;
    // busbw: the ring algorithm moves 2(n-1)/n of the buffer per rank (NCCL's convention).
    const double algbw = bytes / best / 1e9, busbw = algbw * 2.0 * (world - 1) / std::max(world, 1);
    if (comm.rank() == 0) fmt::print("{:>10} {:>12.3f} {:>14.2f} {:>14.2f}\n", mib, best * 1e3, algbw, busbw);
  }
  return 0;
}

}  // namespace dpo
