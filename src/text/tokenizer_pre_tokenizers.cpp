// tokenizer.json pre-tokenizers: ByteLevel, Split (every behaviour, inverted or not), Digits,
// Metaspace, Whitespace, WhitespaceSplit, Punctuation, Sequence. Each cuts every piece as Hugging
// Face's NormalizedString::split does, and drops empty pieces.
#include <algorithm>
#include <cctype>
#include <functional>

#include <utf8proc.h>

#include "dpo/error.h"
#include "dpo/text/tokenizer_components.h"
#include "dpo/text/tokenizer_unicode.h"

namespace dpo {

namespace {

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

SplitBehavior split_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  fail("{}: split behavior '{}' is not supported", where, name);
}

struct Span {
  size_t begin, end;
  bool is_match;
};

// What a pattern finds in a text: spans covering all of it, matches and the gaps between.
using Finder = std::function<void(std::string_view, const std::function<void(size_t, size_t)>&)>;

std::vector<Span> spans_of(std::string_view text, const Finder& find) {
  std::vector<Span> spans;
  size_t previous = 0;
  find(text, [&](size_t begin, size_t end) {
    if (begin > previous) spans.push_back({previous, begin, false});
    spans.push_back({begin, end, true});
    previous = end;
  });
  if (previous < text.size()) spans.push_back({previous, text.size(), false});
  return spans;
}

// Hugging Face's split behaviours: which spans are kept and which are glued to their neighbour.
std::vector<std::pair<size_t, size_t>> pieces_by_behavior(const std::vector<Span>& spans, SplitBehavior behavior) {
  std::vector<std::pair<size_t, size_t>> pieces;
  bool previous_match = false;
  if (behavior == SplitBehavior::merged_with_next) {
    for (size_t i = spans.size(); i-- > 0;) {
      const auto& s = spans[i];
      if (s.is_match && !previous_match && !pieces.empty()) pieces.back().first = s.begin;
      else pieces.push_back({s.begin, s.end});
      previous_match = s.is_match;
    }
    std::reverse(pieces.begin(), pieces.end());
    return pieces;
  }
  for (const auto& s : spans) {
    bool glue = (behavior == SplitBehavior::merged_with_previous && s.is_match && !previous_match) ||
                (behavior == SplitBehavior::contiguous && s.is_match == previous_match);
    if (behavior == SplitBehavior::removed && s.is_match) {
    } else if (glue && !pieces.empty()) pieces.back().second = s.end;
    else pieces.push_back({s.begin, s.end});
    previous_match = s.is_match;
  }
  return pieces;
}

void split_pieces(std::vector<TextPiece>& pieces, const Finder& find, SplitBehavior behavior, bool invert) {
  std::vector<TextPiece> out;
  out.reserve(pieces.size());
  for (auto& piece : pieces) {
    auto spans = spans_of(piece.text, find);
    if (invert)
      for (auto& s : spans) s.is_match = !s.is_match;
    for (auto [begin, end] : pieces_by_behavior(spans, behavior))
      if (end > begin) out.push_back({piece.text.substr(begin, end - begin), piece.at_text_start && begin == 0});
  }
  pieces = std::move(out);
}

Finder regex_finder(std::shared_ptr<const Regex> regex) {
  return [regex](std::string_view text, const std::function<void(size_t, size_t)>& on_match) {
    regex->for_each_match(text, on_match);
  };
}

Finder literal_finder(std::string literal) {
  return [literal](std::string_view text, const std::function<void(size_t, size_t)>& on_match) {
    if (literal.empty()) return;
    for (size_t at = text.find(literal); at != std::string_view::npos; at = text.find(literal, at + literal.size()))
      on_match(at, at + literal.size());
  };
}

// Each character the predicate accepts is a match of its own.
Finder char_finder(bool (*accept)(char32_t)) {
  return [accept](std::string_view text, const std::function<void(size_t, size_t)>& on_match) {
    for (size_t at = 0, length = 0; at < text.size(); at += length)
      if (accept(code_point_at(text, at, &length))) on_match(at, at + length);
  };
}

bool is_punctuation_char(char32_t c) {
  if (c < 0x80 && std::ispunct(static_cast<int>(c))) return true;
  auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category >= UTF8PROC_CATEGORY_PC && category <= UTF8PROC_CATEGORY_PO;
}

class Split : public PreTokenizer {
 public:
  Split(Finder find, SplitBehavior behavior, bool invert) : find_(std::move(find)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override { split_pieces(pieces, find_, behavior_, invert_); }

 private:
  Finder find_;
  SplitBehavior behavior_;
  bool invert_;
};

// GPT-2's pattern, as Hugging Face's ByteLevel writes it.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, const std::string& where) : add_prefix_space_(add_prefix_space) {
    if (use_regex) find_ = regex_finder(std::make_shared<Regex>(kGpt2Pattern, where));
  }
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    if (add_prefix_space_)
      for (auto& piece : pieces)
        if (piece.text.compare(0, 1, " ") != 0) piece.text.insert(0, " ");
    if (find_) split_pieces(pieces, find_, SplitBehavior::isolated, false);
    const auto& alphabet = byte_level_alphabet();
    for (auto& piece : pieces) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (unsigned char byte : piece.text) mapped += alphabet[byte];
      piece.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  Finder find_;
};

