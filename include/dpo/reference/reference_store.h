// The frozen reference model's log-probs, computed once by `dpo precompute-ref` (precompute.h) and
// read by training and evaluation instead of running the reference model: the HDF5 file (README,
// "Precompute reference log-probs offline"), its provenance (the fingerprints of fingerprint.h
// that tie it to its dataset, model and truncation settings), the checks that refuse a file
// computed from anything else, and the lookup by example index.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "dpo/config/config.h"
#include "dpo/data/preference_data.h"
#include "dpo/loss/logps.h"
#include "dpo/reference/fingerprint.h"

namespace dpo {

class Communicator;

inline constexpr const char* kReferenceFormat = "dpo-reference-logps";
inline constexpr int64_t kReferenceFormatVersion = 1;

// "max_length=512 max_prompt_length=256 truncation=keep_end"
std::string truncation_description(const DataOptions& data);

// The reference log-probs of one dataset, in PreferenceDataset index order.
struct ReferenceSplit {
  std::vector<double> chosen, rejected;
  std::vector<int32_t> chosen_lengths, rejected_lengths;  // scored response tokens
  std::vector<int8_t> filled;                              // 1 where the example has its values
  // Ranked data: [N, more_columns] row-major, the responses ranked below rejected (best first);
  // length 0 (and log-prob 0) where an example has fewer. Empty for pairs.
  int64_t more_columns = 0;
  std::vector<double> more;
  std::vector<int32_t> more_lengths;
  explicit ReferenceSplit(size_t n = 0, int64_t more_columns_ = 0)
      : chosen(n), rejected(n), chosen_lengths(n), rejected_lengths(n), filled(n), more_columns(more_columns_),
        more(n * static_cast<size_t>(more_columns_)), more_lengths(n * static_cast<size_t>(more_columns_)) {}
  size_t size() const { return chosen.size(); }
  int64_t unfilled() const;
};

// What a file was computed from (its root attributes).
struct ReferenceProvenance {
  std::string dataset, dataset_fingerprint;             // data.train
  std::string eval_dataset, eval_dataset_fingerprint;   // data.eval ("" when none)
  std::string model, model_fingerprint;                 // model.reference
  std::string truncation, dtype, device, tool_version, created;
  std::string precision;  // train.precision the values were computed in ("" in older files)
  // TokenizationId::key() of data.train / data.eval: "" for ids given as ids (and in older files).
  std::string tokenization, eval_tokenization;
  // How token log-probs were summed: "sum", or "ld_alpha=A" (LD-DPO's weighting); "" in older files = sum.
  std::string logp_weighting;
};

// The logp_weighting a config's loss.ld_alpha asks for.
std::string logp_weighting_of(const LossOptions& loss);

struct ReferenceFile {
  ReferenceProvenance provenance;
  ReferenceSplit train;
  std::optional<ReferenceSplit> eval;  // the `eval` group
};

// Writes under a temporary name, then renames. `with_filled_mask` adds the int8 `filled` datasets
// (the .partial files of an unfinished precompute).
void write_reference_file(const std::string& path, const ReferenceFile& file, bool with_filled_mask);
// Reads a file written by write_reference_file. A missing, truncated or foreign file is refused
// with one line naming it. Without a `filled` dataset every example counts as filled; with
// `require_complete` an unfilled example or a non-finite value is refused.
ReferenceFile read_reference_file(const std::string& path, bool require_complete);
// Whether `path` is an HDF5 file whose format attribute says it is a reference log-prob file.
bool is_reference_file(const std::string& path);
// Provenance, sizes, completeness and summary statistics, for `dpo inspect`.
std::string describe_reference_file(const std::string& path);

// The provenance the config's data, reference model and truncation settings give (dtype and
// device from model.*). Rank 0 hashes the files and every rank receives the result, so every rank
// holds the same values. `with_train` / `with_eval` select which datasets are fingerprinted.
ReferenceProvenance expected_provenance(const Config& config, bool with_train, bool with_eval, Communicator& comm);

enum class Split { Train, Eval };

// The reference log-probs of a run, read from reference.logps_path.
class ReferenceStore {
 public:
  // Opens the file and refuses it (one line naming the file and what differs) unless it is a
  // complete reference file computed from this config's model.reference, truncation settings and
  // datasets: data.train when `check_train`, data.eval (and the `eval` group) when `check_eval`.
  // Called by every rank.
  static ReferenceStore open(const Config& config, bool check_train, bool check_eval, Communicator& comm);

  // Refuses the store unless `split` holds exactly dataset.size() examples, tokenized as the dataset
  // was (TokenizationId::key(), naming both).
  void require_examples(Split split, const PreferenceDataset& dataset) const;

  // The stored values of examples `indices` as pair_logps would return them: float32 log-probs
  // and int64 token counts on `device`; with `more_columns` > 0 (a ranked batch's width), the first
  // that many responses ranked below rejected too.
  PairLogps logps(Split split, const std::vector<int64_t>& indices, const at::Device& device,
                  int64_t more_columns = 0) const;

  const ReferenceFile& file() const { return file_; }
  const std::string& path() const { return path_; }

 private:
  const ReferenceSplit& split(Split s) const;
  std::string path_;
  ReferenceFile file_;
};

// Like require_same_dataset_on_all_ranks, for the values a store read from reference.logps_path.
void require_same_reference_on_all_ranks(Communicator& comm, const ReferenceStore& store);

}  // namespace dpo
