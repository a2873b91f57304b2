// Reader for pre-tokenized JSONL preference data with TRL's column names. Every problem stops the
// read with "<file>:<line>: ..." naming the field; nothing is dropped silently.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>

#include <nlohmann/json.hpp>

#include "dpo/data/preference_data.h"
#include "dpo/error.h"
#include "dpo/io/compressed_input.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/json_input.h"

namespace dpo {
namespace {

using nlohmann::json;

struct LineContext {
  const std::string& path;
  int64_t line;
  int64_t vocab_size;
};

// The ids of one array of integers; `field` names it in messages ("chosen_input_ids",
// "responses_input_ids[2]").
TokenIds ids_of(const json& value, const std::string& field, const LineContext& at) {
  if (!value.is_array()) {
    fail("{}:{}: field '{}' is not an array of integers (it is a JSON {})", at.path, at.line, field, value.type_name());
  }
  TokenIds ids;
  ids.reserve(value.size());
  for (size_t k = 0; k < value.size(); ++k) {
    const json& v = value[k];
    if (!v.is_number_integer()) {
      fail("{}:{}: field '{}' element {} is not an integer ({})", at.path, at.line, field, k, json_excerpt(v));
    }
    const bool fits = v.is_number_unsigned()
                          ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())
                          : v.get<int64_t>() >= std::numeric_limits<int32_t>::min() &&
                                v.get<int64_t>() <= std::numeric_limits<int32_t>::max();
    if (!fits) {
      fail("{}:{}: field '{}' element {}: id {} is outside the int32 range", at.path, at.line, field, k, json_excerpt(v));
    }
    const auto id = static_cast<int32_t>(v.get<int64_t>());
    if (id < 0) fail("{}:{}: field '{}' element {}: id {} is negative", at.path, at.line, field, k, id);
    if (at.vocab_size > 0 && id >= at.vocab_size) {
      fail("{}:{}: field '{}' element {}: id {} is outside the vocabulary (vocab size {})", at.path, at.line,
           field, k, id, at.vocab_size);
    }
    ids.push_back(id);
  }
  if (ids.empty() && field != "prompt_input_ids")
    fail("{}:{}: field '{}' is empty (a response needs a token)", at.path, at.line, field);
  return ids;
}

TokenIds read_ids(const json& record, const char* field, const LineContext& at) {
  const auto it = record.find(field);
  if (it == record.end()) fail("{}:{}: field '{}' is missing", at.path, at.line, field);
  return ids_of(*it, field, at);
}

// A ranked record: `responses_input_ids`, K >= 2 responses best first (the DPO paper's
// Plackett-Luce data), instead of chosen_input_ids and rejected_input_ids.
void read_ranked_responses(const json& record, RawPreferencePair& pair, const LineContext& at) {
  for (const char* field : {"chosen_input_ids", "rejected_input_ids"})
    if (record.contains(field))
      fail("{}:{}: field '{}' next to 'responses_input_ids': a record is a pair or a ranking, not both", at.path,
           at.line, field);
  const json& responses = record["responses_input_ids"];
  if (!responses.is_array() || responses.size() < 2)
    fail("{}:{}: field 'responses_input_ids' must be a list of at least 2 responses (arrays of ids, best first), got {}",
         at.path, at.line, responses.is_array() ? fmt::format("{} response(s)", responses.size()) : json_excerpt(responses));
  for (size_t k = 0; k < responses.size(); ++k) {
    TokenIds ids = ids_of(responses[k], fmt::format("responses_input_ids[{}]", k), at);
    if (k == 0) pair.chosen = std::move(ids);
    else if (k == 1) pair.rejected = std::move(ids);
    else pair.more_rejected.push_back(std::move(ids));
  }
}

// A line longer than this is no preference pair (a million-token context is ~20 MB of ids);
// refusing it bounds what one line can make us hold: the text and its parsed JSON.
constexpr size_t kMaxLineBytes = size_t{64} << 20;

// Reads one line without its '\n' into `line`, at most `limit` bytes of it: sets `too_long` and
// stops there for a longer one. False at the end of the file.
bool read_bounded_line(std::istream& in, std::string& line, size_t limit, bool& too_long) {
  line.clear();
  too_long = false;
  bool any = false;
  char chunk[1 << 16];
  for (;;) {
    in.get(chunk, sizeof chunk, '\n');
    if (in.bad()) return false;  // the caller reports the read error
    const auto n = static_cast<size_t>(in.gcount());
    any = any || n > 0;
    if (line.size() + n > limit) {
      too_long = true;
      return true;
    }
    line.append(chunk, n);
    if (in.eof()) return any;
    if (n == 0) in.clear();  // get() fails when the next character is the '\n'
    if (in.peek() == '\n') {
      in.ignore();
      return true;
    }
  }
}

}  // namespace

