// tokenizer.json normalizers: NFC, NFKC, NFD, NFKD (utf8proc), Lowercase, Prepend, Replace,
// Strip, StripAccents, Sequence.
#include <utf8proc.h>

#include "dpo/error.h"
#include "dpo/text/tokenizer_components.h"
#include "dpo/text/tokenizer_unicode.h"

namespace dpo {

namespace {

class UnicodeNormalization : public Normalizer {
 public:
  explicit UnicodeNormalization(int options) : options_(options) {}
  void normalize(std::string& text) const override {
    if (text.empty()) return;
    utf8proc_uint8_t* out = nullptr;
    auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                          &out, static_cast<utf8proc_option_t>(options_));
    if (n < 0) fail("tokenizer normalizer: {}", utf8proc_errmsg(n));
    text.assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
    free(out);
  }

 private:
  int options_;
};

// Rust's char::to_lowercase, character by character (so no final-sigma rule, as in HF).
class Lowercase : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t at = 0, length = 0; at < text.size(); at += length) {
      char32_t c = code_point_at(text, at, &length);
      if (c == 0x130) out += "i\xCC\x87";  // the one full (two-character) lowercase mapping
      else append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
    text = std::move(out);
  }
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class StripWhitespace : public Normalizer {
 public:
  StripWhitespace(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t begin = 0, end = text.size(), length = 0;
    while (left_ && begin < end && is_rust_whitespace(code_point_at(text, begin, &length))) begin += length;
    while (right_ && end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
      if (!is_rust_whitespace(code_point_at(text, start, &length))) break;
      end = start;
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    for (size_t at = 0, length = 0; at < text.size(); at += length) {
      char32_t c = code_point_at(text, at, &length);
      if (utf8proc_category(static_cast<utf8proc_int32_t>(c)) != UTF8PROC_CATEGORY_MN) out.append(text, at, length);
    }
    text = std::move(out);
  }
};

class NormalizerSequence : public Normalizer {
 public:
  explicit NormalizerSequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

TextReplacement::TextReplacement(const nlohmann::json& spec, const std::string& where) {
  const auto& pattern = required_key(spec, "pattern", where);
  content_ = required_key(spec, "content", where).get<std::string>();
  if (pattern.contains("Regex")) regex_ = std::make_unique<Regex>(pattern["Regex"].get<std::string>(), where + ".pattern");
  else literal_ = required_key(pattern, "String", where + ".pattern").get<std::string>();
}

std::string TextReplacement::apply(const std::string& text) const {
  std::string out;
  size_t copied = 0;
  auto replace = [&](size_t begin, size_t end) {
    out.append(text, copied, begin - copied).append(content_);
    copied = end;
  };
  if (regex_) regex_->for_each_match(text, replace);
  else if (!literal_.empty())
    for (size_t at = text.find(literal_); at != std::string::npos; at = text.find(literal_, at + literal_.size()))
      replace(at, at + literal_.size());
  out.append(text, copied, std::string::npos);
  return out;
}

namespace {

class Replace : public Normalizer {
 public:
  Replace(const nlohmann::json& spec, const std::string& where) : replacement_(spec, where) {}
  void normalize(std::string& text) const override { text = replacement_.apply(text); }

 private:
  TextReplacement replacement_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  auto type = required_key(spec, "type", where).get<std::string>();
  if (type == "NFC") return std::make_unique<UnicodeNormalization>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (type == "NFKC") return std::make_unique<UnicodeNormalization>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFD") return std::make_unique<UnicodeNormalization>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  if (type == "NFKD") return std::make_unique<UnicodeNormalization>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") return std::make_unique<Prepend>(required_key(spec, "prepend", where).get<std::string>());
  if (type == "Replace") return std::make_unique<Replace>(spec, where);
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Strip")
    return std::make_unique<StripWhitespace>(optional_key<bool>(spec, "strip_left", false, where),
                                             optional_key<bool>(spec, "strip_right", false, where));
  if (type == "Sequence") {
    return std::make_unique<NormalizerSequence>(sequence_steps(spec, "normalizers", where, make_normalizer));
  }
  fail("{}: normalizer type '{}' is not supported", where, type);
}

}  // namespace dpo
