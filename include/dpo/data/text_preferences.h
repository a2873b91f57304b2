// Text preference data in TRL's four formats (standard / conversational, each with an explicit or an
// implicit prompt), tokenized by TRL's boundary and EOS rules into the same prompt/chosen/rejected
// ids the pre-tokenized reader produces, so truncation and everything after are unchanged.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "dpo/data/preference_data.h"

namespace dpo {

class ChatTemplate;

enum class PreferenceFormat { PreTokenized, StandardExplicit, StandardImplicit, ConversationalExplicit, ConversationalImplicit };

// The name a load summary states: "pre-tokenized", "standard, explicit prompt", ...
const char* preference_format_name(PreferenceFormat format);

// data.boundary_mismatch: what to do with a pair whose joint prompt+response ids do not start with
// the prompt's ids. TRL only warns; dpo counts such pairs in every case.
enum class BoundaryMismatch { Warn, Skip, Error };
BoundaryMismatch parse_boundary_mismatch(const std::string& name);  // "warn" | "skip" | "error"

// What the text rules need from a tokenizer (filled from dpo::Tokenizer by the caller).
struct TextEncoding {
  // Standard rows, as TRL's `processing_class(text=...)` call tokenizes them (the tokenizer's
  // post-processor decides whether special tokens such as BOS are added).
  std::function<std::vector<int64_t>(const std::string&)> encode_text;
  // Chat-template output, without adding special tokens (as apply_chat_template tokenizes).
  std::function<std::vector<int64_t>(const std::string&)> encode_rendered;
  std::string eos_token;                        // appended to standard responses lacking it; "" = none
  const ChatTemplate* chat_template = nullptr;  // required by conversational files only
};

struct TextPreferenceFile {
  PreferenceFormat format = PreferenceFormat::PreTokenized;
  std::vector<RawPreferencePair> pairs;  // in file order, mismatched pairs dropped under skip
  std::vector<int64_t> row_of_pair;      // each pair's row (0-based, blank lines not counted)
  int64_t rows = 0;                      // non-empty rows read (of this reader's share)
  int64_t boundary_mismatches = 0;       // pairs whose joint ids did not start with the prompt's
};

// The rows one reader tokenizes: row r (0-based, blank lines not counted) when r % count == index,
// so that the ranks of a job split a file between them (dpo prepare-data). The default takes all.
struct RowShare {
  int64_t index = 0, count = 1;
  bool takes(int64_t row) const { return row % count == index; }
};

// TRL's extract_prompt (trl/data_utils.py) on strings, by Unicode code point as Python indexes:
// the prompt is chosen[:idx] where idx is the first position at which chosen and rejected differ,
// moved back by one when chosen[idx-1] is a space (so the responses start with that space). When
// neither differs within the shorter one, TRL's loop leaves idx at its last value, len - 1.
// Returns {prompt, chosen, rejected}.
struct ExtractedText {
  std::string prompt, chosen, rejected;
};
ExtractedText extract_prompt(const std::string& chosen, const std::string& rejected);

// The format of a preference JSONL stream, from its first non-empty row; the stream is rewound to
// its start. An empty file is an error naming `path`.
PreferenceFormat detect_preference_format(std::istream& in, const std::string& path);
bool is_conversational(PreferenceFormat format);

// Reads preference JSONL in any of the five formats (the first non-empty row decides; a later row
// of another format is an error naming file:line). Pre-tokenized files are read as
// read_preference_jsonl reads them. vocab_size > 0 refuses ids outside [0, vocab_size).
TextPreferenceFile read_text_preferences(std::istream& in, const std::string& path, const TextEncoding& encoding,
                                         BoundaryMismatch on_mismatch, int64_t vocab_size = -1, RowShare share = {});
// The same from a file, gzip-compressed or not (io/compressed_input.h).
TextPreferenceFile read_text_preferences(const std::string& path, const TextEncoding& encoding,
                                         BoundaryMismatch on_mismatch, int64_t vocab_size = -1, RowShare share = {});

// "standard, implicit prompt; 3 boundary mismatches (kept)" for the load summary.
std::string text_preferences_summary(const TextPreferenceFile& file, BoundaryMismatch on_mismatch);

}  // namespace dpo