enum class PrependScheme { always, first, never };

class Metaspace : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    for (auto& piece : pieces) {
      std::string replaced;
      for (char c : piece.text) c == ' ' ? replaced += replacement_ : replaced += c;
      bool prepend = scheme_ == PrependScheme::always || (scheme_ == PrependScheme::first && piece.at_text_start);
      if (prepend && replaced.compare(0, replacement_.size(), replacement_) != 0) replaced.insert(0, replacement_);
      piece.text = std::move(replaced);
    }
    if (split_) split_pieces(pieces, literal_finder(replacement_), SplitBehavior::merged_with_next, false);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class PreTokenizerSequence : public PreTokenizer {
 public:
  explicit PreTokenizerSequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

std::unique_ptr<PreTokenizer> make_split(const nlohmann::json& spec, const std::string& where) {
  const auto& pattern = required_key(spec, "pattern", where);
  auto behavior = split_behavior(required_key(spec, "behavior", where).get<std::string>(), where);
  bool invert = optional_key<bool>(spec, "invert", false, where);
  if (pattern.contains("Regex"))
    return std::make_unique<Split>(regex_finder(std::make_shared<Regex>(pattern["Regex"].get<std::string>(), where)),
                                   behavior, invert);
  return std::make_unique<Split>(literal_finder(required_key(pattern, "String", where + ".pattern").get<std::string>()),
                                 behavior, invert);
}

std::unique_ptr<PreTokenizer> make_metaspace(const nlohmann::json& spec, const std::string& where) {
  auto replacement = required_key(spec, "replacement", where).get<std::string>();
  auto scheme_name = optional_key<std::string>(spec, "prepend_scheme", "", where);
  PrependScheme scheme = optional_key<bool>(spec, "add_prefix_space", true, where) ? PrependScheme::always : PrependScheme::never;
  if (scheme_name == "first") scheme = PrependScheme::first;
  else if (scheme_name == "never") scheme = PrependScheme::never;
  else if (scheme_name == "always") scheme = PrependScheme::always;
  else if (!scheme_name.empty()) fail("{}: prepend_scheme '{}' is not supported", where, scheme_name);
  return std::make_unique<Metaspace>(replacement, scheme, optional_key<bool>(spec, "split", true, where));
}

// Rust regex's \w (alphabetic, marks, decimal digits, connector punctuation, joiners) and \s.
constexpr const char* kWordPattern =
    R"([\p{L}\p{Nl}\p{Nd}\p{M}\p{Pc}\x{200C}\x{200D}]+|[^\p{L}\p{Nl}\p{Nd}\p{M}\p{Pc}\x{200C}\x{200D}\s\x{85}]+)";

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  auto type = required_key(spec, "type", where).get<std::string>();
  if (type == "ByteLevel")
    return std::make_unique<ByteLevel>(optional_key<bool>(spec, "add_prefix_space", true, where),
                                       optional_key<bool>(spec, "use_regex", true, where), where);
  if (type == "Split") return make_split(spec, where);
  if (type == "Metaspace") return make_metaspace(spec, where);
  if (type == "Digits")
    return std::make_unique<Split>(char_finder(is_numeric_char),
                                   optional_key<bool>(spec, "individual_digits", false, where) ? SplitBehavior::isolated
                                                                                              : SplitBehavior::contiguous,
                                   false);
  if (type == "Whitespace")
    return std::make_unique<Split>(regex_finder(std::make_shared<Regex>(kWordPattern, where)), SplitBehavior::removed, true);
  if (type == "WhitespaceSplit") return std::make_unique<Split>(char_finder(is_rust_whitespace), SplitBehavior::removed, false);
  if (type == "Punctuation")
    return std::make_unique<Split>(char_finder(is_punctuation_char),
                                   split_behavior(optional_key<std::string>(spec, "behavior", "Isolated", where), where),
                                   false);
  if (type == "Sequence") {
    return std::make_unique<PreTokenizerSequence>(sequence_steps(spec, "pretokenizers", where, make_pre_tokenizer));
  }
  fail("{}: pre_tokenizer type '{}' is not supported", where, type);
}

}  // namespace dpo
