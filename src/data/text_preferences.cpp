// TRL's text preference formats and its prompt/response boundary rules. The rules follow TRL
// (trl/data_utils.py extract_prompt; DPOTrainer's tokenization: prompt ids, then the joint ids of
// prompt+response, the response being what follows the prompt's length) so that a dataset gives
// the same ids here as under TRL. Every problem stops the read with "<file>:<line>: ...".
#include "dpo/data/text_preferences.h"

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <istream>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/error.h"
#include "dpo/io/compressed_input.h"
#include "dpo/io/json_input.h"
#include "dpo/text/chat_template.h"

namespace dpo {
namespace {

// Rows keep their keys' order: a template that prints a message with tojson prints it as
// transformers does, in the order of the file.
using json = nlohmann::ordered_json;
using nlohmann::ordered_json;

// The number of bytes of the UTF-8 sequence a lead byte opens (the JSON parser has validated the text).
size_t code_point_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  return lead >= 0xC0 ? 2 : 1;
}

void check_messages(const json& messages, const char* field, const std::string& at) {
  for (size_t k = 0; k < messages.size(); ++k) {
    const json& m = messages[k];
    const bool ok = m.is_object() && m.contains("role") && m["role"].is_string() && m.contains("content");
    if (!ok) fail("{}: field '{}' message {} is not a {{role, content}} message ({})", at, field, k, json_excerpt(m));
  }
}

// A ranked row's `responses` (K >= 2 texts or message lists, best first; an explicit prompt), checked.
PreferenceFormat classify_ranked_row(const json& row, const std::string& at) {
  for (const char* field : {"chosen", "rejected"})
    if (row.contains(field)) fail("{}: field '{}' next to 'responses': a row is a pair or a ranking, not both", at, field);
  const json& responses = row["responses"];
  if (!responses.is_array() || responses.size() < 2)
    fail("{}: field 'responses' must be a list of at least 2 responses (texts or message lists, best first), got {}", at,
         responses.is_array() ? fmt::format("{} response(s)", responses.size()) : json_excerpt(responses));
  const auto prompt = row.find("prompt");
  if (prompt == row.end())
    fail("{}: ranked 'responses' need an explicit 'prompt' (the prompt cannot be extracted from more than two responses)", at);
  const bool conversational = prompt->is_array();
  if (!conversational && !prompt->is_string())
    fail("{}: field 'prompt' is neither a string nor a list of messages (it is a JSON {})", at, prompt->type_name());
  if (conversational) check_messages(*prompt, "prompt", at);
  for (size_t k = 0; k < responses.size(); ++k) {
    const std::string field = fmt::format("responses[{}]", k);
    if (responses[k].is_array() != conversational || !(responses[k].is_array() || responses[k].is_string()))
      fail("{}: field '{}' is a JSON {} but 'prompt' is a JSON {}", at, field, responses[k].type_name(), prompt->type_name());
    if (conversational) check_messages(responses[k], field.c_str(), at);
  }
  return conversational ? PreferenceFormat::ConversationalExplicit : PreferenceFormat::StandardExplicit;
}

// The format of one row, with its fields checked for the types the format needs.
PreferenceFormat classify_row(const json& row, const std::string& at) {
  if (!row.is_object()) fail("{}: expected a JSON object (a preference pair), got a JSON {}", at, row.type_name());
  if (row.contains("prompt_input_ids") || row.contains("chosen_input_ids") || row.contains("responses_input_ids"))
    return PreferenceFormat::PreTokenized;
  if (row.contains("responses")) return classify_ranked_row(row, at);
  const auto chosen = row.find("chosen"), rejected = row.find("rejected");
  if (chosen == row.end() || rejected == row.end()) {
    fail("{}: a preference pair needs 'chosen' and 'rejected' (text or messages), a ranking needs 'prompt' and "
         "'responses', or give ids: prompt_input_ids, chosen_input_ids, rejected_input_ids",
         at);
  }
  if (!chosen->is_string() && !chosen->is_array()) {
    fail("{}: field 'chosen' is neither a string nor a list of messages (it is a JSON {})", at, chosen->type_name());
  }
  const bool conversational = chosen->is_array();
  const auto same_kind = [&](const char* field, const json& value) {
    if (value.is_array() != conversational || !(value.is_array() || value.is_string())) {
      fail("{}: field '{}' is a JSON {} but 'chosen' is a JSON {}", at, field, value.type_name(), chosen->type_name());
    }
    if (conversational) check_messages(value, field, at);
  };
  same_kind("chosen", *chosen);
  same_kind("rejected", *rejected);
  const auto prompt = row.find("prompt");
  if (prompt != row.end()) same_kind("prompt", *prompt);
  if (conversational) {
    return prompt != row.end() ? PreferenceFormat::ConversationalExplicit : PreferenceFormat::ConversationalImplicit;
  }
  return prompt != row.end() ? PreferenceFormat::StandardExplicit : PreferenceFormat::StandardImplicit;
}

// A row's responses, best first: `responses`, or chosen then rejected.
std::vector<const json*> row_responses(const json& row) {
  std::vector<const json*> out;
  if (const auto ranked = row.find("responses"); ranked != row.end()) {
    for (const json& response : *ranked) out.push_back(&response);
  } else {
    out = {&row["chosen"], &row["rejected"]};
  }
  return out;
}

// The name of response k of a row in messages.
std::string response_name(const json& row, size_t k) {
  if (row.contains("responses")) return fmt::format("responses[{}]", k);
  return k == 0 ? "chosen" : "rejected";
}

// TRL's extract_prompt on message lists: the common leading messages (compared whole) are the
// prompt; as in TRL, a response identical to or a prefix of the other keeps its last message.
struct ExtractedMessages {
  json prompt, chosen, rejected;
};
ExtractedMessages extract_prompt_messages(const json& chosen, const json& rejected) {
  const size_t shorter = std::min(chosen.size(), rejected.size());
  size_t idx = shorter - 1;
  for (size_t k = 0; k < shorter; ++k) {
    // Compared as Python compares dicts: whatever the order of their keys.
    if (nlohmann::json(chosen[k]) != nlohmann::json(rejected[k])) {
      idx = k;
      break;
    }
  }
  const auto slice = [](const json& list, size_t from, size_t to) {
    return json(list.begin() + static_cast<std::ptrdiff_t>(from), list.begin() + static_cast<std::ptrdiff_t>(to));
  };
  return {slice(chosen, 0, idx), slice(chosen, idx, chosen.size()), slice(rejected, idx, rejected.size())};
}

TokenIds to_token_ids(const std::vector<int64_t>& ids, size_t from, const std::string& field, const std::string& at,
                      int64_t vocab_size) {
  TokenIds out;
  out.reserve(ids.size() - std::min(from, ids.size()));
  for (size_t k = from; k < ids.size(); ++k) {
    const int64_t id = ids[k];
    const int64_t limit = vocab_size > 0 ? vocab_size : int64_t{std::numeric_limits<int32_t>::max()} + 1;
    if (id < 0 || id >= limit) fail("{}: {} token {}: id {} is outside the vocabulary (size {})", at, field, k, id, limit);
    out.push_back(static_cast<int32_t>(id));
  }
  return out;
}

bool starts_with(const std::vector<int64_t>& ids, const std::vector<int64_t>& prefix) {
  return ids.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), ids.begin());
}

