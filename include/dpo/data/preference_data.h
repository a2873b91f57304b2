// Preference pairs: readers for pre-tokenized JSONL (TRL column names) and the HDF5 layout of
// the README ("Data"), validation, truncation, and the load summary. Owns nothing about batching or models.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "dpo/config/config.h"

namespace dpo {

using TokenIds = std::vector<int32_t>;

// One record as stored in the file, before truncation. A ranked record (K >= 3 responses, best
// first: `responses_input_ids`, loss.type plackett_luce) keeps its first two responses in chosen and
// rejected and the rest, in rank order, in more_rejected; a pair has none there.
struct RawPreferencePair {
  TokenIds prompt, chosen, rejected;
  std::vector<TokenIds> more_rejected;
  // The number of ranked responses: 2 for a pair.
  size_t responses() const { return 2 + more_rejected.size(); }
  // Tokens of the pair packed with its prompt once: prompt + every response (data/collate.h).
  int64_t shared_prefix_length() const {
    size_t length = prompt.size() + chosen.size() + rejected.size();
    for (const TokenIds& more : more_rejected) length += more.size();
    return static_cast<int64_t>(length);
  }
};

enum class TruncationMode { KeepEnd, KeepStart };
TruncationMode parse_truncation_mode(const std::string& name);  // "keep_end" | "keep_start"

// What responses are cut to when prompt + longer response is still too long after the prompt is
// cut: max_length - prompt length (Remaining, TRL since 2026), or max_length - max_prompt_length
// whatever the prompt's length (Paper: the DPO paper's code and TRL before 2026).
enum class ResponseBudget { Remaining, Paper };
ResponseBudget parse_response_budget(const std::string& name);  // "remaining" | "paper"

struct TruncationRule {
  int64_t max_length = 512;
  int64_t max_prompt_length = 256;
  TruncationMode mode = TruncationMode::KeepEnd;
  ResponseBudget budget = ResponseBudget::Remaining;
};

// The truncation settings of data.* as a rule.
TruncationRule truncation_rule(const DataOptions& data);

// What truncation did to one pair.
struct TruncatedPair {
  RawPreferencePair pair;
  bool truncated = false;  // any token removed
};

// As TRL: when prompt + longest response exceeds max_length, first cut the prompt to
// max_prompt_length (keep_end keeps its last tokens), then, if still too long, cut every response
// to the rule's budget (max_length - prompt length, or max_length - max_prompt_length).
TruncatedPair truncate_pair(const RawPreferencePair& pair, const TruncationRule& rule);

// Number of response tokens that get a log-prob: every response token that has a token before it
// (the first token of a sequence has no prediction, so with an empty prompt it is not scored).
int64_t scored_token_count(size_t prompt_length, size_t response_length);

struct DataSummary {
  int64_t records = 0;    // pairs in the file
  int64_t examples = 0;   // pairs kept after truncation (records - skipped)
  int64_t truncated = 0;  // kept pairs that lost tokens to truncation
  int64_t skipped = 0;    // pairs a response of which has no scored token after truncation
  int64_t identical = 0;  // kept pairs whose chosen equals rejected
  int64_t prompt_tokens = 0, chosen_tokens = 0, rejected_tokens = 0;  // after truncation, kept pairs
  int64_t max_token_id = -1;
  int64_t ranked = 0;         // kept records with more than two responses
  int64_t max_responses = 2;  // the most responses of a kept record
};

// How a dataset's ids were made from text: which tokenizer.json, chat template (conversational data)
// and EOS string (standard data) under which data.boundary_mismatch rule. All empty for token ids
// that came as ids. Prepared HDF5 files and reference stores record it, so that data tokenized one
// way is never paired with log-probs or a model of another.
struct TokenizationId {
  std::string tokenizer;                  // the directory it came from (for messages only)
  std::string tokenizer_fingerprint;      // Tokenizer::fingerprint() of its tokenizer.json
  std::string chat_template_fingerprint;  // conversational data only
  std::string eos_token;                  // standard data only: appended to responses
  std::string boundary_mismatch;          // warn | skip | error
  bool empty() const { return tokenizer_fingerprint.empty(); }
  // What must agree for two tokenizations to give the same ids (no path): "" when empty.
  std::string key() const;
  // For messages: "tokenizer DIR (fnv1a64:...), chat template 01ab..." or "token ids as given".
  std::string describe() const;
};

// Reads a whole file, JSONL or HDF5 (chosen by content: the HDF5 signature, else JSONL), without
// truncation. vocab_size > 0 makes any id outside [0, vocab_size) an error. Errors name the file,
// the line (JSONL, 1-based) or record index (HDF5) and the field.
std::vector<RawPreferencePair> read_preference_file(const std::string& path, int64_t vocab_size = -1);
std::vector<RawPreferencePair> read_preference_jsonl(const std::string& path, int64_t vocab_size = -1);
// The same from a stream (`path` names it in messages); the in-memory entry the fuzz harness drives.
std::vector<RawPreferencePair> read_preference_jsonl(std::istream& in, const std::string& path, int64_t vocab_size = -1);
std::vector<RawPreferencePair> read_preference_hdf5(const std::string& path, int64_t vocab_size = -1);

// Writes the HDF5 layout (groups prompt/chosen/rejected with int32 `tokens` and int64 `offsets`, and
// for ranked records the group more_rejected: its responses' `tokens` and `offsets`, and `counts`,
// the number of them in each record);
// temporary name, then rename. A non-empty `tokenization` and the `source` file it came from are
// written as root attributes (dpo prepare-data).
void write_preference_hdf5(const std::string& path, const std::vector<RawPreferencePair>& pairs,
                           const TokenizationId& tokenization = {}, const std::string& source = "");
// The tokenization recorded in a preference HDF5 file; empty for files of ids from elsewhere.
TokenizationId read_preference_hdf5_tokenization(const std::string& path);
// Whether `path` starts with the HDF5 signature.
bool is_hdf5_file(const std::string& path);

// Writes pairs as pre-tokenized JSONL with TRL's column names, ranked records as
// `responses_input_ids` (temporary name, then rename).
void write_preference_jsonl(const std::string& path, const std::vector<RawPreferencePair>& pairs);

// A human-readable multi-line description of a JSONL or HDF5 preference file (for `dpo inspect`):
// format, record count, per-field token-length min/mean/max, largest token id, chosen==rejected.
std::string describe_preference_file(const std::string& path);

// A loaded, truncated, validated dataset. Example i is the i-th kept pair in file order;
// source_index(i) is its 0-based record index in the file (for messages).
class PreferenceDataset {
 public:
  // A file of token ids (JSONL, HDF5); text files go through data/text_tokenization.h's
  // load_preference_data.
  static PreferenceDataset load(const std::string& path, const TruncationRule& rule, int64_t vocab_size);
  // Pairs already read from `path`: truncated, filtered and counted. `origin` opens the summary line
  // ("standard, explicit prompt, tokenized by DIR; 0 boundary mismatches"; "" for files of ids).
  static PreferenceDataset from_pairs(const std::string& path, std::vector<RawPreferencePair> raw,
                                      const TruncationRule& rule, std::string origin, TokenizationId tokenization);

  size_t size() const { return examples_.size(); }
  const RawPreferencePair& operator[](size_t i) const { return examples_[i]; }
  int64_t source_index(size_t i) const { return source_index_[i]; }
  // The most responses ranked below `rejected` in one example (0 for pairs only): the width of the
  // more_rejected columns of batches, gathered values and reference files.
  int64_t max_more_rejected() const { return summary_.max_responses - 2; }
  const DataSummary& summary() const { return summary_; }
  const std::string& path() const { return path_; }
  const TokenizationId& tokenization() const { return tokenization_; }

  // "<path>: 1000 pairs, 12 truncated, 0 skipped (emptied by truncation), 3 chosen==rejected"
  std::string summary_line() const;

 private:
  std::string path_, origin_;
  TokenizationId tokenization_;
  std::vector<RawPreferencePair> examples_;
  std::vector<int64_t> source_index_;
  DataSummary summary_;
};

}  // namespace dpo
