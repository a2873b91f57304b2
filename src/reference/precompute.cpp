// Ranks split the examples (rank r takes i = r mod W) and score them in batches with pair_logps,
// the function the live reference path uses, so the stored values are the live ones. Results reach
// rank 0 by summing host vectors across ranks (zeros everywhere but the slots a rank filled, plus
// a filled count per slot that proves every example was scored exactly once): a rank-0 gather via
// allreduce, not parallel HDF5, because the values are tiny (16 bytes per pair) and a single
// writer keeps the file logic serial and simple. Rank 0 saves progress to `<path>.partial` after
// every round of batches; a rerun with the same inputs resumes from it. A stop signal (preemption.h)
// ends every rank after the same batch, once the round so far is saved.
#include "dpo/reference/precompute.h"

#include <chrono>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>

#include "dpo/data/collate.h"
#include "dpo/data/text_tokenization.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/loss/logps.h"
#include "dpo/model/model.h"
#include "dpo/model/precision.h"
#include "dpo/reference/reference_store.h"
#include "dpo/runtime/console.h"
#include "dpo/runtime/preemption.h"

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
    if (!stdout_is_interactive() && decile == last_decile_) return;
    last_decile_ = decile;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const std::string line =
        fmt::format("precompute-ref: {}/{} pairs | {:.1f} pairs/s | ETA {}", done, total_, rate,
                    format_duration(rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0));
    print_status_line(line, 80);
    if (done == total_) end_status_line();
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
  if (have.tokenization != want.tokenization || have.eval_tokenization != want.eval_tokenization)
    return "the tokenization of the data differs";
  if (have.model_fingerprint != want.model_fingerprint) return "model.reference differs";
  if (have.logp_weighting != want.logp_weighting) return "loss.ld_alpha differs";
  if (have.truncation != want.truncation) return "truncation differs";
  if (have.dtype != want.dtype || have.device != want.device || have.precision != want.precision)
    return "dtype/precision/device differ";
  if (partial.train.size() != n || partial.eval.has_value() != eval_n.has_value() ||
      (eval_n && partial.eval->size() != *eval_n))
    return "example counts differ";
  return "";
}

// One precompute-ref run: the model and datasets, the values so far (complete only on rank 0), and
// the scoring of the unfilled examples in rounds.
class Precompute {
 public:
  Precompute(const Config& config, Communicator& comm, at::Device device)
      : config_(config),
        comm_(comm),
        device_(device),
        root_(comm.rank() == 0),
        partial_path_(config.reference.logps_path + ".partial") {}

  PrecomputeSummary run() {
    load_inputs();
    resume_from_partial();
    const int64_t to_compute = share_filled_masks();
    Progress progress(to_compute, root_);
    const auto start = Clock::now();
    for (size_t s = 0; s < datasets_.size(); ++s) {
      if (score_split(s, progress) && summary_.computed < to_compute) {
        fmt::print("stop requested (SIGTERM/SIGUSR1): {} of {} pairs saved in {}; rerun the same command to resume\n",
                   summary_.resumed + summary_.computed, summary_.resumed + to_compute, partial_path_);
        summary_.preempted = true;
        summary_.seconds = std::chrono::duration<double>(Clock::now() - start).count();
        return summary_;
      }
    }
    summary_.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    summary_.examples = static_cast<int64_t>(state_.train.size());
    summary_.eval_examples = state_.eval ? static_cast<int64_t>(state_.eval->size()) : 0;
    write_final_file();
    return summary_;
  }

 private:
  ReferenceSplit& split(size_t s) { return s == 0 ? state_.train : *state_.eval; }