// The texts to tokenize: the prompt alone, then prompt+response jointly for each response (best first).
struct RowTexts {
  std::string prompt;
  std::vector<std::string> prompt_responses;
};

RowTexts standard_texts(const json& row, PreferenceFormat format, const std::string& eos) {
  std::string prompt;
  std::vector<std::string> responses;
  if (format == PreferenceFormat::StandardImplicit) {
    const ExtractedText text = extract_prompt(row["chosen"].get<std::string>(), row["rejected"].get<std::string>());
    prompt = text.prompt;
    responses = {text.chosen, text.rejected};
  } else {
    prompt = row["prompt"].get<std::string>();
    for (const json* response : row_responses(row)) responses.push_back(response->get<std::string>());
  }
  // TRL appends the EOS string to standard responses that do not already end with it.
  const auto with_eos = [&](std::string response) {
    const bool ends = response.size() >= eos.size() && response.compare(response.size() - eos.size(), eos.size(), eos) == 0;
    return ends ? response : response + eos;
  };
  RowTexts texts{prompt, {}};
  for (const std::string& response : responses) texts.prompt_responses.push_back(prompt + with_eos(response));
  return texts;
}

RowTexts conversational_texts(const json& row, PreferenceFormat format, const ChatTemplate& chat) {
  json prompt;
  std::vector<json> responses;
  if (format == PreferenceFormat::ConversationalImplicit) {
    ExtractedMessages m = extract_prompt_messages(row["chosen"], row["rejected"]);
    prompt = std::move(m.prompt);
    responses = {std::move(m.chosen), std::move(m.rejected)};
  } else {
    prompt = row["prompt"];
    for (const json* response : row_responses(row)) responses.push_back(*response);
  }
  // No EOS is appended: the template's own end-of-turn tokens close each response.
  RowTexts texts{chat.render(ordered_json(prompt), /*add_generation_prompt=*/true), {}};
  for (const json& response : responses) {
    ordered_json all = ordered_json(prompt);
    for (const auto& message : response) all.push_back(ordered_json(message));
    texts.prompt_responses.push_back(chat.render(all, /*add_generation_prompt=*/false));
  }
  return texts;
}

