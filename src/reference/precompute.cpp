// `dpo precompute-ref`: the reference model's log-probs of every pair, computed once.
//
// Ranks split the examples (rank r takes i = r mod W) and score them in batches with pair_logps,
// the function the live reference path uses, so the stored values are the live ones. Results reach
// rank 0 by summing host vectors across ranks (zeros everywhere but the slots a rank filled, plus
// a filled count per slot that proves every example was scored exactly once): a rank-0 gather via
// allreduce, not parallel HDF5, because the values are tiny (16 bytes per pair) and a single
// writer keeps the file logic serial and simple. Rank 0 saves progress to `<path>.partial` after
// every round of batches; a rerun with the same inputs resumes from it. A stop signal (preemption.h)
// ends every rank after the same batch, once the round so far is saved.
#include <chrono>
#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>

#include "dpo/data/collate.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/loss/logps.h"
#include "dpo/model/model.h"
#include "dpo/reference/reference_store.h"
#include "dpo/runtime/preemption.h"
#include "dpo/runtime/runtime.h"
#include "dpo/train/evaluate.h"
#include "dpo/train/progress.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A round is at most this many batches per rank; progress is saved after each round.
constexpr int64_t kMaxBatchesPerRound = 16;

// Rank 0's progress line: rewritten in place on a terminal, one line per ~10% in a log file.
class Progress {
 public:
  Progress(int64_t total, bool active) : total_(total), active_(active), start_(Clock::now()) {}
  void update(int64_t done) {
    if (!active_ || total_ <= 0) return;
    const int64_t decile = done * 10 / total_;
    const bool tty = stdout_is_interactive();
    if (!tty && decile == last_decile_) return;
    last_decile_ = decile;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const std::string line =
        fmt::format("precompute-ref: {}/{} pairs | {:.1f} pairs/s | ETA {}", done, total_, rate,
                    format_duration(rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0));
    if (tty) fmt::print("\r{:<80}{}", line, done == total_ ? "\n" : "");
    else fmt::print("{}\n", line);
    std::fflush(stdout);
  }

 private:
  int64_t total_;
  bool active_;
  Clock::time_point start_;
  int64_t last_decile_ = -1;
};

// Whether a .partial file's inputs are exactly this run's (only then are its values reusable).
std::string partial_mismatch(const ReferenceFile& partial, const ReferenceProvenance& want, size_t n,
                             std::optional<size_t> eval_n) {
  const ReferenceProvenance& have = partial.provenance;
  if (have.dataset_fingerprint != want.dataset_fingerprint) return "data.train differs";
  if (have.eval_dataset_fingerprint != want.eval_dataset_fingerprint) return "data.eval differs";
  if (have.model_fingerprint != want.model_fingerprint) return "model.reference differs";
  if (have.truncation != want.truncation) return "truncation differs";
  if (have.dtype != want.dtype || have.device != want.device) return "dtype/device differ";
  if (partial.train.size() != n || partial.eval.has_value() != eval_n.has_value() ||
      (eval_n && partial.eval->size() != *eval_n))
    return "example counts differ";
  return "";
}

}  // namespace

