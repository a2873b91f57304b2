// Reader for pre-tokenized JSONL preference data with TRL's column names. Every problem stops the
// read with "<file>:<line>: ..." naming the field; nothing is dropped silently.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "dpo/durable_file.h"
#include "dpo/error.h"
#include "dpo/preference_data.h"

namespace dpo {
namespace {

using nlohmann::json;

struct LineContext {
  const std::string& path;
  int64_t line;
  int64_t vocab_size;
};

// nlohmann's what() reads "[json.exception.parse_error.101] parse error at line 1, column 5: reason";
// every line is parsed on its own, so only the column and the reason are worth repeating.
std::string parse_reason(const json::parse_error& e) {
  std::string what = e.what();
  const auto colon = what.find(": ", what.find("column"));
  std::string reason = colon == std::string::npos ? what : what.substr(colon + 2);
  if (reason.size() > 160) reason = reason.substr(0, 160) + "...";
  return fmt::format("column {}: {}", e.byte, reason);
}

TokenIds read_ids(const json& record, const char* field, const LineContext& at) {
  const auto it = record.find(field);
  if (it == record.end()) fail("{}:{}: field '{}' is missing", at.path, at.line, field);
  if (!it->is_array()) {
    fail("{}:{}: field '{}' is not an array of integers (it is a JSON {})", at.path, at.line, field,
         it->type_name());
  }
  TokenIds ids;
  ids.reserve(it->size());
  for (size_t k = 0; k < it->size(); ++k) {
    const json& v = (*it)[k];
    if (!v.is_number_integer()) {
      fail("{}:{}: field '{}' element {} is not an integer ({})", at.path, at.line, field, k, v.dump());
    }
    const bool fits = v.is_number_unsigned()
                          ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())
                          : v.get<int64_t>() >= std::numeric_limits<int32_t>::min() &&
                                v.get<int64_t>() <= std::numeric_limits<int32_t>::max();
    if (!fits) {
      fail("{}:{}: field '{}' element {}: id {} is outside the int32 range", at.path, at.line, field, k, v.dump());
    }
    const auto id = static_cast<int32_t>(v.get<int64_t>());
    if (id < 0) fail("{}:{}: field '{}' element {}: id {} is negative", at.path, at.line, field, k, id);
    if (at.vocab_size > 0 && id >= at.vocab_size) {
      fail("{}:{}: field '{}' element {}: id {} is outside the vocabulary (vocab size {})", at.path, at.line,
           field, k, id, at.vocab_size);
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace

std::vector<RawPreferencePair> read_preference_jsonl(const std::string& path, int64_t vocab_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open preference data: {}", path, std::strerror(errno));

  std::vector<RawPreferencePair> pairs;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) continue;
    json record;
    try {
      record = json::parse(text);
    } catch (const json::parse_error& e) {
      fail("{}:{}: malformed JSON at {}", path, line, parse_reason(e));
    }
    if (!record.is_object()) {
      fail("{}:{}: expected a JSON object with prompt_input_ids, chosen_input_ids, rejected_input_ids, got a JSON {}",
           path, line, record.type_name());
    }
    const LineContext at{path, line, vocab_size};
    RawPreferencePair pair;
    pair.prompt = read_ids(record, "prompt_input_ids", at);
    pair.chosen = read_ids(record, "chosen_input_ids", at);
    pair.rejected = read_ids(record, "rejected_input_ids", at);
    if (pair.chosen.empty()) fail("{}:{}: field 'chosen_input_ids' is empty (a response needs a token)", path, line);
    if (pair.rejected.empty()) {
      fail("{}:{}: field 'rejected_input_ids' is empty (a response needs a token)", path, line);
    }
    pairs.push_back(std::move(pair));
  }
  if (in.bad()) fail("{}: read error: {}", path, std::strerror(errno));
  if (pairs.empty()) fail("{}: no preference records (the file is empty or only blank lines)", path);
  return pairs;
}

void write_preference_jsonl(const std::string& path, const std::vector<RawPreferencePair>& pairs) {
  TemporaryPath tmp(path);
  SyncedFile out(tmp.path());
  for (const auto& p : pairs) {
    nlohmann::json line = {{"prompt_input_ids", p.prompt}, {"chosen_input_ids", p.chosen},
                           {"rejected_input_ids", p.rejected}};
    out.write(line.dump() + "\n");
  }
  out.finish();
  tmp.commit();
}

}  // namespace dpo