struct ReadState {
  const std::string& path;
  const TextEncoding& encoding;
  BoundaryMismatch on_mismatch;
  int64_t vocab_size;
  TextPreferenceFile& file;
};

void check_row_not_empty(const json& row, PreferenceFormat format, const std::string& at) {
  const std::vector<const json*> responses = row_responses(row);
  for (size_t k = 0; k < responses.size(); ++k) {
    const json& value = *responses[k];
    if (value.is_string() ? value.get_ref<const std::string&>().empty() : value.empty())
      fail("{}: field '{}' is empty (a response needs content)", at, response_name(row, k));
  }
  if (format == PreferenceFormat::ConversationalExplicit && row["prompt"].empty()) {
    fail("{}: field 'prompt' is an empty list of messages", at);
  }
}

void add_row(const json& row, PreferenceFormat format, const std::string& at, ReadState& s) {
  check_row_not_empty(row, format, at);
  const TextEncoding& enc = s.encoding;
  const bool chat = is_conversational(format);
  if (chat && enc.chat_template == nullptr) fail("{}: conversational data needs the model's chat template", at);
  const RowTexts texts = chat ? conversational_texts(row, format, *enc.chat_template)
                              : standard_texts(row, format, enc.eos_token);
  const auto& encode = chat ? enc.encode_rendered : enc.encode_text;
  const std::vector<int64_t> prompt = encode(texts.prompt);
  std::vector<std::vector<int64_t>> joint;
  for (const std::string& text : texts.prompt_responses) joint.push_back(encode(text));
  for (size_t k = 0; k < joint.size(); ++k) {
    if (starts_with(joint[k], prompt)) continue;
    ++s.file.boundary_mismatches;
    if (s.on_mismatch == BoundaryMismatch::Error) {
      fail("{}: the tokens of prompt+{} do not start with the prompt's tokens (data.boundary_mismatch: error)", at,
           response_name(row, k));
    }
    if (s.on_mismatch == BoundaryMismatch::Skip) return;
    break;  // a row counts once
  }
  RawPreferencePair pair;
  pair.prompt = to_token_ids(prompt, 0, "prompt", at, s.vocab_size);
  for (size_t k = 0; k < joint.size(); ++k) {
    const std::string name = response_name(row, k);
    TokenIds ids = to_token_ids(joint[k], prompt.size(), "prompt+" + name, at, s.vocab_size);
    if (ids.empty()) fail("{}: the {} response has no tokens after the prompt's", at, name);
    if (k == 0) pair.chosen = std::move(ids);
    else if (k == 1) pair.rejected = std::move(ids);
    else pair.more_rejected.push_back(std::move(ids));
  }
  s.file.pairs.push_back(std::move(pair));
}

