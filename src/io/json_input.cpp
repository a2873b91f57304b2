#include "dpo/io/json_input.h"

#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "dpo/error.h"

namespace dpo {
namespace {

using nlohmann::json;

// nlohmann's what() reads "[json.exception.parse_error.101] parse error at line 1, column 5: reason";
// keep "line 1, column 5: reason" (only the column for one-line text, e.g. a JSONL line), short
// and on one line (the reason quotes the bytes last read, which may be long or hold newlines).
std::string parse_error_text(const json::parse_error& e, bool one_line_text) {
  const std::string what = e.what();
  const size_t at = what.find(" at line ");
  const size_t column = what.find(", column ", at == std::string::npos ? 0 : at);
  const size_t colon = what.find(": ", column == std::string::npos ? 0 : column);
  std::string where, reason = what;
  if (at != std::string::npos && column != std::string::npos && colon != std::string::npos) {
    where = one_line_text ? what.substr(column + 2, colon - column - 2) : what.substr(at + 4, colon - at - 4);
    reason = what.substr(colon + 2);
  }
  if (reason.size() > 160) reason = reason.substr(0, 160) + "...";
  for (char& ch : reason)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return where.empty() ? reason : where + ": " + reason;
}

// parse_json for either of nlohmann's object kinds (key-sorted json, or ordered_json).
template <typename Json>
Json parse_bounded(const std::string& text, const std::string& source) {
  // The callback sees every object and array as it opens, before anything deeper is built, and
  // every key; it only throws (nlohmann's parser itself keeps its own stack, not the call stack).
  std::vector<std::set<std::string>> keys_of_open_objects;
  const typename Json::parser_callback_t check = [&](int depth, json::parse_event_t event, Json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) fail("{}: JSON nested deeper than {} levels", source, kMaxJsonDepth);
        if (event == json::parse_event_t::object_start) keys_of_open_objects.emplace_back();
        break;
      case json::parse_event_t::key:
        if (!keys_of_open_objects.empty() && !keys_of_open_objects.back().insert(parsed.template get<std::string>()).second) {
          std::string key = parsed.template get<std::string>();
          if (key.size() > 80) key = key.substr(0, 80) + "...";
          fail("{}: JSON object has the key '{}' twice", source, key);
        }
        break;
      case json::parse_event_t::object_end:
        if (!keys_of_open_objects.empty()) keys_of_open_objects.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text, check);
  } catch (const json::parse_error& e) {
    fail("{}: malformed JSON at {}", source, parse_error_text(e, text.find('\n') == std::string::npos));
  } catch (const json::exception& e) {  // e.g. out_of_range.406 "number overflow parsing '1e400'"
    std::string what = e.what();
    const size_t end_of_id = what.find("] ");
    if (end_of_id != std::string::npos) what = what.substr(end_of_id + 2);
    if (what.size() > 160) what = what.substr(0, 160) + "...";
    fail("{}: malformed JSON: {}", source, what);
  }
}

}  // namespace

nlohmann::json parse_json(const std::string& text, const std::string& source) {
  return parse_bounded<nlohmann::json>(text, source);
}

nlohmann::ordered_json parse_ordered_json(const std::string& text, const std::string& source) {
  return parse_bounded<nlohmann::ordered_json>(text, source);
}

namespace {

template <typename Json>
std::string excerpt_of(const Json& value) {
  // Values come from parse_json (bounded depth, valid UTF-8); replace keeps dump() from throwing
  // on a string built some other way.
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  return text.size() > 80 ? text.substr(0, 80) + "..." : text;
}

}  // namespace

std::string json_excerpt(const nlohmann::json& value) { return excerpt_of(value); }
std::string json_excerpt(const nlohmann::ordered_json& value) { return excerpt_of(value); }

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: read error", path);
  return parse_json(text.str(), path);
}

}  // namespace dpo