  // The reference model and the datasets, the same on every rank, and the empty value vectors.
  void load_inputs() {
    // The policy's numerics (model/precision.h), so that at step 1 the margins of policy == reference are 0.
    const Precision precision = precision_of(config_);
    require_precision_available(precision, config_.model.device);
    model_ = load_model(config_.model.reference, precision, device_.str());
    model_->eval();
    require_same_weights_on_all_ranks(comm_, "model.reference", config_.model.reference, model_->parameters());
    datasets_.push_back(load_preference_data("data.train", config_.data.train, config_, model_->spec().vocab_size));
    if (!config_.data.eval.empty())
      datasets_.push_back(load_preference_data("data.eval", config_.data.eval, config_, model_->spec().vocab_size));
    for (const auto& d : datasets_) fmt::print("{}\n", d.summary_line());
    require_same_dataset_on_all_ranks(comm_, "data.train", datasets_[0]);
    if (datasets_.size() > 1) require_same_dataset_on_all_ranks(comm_, "data.eval", datasets_[1]);
    state_.provenance = expected_provenance(config_, true, datasets_.size() > 1, comm_);
    state_.provenance.tokenization = datasets_[0].tokenization().key();
    if (datasets_.size() > 1) state_.provenance.eval_tokenization = datasets_[1].tokenization().key();
    state_.train = ReferenceSplit(datasets_[0].size(), datasets_[0].max_more_rejected());
    if (datasets_.size() > 1) state_.eval = ReferenceSplit(datasets_[1].size(), datasets_[1].max_more_rejected());
  }

  // Rank 0 takes the values of a .partial file computed from exactly these inputs; any other is
  // discarded with a warning.
  void resume_from_partial() {
    if (!root_ || !fs::exists(partial_path_)) return;
    std::string why;
    try {
      ReferenceFile partial = read_reference_file(partial_path_, /*require_complete=*/false);
      why = partial_mismatch(partial, state_.provenance, datasets_[0].size(),
                             state_.eval ? std::optional<size_t>(state_.eval->size()) : std::nullopt);
      if (why.empty() && (partial.train.more_columns != state_.train.more_columns ||
                          (state_.eval && partial.eval->more_columns != state_.eval->more_columns)))
        why = "the number of ranked responses differs";
      if (why.empty()) {
        partial.provenance = state_.provenance;
        state_ = std::move(partial);
      }
    } catch (const Error& e) {
      why = e.what();
    }
    if (!why.empty()) {
      fmt::print(stderr, "dpo: warning: {}: discarding progress of another computation ({})\n", partial_path_, why);
      fs::remove(partial_path_);
    } else {
      fmt::print("resuming from {}\n", partial_path_);
    }
  }

  // Every rank learns which examples rank 0 already has; returns how many are left to score.
  int64_t share_filled_masks() {
    int64_t to_compute = 0;
    for (size_t s = 0; s < datasets_.size(); ++s) {
      std::vector<double> filled(split(s).filled.begin(), split(s).filled.end());
      comm_.all_reduce_sum(filled);
      for (size_t i = 0; i < filled.size(); ++i) split(s).filled[i] = filled[i] > 0.5 ? 1 : 0;
      summary_.resumed += static_cast<int64_t>(filled.size()) - split(s).unfilled();
      to_compute += split(s).unfilled();
    }
    return to_compute;
  }

