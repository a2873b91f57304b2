// The one way dpo parses JSON that comes from a file or a user (safetensors headers, config.json,
// JSONL lines, trainer_state.json, metrics.jsonl): bounded nesting, refused duplicate keys, and a
// one-line error naming the source. Deeply nested JSON would otherwise overflow the stack later,
// in nlohmann's recursive copy and dump; a duplicated key would silently keep only its last value.
// Not for JSON dpo builds itself.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace dpo {

// No file dpo reads nests deeper than ~5 levels; this bound leaves room for any real file while
// keeping every recursive walk of the result far from the stack's end.
constexpr int kMaxJsonDepth = 128;

// Parses `text` as one JSON value. On malformed JSON, nesting deeper than kMaxJsonDepth or a key
// given twice in one object, throws dpo::Error "<source>: ..." (source names the file, and the
// line for JSONL).
nlohmann::json parse_json(const std::string& text, const std::string& source);
// The same keeping each object's keys in the order of the text (chat messages and tool schemas,
// which templates may print with tojson, as transformers keeps Python's dict order).
nlohmann::ordered_json parse_ordered_json(const std::string& text, const std::string& source);

// parse_json of the whole content of the file at `path`; a file that cannot be opened or read is an
// error naming it.
nlohmann::json read_json_file(const std::string& path);

// A value as JSON text for an error message, cut to about 80 characters.
std::string json_excerpt(const nlohmann::json& value);
std::string json_excerpt(const nlohmann::ordered_json& value);

}  // namespace dpo