// The next non-empty line with a leading byte-order mark dropped; false at the end. `line` counts
// physical lines (1-based) for messages.
bool next_row(std::istream& in, std::string& text, int64_t& line) {
  static const std::string kByteOrderMark = "\xEF\xBB\xBF";
  while (std::getline(in, text)) {
    ++line;
    if (line == 1 && text.compare(0, kByteOrderMark.size(), kByteOrderMark) == 0) text.erase(0, kByteOrderMark.size());
    if (text.find_first_not_of(" \t\r\n\f\v") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

bool is_conversational(PreferenceFormat f) {
  return f == PreferenceFormat::ConversationalExplicit || f == PreferenceFormat::ConversationalImplicit;
}

PreferenceFormat detect_preference_format(std::istream& in, const std::string& path) {
  std::string text;
  int64_t line = 0;
  const bool any = next_row(in, text, line);
  if (in.bad()) fail("{}: {}", path, kReadError);
  if (!any) fail("{}: no preference records (the file is empty or only blank lines)", path);
  const std::string at = fmt::format("{}:{}", path, line);
  const PreferenceFormat format = classify_row(parse_ordered_json(text, at), at);
  in.clear();
  in.seekg(0);
  if (!in) fail("{}: cannot be read twice (a pipe?); give a regular file", path);
  return format;
}

const char* preference_format_name(PreferenceFormat format) {
  switch (format) {
    case PreferenceFormat::PreTokenized: return "pre-tokenized";
    case PreferenceFormat::StandardExplicit: return "standard, explicit prompt";
    case PreferenceFormat::StandardImplicit: return "standard, implicit prompt";
    case PreferenceFormat::ConversationalExplicit: return "conversational, explicit prompt";
    case PreferenceFormat::ConversationalImplicit: return "conversational, implicit prompt";
  }
  return "unknown";
}

BoundaryMismatch parse_boundary_mismatch(const std::string& name) {
  if (name == "warn") return BoundaryMismatch::Warn;
  if (name == "skip") return BoundaryMismatch::Skip;
  if (name == "error") return BoundaryMismatch::Error;
  fail("data.boundary_mismatch: unknown value '{}' (expected warn, skip or error)", name);
}

// TRL (trl/data_utils.py, extract_prompt):
//   for idx in range(min(len(chosen), len(rejected))):
//       if chosen[idx] != rejected[idx]:
//           if chosen[idx - 1] == " ": idx -= 1   # the space starts the responses
//           break
//   prompt, chosen, rejected = chosen[:idx], chosen[idx:], rejected[idx:]
// Python indexes code points, so this walks UTF-8 code points. One departure: where the very first
// code points differ, TRL's chosen[-1] looks at the last character and may cut at -1; here the
// prompt is then empty.
ExtractedText extract_prompt(const std::string& chosen, const std::string& rejected) {
  constexpr size_t kNone = std::string::npos;
  size_t at = 0, previous = kNone;  // byte offset of the current and the previous code point (same in both)
  bool differ = false;
  while (at < chosen.size() && at < rejected.size()) {
    const size_t length = code_point_length(static_cast<unsigned char>(chosen[at]));
    if (chosen.compare(at, length, rejected, at, code_point_length(static_cast<unsigned char>(rejected[at]))) != 0) {
      differ = true;
      break;
    }
    previous = at;
    at += length;
  }
  if (previous == kNone && !differ) fail("extract_prompt: chosen or rejected is empty");
  size_t idx = previous;  // no difference: Python's loop variable ends at the last index
  if (differ) idx = (previous != kNone && chosen[previous] == ' ') ? previous : at;
  return {chosen.substr(0, idx), chosen.substr(idx), rejected.substr(idx)};
}

TextPreferenceFile read_text_preferences(std::istream& in, const std::string& path, const TextEncoding& encoding,
                                         BoundaryMismatch on_mismatch, int64_t vocab_size, RowShare share) {
  TextPreferenceFile file;
  file.format = detect_preference_format(in, path);
  if (file.format == PreferenceFormat::PreTokenized) {
    std::vector<RawPreferencePair> all = read_preference_jsonl(in, path, vocab_size);
    for (size_t r = 0; r < all.size(); ++r) {
      if (!share.takes(static_cast<int64_t>(r))) continue;
      file.pairs.push_back(std::move(all[r]));
      file.row_of_pair.push_back(static_cast<int64_t>(r));
    }
    file.rows = static_cast<int64_t>(file.pairs.size());
    return file;
  }
  ReadState state{path, encoding, on_mismatch, vocab_size, file};
  std::string text;
  int64_t line = 0;
  for (int64_t row = 0; next_row(in, text, line); ++row) {
    if (!share.takes(row)) continue;
    const std::string at = fmt::format("{}:{}", path, line);
    const json value = parse_ordered_json(text, at);
    const PreferenceFormat format = classify_row(value, at);
    if (format != file.format) {
      fail("{}: a {} row in a file of {} rows (the first row decides the format)", at, preference_format_name(format),
           preference_format_name(file.format));
    }
    ++file.rows;
    const size_t before = file.pairs.size();
    add_row(value, format, at, state);
    if (file.pairs.size() > before) file.row_of_pair.push_back(row);
  }
  if (in.bad()) fail("{}: {}", path, kReadError);
  if (file.pairs.empty() && share.count == 1) fail("{}: every pair was skipped (data.boundary_mismatch: skip)", path);
  return file;
}

TextPreferenceFile read_text_preferences(const std::string& path, const TextEncoding& encoding,
                                         BoundaryMismatch on_mismatch, int64_t vocab_size, RowShare share) {
  const std::unique_ptr<std::istream> in = open_possibly_compressed(path);
  return read_text_preferences(*in, path, encoding, on_mismatch, vocab_size, share);
}

std::string text_preferences_summary(const TextPreferenceFile& file, BoundaryMismatch on_mismatch) {
  std::string line = preference_format_name(file.format);
  if (file.format == PreferenceFormat::PreTokenized) return line;
  const char* action = on_mismatch == BoundaryMismatch::Skip ? "skipped" : "kept";
  return fmt::format("{}; {} boundary mismatch{} ({})", line, file.boundary_mismatches,
                     file.boundary_mismatches == 1 ? "" : "es", action);
}

}  // namespace dpo