  // Scores the unfilled examples of dataset `s` in rounds, saving the .partial file after each;
  // returns true when a stop signal ended it early.
  bool score_split(size_t s, Progress& progress) {
    const auto n = static_cast<int64_t>(datasets_[s].size());
    const int64_t world = comm_.world_size(), batch = config_.reference.batch_size;
    // Every rank knows every rank's work list (the filled mask is shared), so a round's results
    // travel as W x capacity slots, not as N-long vectors: the gather costs O(round), not O(N).
    std::vector<std::vector<int64_t>> work(static_cast<size_t>(world));
    for (int64_t i = 0; i < n; ++i)
      if (!split(s).filled[static_cast<size_t>(i)]) work[static_cast<size_t>(i % world)].push_back(i);
    int64_t max_batches = 0;
    for (const auto& w : work) max_batches = std::max(max_batches, (static_cast<int64_t>(w.size()) + batch - 1) / batch);
    // About ten rounds for a small job (a progress line each), at most kMaxBatchesPerRound batches
    // of work lost to a crash for a large one.
    const int64_t per_round = std::clamp<int64_t>((max_batches + 9) / 10, 1, kMaxBatchesPerRound);
    for (int64_t round = 0; round * per_round < max_batches; ++round) {
      const int64_t fields = kFields + 2 * split(s).more_columns;
      Round r{round, std::min(per_round, max_batches - round * per_round), per_round * batch, fields,
              std::vector<double>(static_cast<size_t>(world * per_round * batch * fields), 0.0)};
      const bool stopping = score_round(s, work[static_cast<size_t>(comm_.rank())], r);
      comm_.all_reduce_sum(r.slots);
      summary_.computed += collect_round(s, work, r);
      if (root_) write_reference_file(partial_path_, state_, /*with_filled_mask=*/true);
      progress.update(summary_.computed);
      // After rank 0 has saved the round, so that a preempted job loses nothing it computed.
      if (stopping || comm_.any(stop_requested())) return true;
    }
    return false;
  }

  // A round of at most `per_round` batches per rank; its results travel in `slots`, `fields`
  // doubles per example: chosen, rejected, chosen length, rejected length, filled count (kFields),
  // then for ranked data the log-prob and the length of each response below rejected.
  static constexpr int64_t kFields = 5;
  struct Round {
    int64_t index, batches, capacity;  // batches this round; capacity: pairs per rank per round
    int64_t fields;
    std::vector<double> slots;
    int64_t batches_done = 0;
    double& slot(int64_t rank, int64_t k, int64_t field) {
      return slots[static_cast<size_t>((rank * capacity + k) * fields + field)];
    }
    int64_t first() const { return index * capacity; }
  };

  // Scores this rank's share of round `r` into its slots. Every rank passes the round's batch
  // positions (its own may run out earlier) and reduces the stop flag after each, so all stop
  // after the same batch; the round is then saved as far as it got. A preemption's warning
  // window need only cover one batch, not a round. Returns whether a stop was requested.
  bool score_round(size_t s, const std::vector<int64_t>& mine, Round& r) {
    const int64_t batch = config_.reference.batch_size;
    const int64_t my_end = std::min<int64_t>(static_cast<int64_t>(mine.size()), r.first() + r.capacity);
    bool stopping = false;
    while (r.batches_done < r.batches && !stopping) {
      const int64_t begin = r.first() + r.batches_done * batch;
      if (begin < my_end) score_batch(s, mine, begin, std::min(my_end, begin + batch), r);
      // After the round's last batch, the caller checks once the round is saved.
      if (++r.batches_done < r.batches) stopping = comm_.any(stop_requested());
    }
    return stopping;
  }

  // My examples [begin, end) of dataset `s`, scored with the live path's pair_logps, into their slots.
  void score_batch(size_t s, const std::vector<int64_t>& mine, int64_t begin, int64_t end, Round& r) {
    const std::vector<int64_t> indices(mine.begin() + begin, mine.begin() + end);
    PairLogps ref;
    {
      c10::InferenceMode no_grad;
      ref = pair_logps(*model_, collate_pairs(datasets_[s], indices, pair_layout_of(config_.train)), ResponseScoring{config_.loss.ld_alpha});
    }
    at::Tensor more, more_tokens;  // [b, batch's M]
    if (ref.more.defined()) {
      more = ref.more.to(at::kCPU, at::kDouble).contiguous();
      more_tokens = ref.more_tokens.to(at::kCPU).contiguous();
    }
    const at::Tensor c = ref.chosen.to(at::kCPU, at::kDouble).contiguous(), rj = ref.rejected.to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor ct = ref.chosen_tokens.to(at::kCPU).contiguous(), rt = ref.rejected_tokens.to(at::kCPU).contiguous();
    const auto ca = c.accessor<double, 1>(), ra = rj.accessor<double, 1>();
    const auto cta = ct.accessor<int64_t, 1>(), rta = rt.accessor<int64_t, 1>();
    for (int64_t k = 0; k < end - begin; ++k) {
      const int64_t at_slot = begin - r.first() + k;
      r.slot(comm_.rank(), at_slot, 0) = ca[k];
      r.slot(comm_.rank(), at_slot, 1) = ra[k];
      r.slot(comm_.rank(), at_slot, 2) = static_cast<double>(cta[k]);
      r.slot(comm_.rank(), at_slot, 3) = static_cast<double>(rta[k]);
      r.slot(comm_.rank(), at_slot, 4) = 1.0;
      for (int64_t j = 0; more.defined() && j < more.size(1); ++j) {
        r.slot(comm_.rank(), at_slot, kFields + 2 * j) = more.accessor<double, 2>()[k][j];
        r.slot(comm_.rank(), at_slot, kFields + 2 * j + 1) = static_cast<double>(more_tokens.accessor<int64_t, 2>()[k][j]);
      }
    }
  }

