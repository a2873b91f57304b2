// Preference data of any kind into a dataset: text (TRL's formats) is tokenized with the tokenizer
// and chat template of model.tokenizer (else model.policy), loaded only when a file holds text;
// files of ids are read as they are. Also the identity of a tokenization (TokenizationId), which
// dpo prepare-data records in its HDF5 files and precompute-ref in its reference stores, so that
// data tokenized one way is never trained against log-probs or files made another way.
#pragma once
#include <string>

#include "dpo/config/config.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/text_preferences.h"

namespace dpo {

// model.tokenizer, else model.policy; and how messages name it.
std::string tokenizer_dir(const Config& config);
std::string tokenizer_key(const Config& config);  // "model.tokenizer" or "model.tokenizer (= model.policy)"

// One rank's share of a JSONL file (text or ids, gzip or not) as token ids, with the tokenization
// that made them: rows r with r % share.count == share.index (dpo prepare-data splits rows so).
// `key` (data.train, data.eval) names the file in errors.
struct TokenizedRows {
  TextPreferenceFile file;
  TokenizationId tokenization;
  double load_seconds = 0;      // reading tokenizer.json and the chat template
  double tokenize_seconds = 0;  // reading and tokenizing the rows
};
TokenizedRows tokenize_preference_rows(const std::string& key, const std::string& path, const Config& config,
                                       int64_t vocab_size, RowShare share = {});

// data.train / data.eval at `path` as a truncated dataset: JSONL of text or ids (gzip or not), or
// HDF5. A prepared HDF5 file whose recorded tokenizer or chat template differs from the config's
// is refused naming both.
PreferenceDataset load_preference_data(const std::string& key, const std::string& path, const Config& config,
                                       int64_t vocab_size);

}  // namespace dpo
