// The commands on files: convert-data (JSONL <-> HDF5), make-demo-data (the synthetic task) and
// inspect (a model directory, a dataset or a reference log-prob file). None needs MPI.
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "dpo/cli/commands.h"
#include "dpo/cli/inspect.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/error.h"

namespace dpo {
namespace {

bool is_hdf5_name(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".h5" || ext == ".hdf5";
}

}  // namespace

int cmd_inspect(Session&, const ParsedArgs& args) {
  std::string text = inspect_path(args.positionals.at(0));
  if (text.empty() || text.back() != '\n') text += '\n';  // a shell prompt never lands on the last line
  fmt::print("{}", text);
  return 0;
}

int cmd_convert_data(Session&, const ParsedArgs& args) {
  const std::string& in = args.positionals.at(0);
  const std::string& out = args.positionals.at(1);
  const auto pairs = read_preference_file(in);
  if (is_hdf5_name(out)) write_preference_hdf5(out, pairs);
  else if (std::filesystem::path(out).extension() == ".jsonl") write_preference_jsonl(out, pairs);
  else fail("{}: output must end in .h5, .hdf5 or .jsonl", out);
  fmt::print("{}: wrote {} pairs from {}\n", out, pairs.size(), in);
  return 0;
}

int cmd_make_demo_data(Session&, const ParsedArgs& args) {
  auto integer = [&](const std::string& name, int64_t fallback) { return integer_flag(args.flags, name, fallback, 1); };
  const std::filesystem::path out = single(args.flags, "--out", "make-demo-data");
  SyntheticTaskOptions options;
  options.vocab_size = integer("--vocab-size", 256);
  options.seed = static_cast<uint64_t>(integer("--seed", 1));
  options.pairs = integer("--train-pairs", 2048);
  options.responses = integer("--responses", 2);
  if (options.responses < 2) fail("--responses: a preference needs at least 2 responses, got {}", options.responses);
  std::filesystem::create_directories(out);
  write_preference_jsonl((out / "train.jsonl").string(), make_synthetic_pairs(options));
  options.seed += 1000003;  // held-out pairs from a different stream
  options.pairs = integer("--eval-pairs", 256);
  write_preference_jsonl((out / "eval.jsonl").string(), make_synthetic_pairs(options));
  fmt::print("wrote {} and {} (synthetic task: a response is better the more of its tokens occur in the prompt)\n",
             (out / "train.jsonl").string(), (out / "eval.jsonl").string());
  return 0;
}

}  // namespace dpo