PrecomputeSummary precompute_reference(const Config& config, Communicator& comm) {
  const std::string& path = config.reference.logps_path;
  if (path.empty()) fail("reference.logps_path: dpo precompute-ref needs the output file (set reference.logps_path)");
  if (config.data.train.empty()) fail("data.train: dpo precompute-ref needs a training dataset (set data.train)");
  const bool root = comm.rank() == 0;
  const int64_t world = comm.world_size();

  CausalLM model = load_model(config.model.reference, parse_dtype(config.model.dtype), config.model.device);
  model->eval();
  require_same_weights_on_all_ranks(comm, "model.reference", config.model.reference, model->parameters());
  const TruncationRule rule = truncation_rule(config.data);
  std::vector<PreferenceDataset> datasets;
  datasets.push_back(PreferenceDataset::load(config.data.train, rule, model->spec().vocab_size));
  if (!config.data.eval.empty()) datasets.push_back(PreferenceDataset::load(config.data.eval, rule, model->spec().vocab_size));
  for (const auto& d : datasets) fmt::print("{}\n", d.summary_line());
  require_same_dataset_on_all_ranks(comm, "data.train", datasets[0]);
  if (datasets.size() > 1) require_same_dataset_on_all_ranks(comm, "data.eval", datasets[1]);

  ReferenceFile state;  // complete only on rank 0
  state.provenance = expected_provenance(config, true, datasets.size() > 1, comm);
  state.train = ReferenceSplit(datasets[0].size());
  if (datasets.size() > 1) state.eval = ReferenceSplit(datasets[1].size());
  const auto split_of = [&](size_t s) -> ReferenceSplit& { return s == 0 ? state.train : *state.eval; };

  const std::string partial_path = path + ".partial";
  PrecomputeSummary summary;
  if (root && fs::exists(partial_path)) {
    std::string why;
    try {
      ReferenceFile partial = read_reference_file(partial_path, /*require_complete=*/false);
      why = partial_mismatch(partial, state.provenance,  datasets[0].size(),
                             state.eval ? std::optional<size_t>(state.eval->size()) : std::nullopt);
      if (why.empty()) {
        partial.provenance = state.provenance;
        state = std::move(partial);
      }
    } catch (const Error& e) {
      why = e.what();
    }
    if (!why.empty()) {
      fmt::print(stderr, "dpo: warning: {}: discarding progress of another computation ({})\n", partial_path, why);
      fs::remove(partial_path);
    } else {
      fmt::print("resuming from {}\n", partial_path);
    }
  }

  // Every rank learns which examples rank 0 already has.
  int64_t to_compute = 0;
  for (size_t s = 0; s < datasets.size(); ++s) {
    std::vector<double> filled(split_of(s).filled.begin(), split_of(s).filled.end());
    comm.all_reduce_sum(filled);
    for (size_t i = 0; i < filled.size(); ++i) split_of(s).filled[i] = filled[i] > 0.5 ? 1 : 0;
    const int64_t already = static_cast<int64_t>(filled.size()) - split_of(s).unfilled();
    summary.resumed += already;
    to_compute += split_of(s).unfilled();
  }

  Progress progress(to_compute, root);
  const auto start = Clock::now();
  for (size_t s = 0; s < datasets.size(); ++s) {
    const PreferenceDataset& data = datasets[s];
    ReferenceSplit& values = split_of(s);
    const auto n = static_cast<int64_t>(data.size());
    // Every rank knows every rank's work list (the filled mask is shared), so a round's results
    // travel as W x capacity slots, not as N-long vectors: the gather costs O(round), not O(N).
    std::vector<std::vector<int64_t>> work(static_cast<size_t>(world));
    for (int64_t i = 0; i < n; ++i)
      if (!values.filled[static_cast<size_t>(i)]) work[static_cast<size_t>(i % world)].push_back(i);
    const std::vector<int64_t>& mine = work[static_cast<size_t>(comm.rank())];
    const int64_t batch = config.reference.batch_size;
    int64_t max_batches = 0;
    for (const auto& w : work) max_batches = std::max(max_batches, (static_cast<int64_t>(w.size()) + batch - 1) / batch);
    // About ten rounds for a small job (a progress line each), at most kMaxBatchesPerRound batches
    // of work lost to a crash for a large one.
    const int64_t per_round = std::clamp<int64_t>((max_batches + 9) / 10, 1, kMaxBatchesPerRound);
    const int64_t capacity = per_round * batch;  // pairs per rank per round
    constexpr int64_t kFields = 5;  // chosen, rejected, chosen length, rejected length, filled count
    for (int64_t round = 0; round * per_round < max_batches; ++round) {
      const int64_t first = round * capacity;
      std::vector<double> slots(static_cast<size_t>(world * capacity * kFields), 0.0);
      const auto slot = [&](int64_t rank, int64_t k, int64_t field) -> double& {
        return slots[static_cast<size_t>((rank * capacity + k) * kFields + field)];
      };
      const int64_t my_end = std::min<int64_t>(static_cast<int64_t>(mine.size()), first + capacity);
      const auto score = [&](int64_t begin, int64_t end) {  // my examples [begin, end) into their slots
        const std::vector<int64_t> indices(mine.begin() + begin, mine.begin() + end);
        PairLogps ref;
        {
          c10::InferenceMode no_grad;
          ref = pair_logps(*model, collate_pairs(data, indices));
        }
        const at::Tensor c = ref.chosen.to(at::kCPU, at::kDouble).contiguous(), r = ref.rejected.to(at::kCPU, at::kDouble).contiguous();
        const at::Tensor ct = ref.chosen_tokens.to(at::kCPU).contiguous(), rt = ref.rejected_tokens.to(at::kCPU).contiguous();
        const auto ca = c.accessor<double, 1>(), ra = r.accessor<double, 1>();
        const auto cta = ct.accessor<int64_t, 1>(), rta = rt.accessor<int64_t, 1>();
        for (int64_t k = 0; k < end - begin; ++k) {
          const int64_t at_slot = begin - first + k;
          slot(comm.rank(), at_slot, 0) = ca[k];
          slot(comm.rank(), at_slot, 1) = ra[k];
          slot(comm.rank(), at_slot, 2) = static_cast<double>(cta[k]);
          slot(comm.rank(), at_slot, 3) = static_cast<double>(rta[k]);
          slot(comm.rank(), at_slot, 4) = 1.0;
        }
      };
      // Every rank passes the round's batch positions (its own may run out earlier) and reduces the
      // stop flag after each, so all stop after the same batch; the round is then saved as far as
      // it got. A preemption's warning window need only cover one batch, not a round.
      const int64_t round_batches = std::min(per_round, max_batches - round * per_round);
      int64_t batches_done = 0;
      bool stopping = false;
      while (batches_done < round_batches && !stopping) {
        const int64_t begin = first + batches_done * batch;
        if (begin < my_end) score(begin, std::min(my_end, begin + batch));
        // After the round's last batch, the check below does it once the round is saved.
        if (++batches_done < round_batches) stopping = comm.any(stop_requested());
      }
      comm.all_reduce_sum(slots);
      int64_t fresh = 0;
      const int64_t delivered = std::min(capacity, batches_done * batch);  // slots filled on every rank
      for (int64_t q = 0; q < world; ++q) {
        const auto& theirs = work[static_cast<size_t>(q)];
        for (int64_t k = 0; k < delivered && first + k < static_cast<int64_t>(theirs.size()); ++k) {
          const auto i = static_cast<size_t>(theirs[static_cast<size_t>(first + k)]);
          if (slot(q, k, 4) != 1.0)
            fail("internal: rank {} delivered example {} of {} {} times in round {}", q, i, data.path(), slot(q, k, 4), round);
          values.chosen[i] = slot(q, k, 0);
          values.rejected[i] = slot(q, k, 1);
          values.chosen_lengths[i] = static_cast<int32_t>(slot(q, k, 2));
          values.rejected_lengths[i] = static_cast<int32_t>(slot(q, k, 3));
          values.filled[i] = 1;
          ++fresh;
        }
      }
      summary.computed += fresh;
      if (root) write_reference_file(partial_path, state, /*with_filled_mask=*/true);
      progress.update(summary.computed);
      // After rank 0 has saved the round, so that a preempted job loses nothing it computed.
      if ((stopping || comm.any(stop_requested())) && summary.computed < to_compute) {
        fmt::print("stop requested (SIGTERM/SIGUSR1): {} of {} pairs saved in {}; rerun the same command to resume\n",
                   summary.resumed + summary.computed, summary.resumed + to_compute, partial_path);
        summary.preempted = true;
        summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
        return summary;
      }
    }
  }
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  summary.examples = static_cast<int64_t>(state.train.size());
  summary.eval_examples = state.eval ? static_cast<int64_t>(state.eval->size()) : 0;

  if (root) {
    for (size_t s = 0; s < datasets.size(); ++s)
      if (const int64_t missing = split_of(s).unfilled())
        fail("internal: {} examples of {} were never scored", missing, datasets[s].path());
    if (!state.eval) state.provenance.eval_dataset.clear();
    write_reference_file(path, state, /*with_filled_mask=*/false);
    fs::remove(partial_path);
  }
  comm.barrier();
  return summary;
}

}  // namespace dpo