  // The values of the round's summed slots into the split; returns how many examples they filled.
  int64_t collect_round(size_t s, const std::vector<std::vector<int64_t>>& work, Round& r) {
    ReferenceSplit& values = split(s);
    int64_t fresh = 0;
    const int64_t delivered = std::min(r.capacity, r.batches_done * config_.reference.batch_size);  // filled on every rank
    for (int64_t q = 0; q < comm_.world_size(); ++q) {
      const auto& theirs = work[static_cast<size_t>(q)];
      for (int64_t k = 0; k < delivered && r.first() + k < static_cast<int64_t>(theirs.size()); ++k) {
        const auto i = static_cast<size_t>(theirs[static_cast<size_t>(r.first() + k)]);
        if (r.slot(q, k, 4) != 1.0)
          fail("internal: rank {} delivered example {} of {} {} times in round {}", q, i, datasets_[s].path(),
               r.slot(q, k, 4), r.index);
        values.chosen[i] = r.slot(q, k, 0);
        values.rejected[i] = r.slot(q, k, 1);
        values.chosen_lengths[i] = static_cast<int32_t>(r.slot(q, k, 2));
        values.rejected_lengths[i] = static_cast<int32_t>(r.slot(q, k, 3));
        for (int64_t j = 0; j < values.more_columns; ++j) {
          const size_t at = i * static_cast<size_t>(values.more_columns) + static_cast<size_t>(j);
          values.more[at] = r.slot(q, k, kFields + 2 * j);
          values.more_lengths[at] = static_cast<int32_t>(r.slot(q, k, kFields + 2 * j + 1));
        }
        values.filled[i] = 1;
        ++fresh;
      }
    }
    return fresh;
  }

  // Rank 0 checks every example was scored, writes the final file and drops the .partial one.
  void write_final_file() {
    if (root_) {
      for (size_t s = 0; s < datasets_.size(); ++s)
        if (const int64_t missing = split(s).unfilled())
          fail("internal: {} examples of {} were never scored", missing, datasets_[s].path());
      if (!state_.eval) state_.provenance.eval_dataset.clear();
      write_reference_file(config_.reference.logps_path, state_, /*with_filled_mask=*/false);
      fs::remove(partial_path_);
    }
    comm_.barrier();
  }

  const Config& config_;
  Communicator& comm_;
  const at::Device device_;  // the session's: cpu, or this rank's GPU
  const bool root_;
  const std::string partial_path_;
  CausalLM model_;
  std::vector<PreferenceDataset> datasets_;
  ReferenceFile state_;  // complete only on rank 0
  PrecomputeSummary summary_;
};

}  // namespace

PrecomputeSummary precompute_reference(const Config& config, Communicator& comm, at::Device device) {
  if (config.reference.logps_path.empty())
    fail("reference.logps_path: dpo precompute-ref needs the output file (set reference.logps_path)");
  if (config.data.train.empty()) fail("data.train: dpo precompute-ref needs a training dataset (set data.train)");
  return Precompute(config, comm, device).run();
}

}  // namespace dpo
