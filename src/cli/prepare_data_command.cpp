// `dpo prepare-data`: data.train and data.eval tokenized once into the HDF5 preference layout
// (run.output_dir/train.h5, eval.h5), with the tokenization recorded, so that training and
// precompute-ref read ids instead of tokenizing text at every start. Under mpirun the ranks split
// the rows; rank 0 gathers them in file order and writes the files.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "dpo/cli/commands.h"
#include "dpo/data/text_tokenization.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/io/json_input.h"
#include "dpo/model/model.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;

// A rank's pairs as bytes for the gather: per pair its row (int64), then prompt, chosen and
// rejected as a length (int64) and the ids (int32), then the count of more_rejected responses
// (int64) and each of them the same way.
struct PairBytes {
  std::string bytes;
  void put(const void* data, size_t n) { bytes.append(static_cast<const char*>(data), n); }
  void put_ids(const TokenIds& ids) {
    const auto n = static_cast<int64_t>(ids.size());
    put(&n, sizeof n);
    put(ids.data(), ids.size() * sizeof(int32_t));
  }
};

std::string pairs_to_bytes(const TextPreferenceFile& file) {
  PairBytes out;
  for (size_t i = 0; i < file.pairs.size(); ++i) {
    out.put(&file.row_of_pair[i], sizeof(int64_t));
    const RawPreferencePair& pair = file.pairs[i];
    for (const TokenIds* ids : {&pair.prompt, &pair.chosen, &pair.rejected}) out.put_ids(*ids);
    const auto more = static_cast<int64_t>(pair.more_rejected.size());
    out.put(&more, sizeof more);
    for (const TokenIds& ids : pair.more_rejected) out.put_ids(ids);
  }
  return std::move(out.bytes);
}

void pairs_from_bytes(const std::string& bytes, std::vector<std::pair<int64_t, RawPreferencePair>>& into) {
  size_t at = 0;
  const auto take = [&](void* data, size_t n) {
    if (at + n > bytes.size()) fail("internal: malformed pair gather");
    std::memcpy(data, bytes.data() + at, n);
    at += n;
  };
  while (at < bytes.size()) {
    std::pair<int64_t, RawPreferencePair> row;
    take(&row.first, sizeof(int64_t));
    const auto take_ids = [&](TokenIds& ids) {
      int64_t n = 0;
      take(&n, sizeof n);
      ids.resize(static_cast<size_t>(n));
      take(ids.data(), ids.size() * sizeof(int32_t));
    };
    for (TokenIds* ids : {&row.second.prompt, &row.second.chosen, &row.second.rejected}) take_ids(*ids);
    int64_t more = 0;
    take(&more, sizeof more);
    row.second.more_rejected.resize(static_cast<size_t>(more));
    for (TokenIds& ids : row.second.more_rejected) take_ids(ids);
    into.push_back(std::move(row));
  }
}

// Every rank's pairs on rank 0, in file order (one broadcast per rank: the files are tokenized
// once, so this is not the hot path).
std::vector<RawPreferencePair> gather_in_file_order(Communicator& comm, const TextPreferenceFile& mine) {
  std::vector<std::pair<int64_t, RawPreferencePair>> rows;
  for (int root = 0; root < comm.world_size(); ++root) {
    std::string bytes = comm.rank() == root ? pairs_to_bytes(mine) : std::string();
    comm.broadcast_string(bytes, root);
    if (comm.rank() == 0) pairs_from_bytes(bytes, rows);
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<RawPreferencePair> pairs;
  pairs.reserve(rows.size());
  for (auto& row : rows) pairs.push_back(std::move(row.second));
  return pairs;
}

// The model's vocabulary size from model.policy's config.json, so that ids it cannot embed are
// refused here rather than at training; -1 (no check) when the policy has no config.json yet.
int64_t policy_vocab_size(const Config& config) {
  const fs::path file = fs::path(config.model.policy) / "config.json";
  if (!fs::is_regular_file(file)) return -1;
  return model_spec_from_hf_config(read_json_file(file.string()), file.string()).vocab_size;
}

void prepare_one(Communicator& comm, const Config& config, const std::string& key, const std::string& path,
                 const std::string& out) {
  const RowShare share{comm.rank(), comm.world_size()};
  const TokenizedRows rows = tokenize_preference_rows(key, path, config, policy_vocab_size(config), share);
  std::vector<double> counts = {static_cast<double>(rows.file.rows), static_cast<double>(rows.file.boundary_mismatches)};
  comm.all_reduce_sum(counts);
  // The slowest rank's times: the job waits for it.
  const double load_seconds = comm.all_reduce_max(rows.load_seconds);
  const double seconds = comm.all_reduce_max(rows.tokenize_seconds);
  const std::vector<RawPreferencePair> pairs = gather_in_file_order(comm, rows.file);
  if (comm.rank() == 0) {
    if (pairs.empty()) fail("{}: {}: every pair was skipped (data.boundary_mismatch: skip)", key, path);
    write_preference_hdf5(out, pairs, rows.tokenization, path);
    const double megabytes = static_cast<double>(fs::file_size(path)) / 1e6;
    fmt::print("{}: {} ({}{}) -> {}: {:.0f} rows, {} pairs, {:.0f} boundary mismatches ({}); read and tokenized in "
               "{:.2f} s: {:.0f} rows/s, {:.2f} MB/s (of the file as stored) over {} rank(s), after {:.2f} s loading the "
               "tokenizer\n",
               key, path, rows.tokenization.empty() ? "token ids" : "text tokenized by ",
               rows.tokenization.empty() ? "" : rows.tokenization.tokenizer, out, counts[0], pairs.size(), counts[1],
               config.data.boundary_mismatch == "skip" ? "skipped" : "kept", seconds, counts[0] / seconds,
               megabytes / seconds, comm.world_size(), load_seconds);
  }
  comm.barrier();  // no rank reports success before the file is in place
}

}  // namespace

int cmd_prepare_data(Session& session, const ParsedArgs& args) {
  const auto config = start_config_command(session, args.flags, "prepare-data");
  if (!config) return 0;
  if (config->data.train.empty()) fail("data.train: dpo prepare-data needs a training dataset (set data.train)");
  Communicator& comm = session.host();
  fs::create_directories(config->run.output_dir);
  const fs::path dir = config->run.output_dir;
  prepare_one(comm, *config, "data.train", config->data.train, (dir / "train.h5").string());
  if (!config->data.eval.empty()) prepare_one(comm, *config, "data.eval", config->data.eval, (dir / "eval.h5").string());
  fmt::print("train and precompute-ref read them with --set data.train={}{}\n", (dir / "train.h5").string(),
             config->data.eval.empty() ? "" : fmt::format(" --set data.eval={}", (dir / "eval.h5").string()));
  return 0;
}

}  // namespace dpo