std::vector<RawPreferencePair> read_preference_jsonl(const std::string& path, int64_t vocab_size) {
  const std::unique_ptr<std::istream> in = open_possibly_compressed(path);
  return read_preference_jsonl(*in, path, vocab_size);
}

std::vector<RawPreferencePair> read_preference_jsonl(std::istream& in, const std::string& path, int64_t vocab_size) {
  std::vector<RawPreferencePair> pairs;
  std::string text;
  bool too_long = false;
  static const std::string kByteOrderMark = "\xEF\xBB\xBF";
  for (int64_t line = 1; read_bounded_line(in, text, kMaxLineBytes, too_long); ++line) {
    if (too_long) fail("{}:{}: line is longer than {} MiB; not one preference pair", path, line, kMaxLineBytes >> 20);
    // A UTF-8 byte-order mark opens the file as Python's utf-8-sig reads it; elsewhere it is a
    // sign of files concatenated byte for byte.
    if (text.compare(0, kByteOrderMark.size(), kByteOrderMark) == 0) {
      if (line > 1) fail("{}:{}: a UTF-8 byte-order mark in the middle of the file (concatenated files?)", path, line);
      text.erase(0, kByteOrderMark.size());
    }
    if (text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) continue;
    const json record = parse_json(text, fmt::format("{}:{}", path, line));
    if (!record.is_object()) {
      fail("{}:{}: expected a JSON object with prompt_input_ids, chosen_input_ids, rejected_input_ids (or "
           "responses_input_ids), got a JSON {}", path, line, record.type_name());
    }
    const LineContext at{path, line, vocab_size};
    RawPreferencePair pair;
    pair.prompt = read_ids(record, "prompt_input_ids", at);
    if (record.contains("responses_input_ids")) {
      read_ranked_responses(record, pair, at);
    } else {
      pair.chosen = read_ids(record, "chosen_input_ids", at);
      pair.rejected = read_ids(record, "rejected_input_ids", at);
    }
    pairs.push_back(std::move(pair));
  }
  if (in.bad()) fail("{}: {}", path, kReadError);
  if (pairs.empty()) fail("{}: no preference records (the file is empty or only blank lines)", path);
  return pairs;
}

void write_preference_jsonl(const std::string& path, const std::vector<RawPreferencePair>& pairs) {
  TemporaryPath tmp(path);
  SyncedFile out(tmp.path());
  for (const auto& p : pairs) {
    nlohmann::json line = {{"prompt_input_ids", p.prompt}};
    if (p.more_rejected.empty()) {
      line["chosen_input_ids"] = p.chosen;
      line["rejected_input_ids"] = p.rejected;
    } else {
      line["responses_input_ids"] = {p.chosen, p.rejected};
      for (const TokenIds& more : p.more_rejected) line["responses_input_ids"].push_back(more);
    }
    out.write(line.dump() + "\n");
  }
  out.finish();
  tmp.commit();
}

}  // namespace dpo
