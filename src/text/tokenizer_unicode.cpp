// UTF-8, character classes and regexes as Hugging Face's Rust tokenizers sees them.
#include "dpo/text/tokenizer_unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <fmt/format.h>

#include "dpo/error.h"

namespace dpo {

size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  return 4;
}

char32_t code_point_at(std::string_view text, size_t at, size_t* length) {
  utf8proc_int32_t c = 0;
  auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + at),
                            static_cast<utf8proc_ssize_t>(text.size() - at), &c);
  if (n <= 0) {  // not reached for validated text; one byte keeps walks moving
    *length = 1;
    return 0xFFFD;
  }
  *length = static_cast<size_t>(n);
  return static_cast<char32_t>(c);
}

void append_utf8(std::string& out, char32_t c) {
  utf8proc_uint8_t buffer[4];
  auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buffer);
  out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

namespace {

// The length of the valid UTF-8 prefix of the sequence at bytes[at] (the whole sequence when it
// is complete), per the Unicode "maximal subpart" rule that Rust follows.
size_t valid_prefix(std::string_view bytes, size_t at, bool* complete) {
  auto lead = static_cast<unsigned char>(bytes[at]);
  size_t need = 0;
  unsigned char low = 0x80, high = 0xBF;
  if (lead < 0x80) need = 1;
  else if (lead >= 0xC2 && lead <= 0xDF) need = 2;
  else if (lead >= 0xE0 && lead <= 0xEF) need = 3, low = lead == 0xE0 ? 0xA0 : 0x80, high = lead == 0xED ? 0x9F : 0xBF;
  else if (lead >= 0xF0 && lead <= 0xF4) need = 4, low = lead == 0xF0 ? 0x90 : 0x80, high = lead == 0xF4 ? 0x8F : 0xBF;
  *complete = need == 1;
  if (need <= 1) return 1;
  size_t length = 1;
  for (; length < need && at + length < bytes.size(); ++length) {
    auto b = static_cast<unsigned char>(bytes[at + length]);
    if (b < (length == 1 ? low : 0x80) || b > (length == 1 ? high : 0xBF)) break;
  }
  *complete = length == need;
  return length;
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  for (size_t at = 0; at < text.size();) {
    bool complete = false;
    at += valid_prefix(text, at, &complete);
    if (!complete) return false;
  }
  return true;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t at = 0; at < bytes.size();) {
    bool complete = false;
    size_t length = valid_prefix(bytes, at, &complete);
    if (complete) out.append(bytes.substr(at, length));
    else out += "\xEF\xBF\xBD";
    at += length;
  }
  return out;
}

bool is_rust_whitespace(char32_t c) {
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_numeric_char(char32_t c) {
  auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category == UTF8PROC_CATEGORY_ND || category == UTF8PROC_CATEGORY_NL || category == UTF8PROC_CATEGORY_NO;
}

bool is_word_char(char32_t c) {
  if (c == '_' || is_numeric_char(c)) return true;
  auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO;
}

namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others take the
// code points from 256 on, in byte order.
std::array<char32_t, 256> byte_level_code_points() {
  std::array<char32_t, 256> points{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    points[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return points;
}

}  // namespace

const std::array<std::string, 256>& byte_level_alphabet() {
  static const std::array<std::string, 256> alphabet = [] {
    std::array<std::string, 256> chars;
    auto points = byte_level_code_points();
    for (int b = 0; b < 256; ++b) append_utf8(chars[b], points[b]);
    return chars;
  }();
  return alphabet;
}

int byte_of_byte_level_char(char32_t c) {
  static const std::array<int16_t, 324> bytes = [] {
    std::array<int16_t, 324> table;
    table.fill(-1);
    auto points = byte_level_code_points();
    for (int b = 0; b < 256; ++b) table[points[b]] = static_cast<int16_t>(b);
    return table;
  }();
  return c < bytes.size() ? bytes[c] : -1;
}

namespace {

// Unicode White_Space, which Oniguruma's \s matches (and Hugging Face's regexes mean). PCRE2's
// \s differs: it takes U+180E and leaves out U+0085.
constexpr const char* kWhiteSpaceRanges = R"(\t\n\x0B\f\r\x20\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// The pattern with \s (and \S outside a character class) spelled as White_Space ranges.
std::string with_oniguruma_whitespace(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char next = pattern[++i];
      if (next == 's') out += in_class ? std::string(kWhiteSpaceRanges) : fmt::format("[{}]", kWhiteSpaceRanges);
      else if (next == 'S' && !in_class) out += fmt::format("[^{}]", kWhiteSpaceRanges);
      else out.append({c, next});
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // a leading ] is a literal
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

Regex::Regex(const std::string& source_pattern, const std::string& where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  const std::string pattern = with_oniguruma_whitespace(source_pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail("{}: regex '{}' does not compile ({}, at offset {} of '{}')", where, source_pattern,
         reinterpret_cast<char*>(message), offset, pattern);
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is absent
  code_ = std::shared_ptr<void>(code, [](void* p) { pcre2_code_free(static_cast<pcre2_code*>(p)); });
}

void Regex::for_each_match(std::string_view text, const std::function<void(size_t, size_t)>& on_match) const {
  auto* code = static_cast<pcre2_code*>(code_.get());
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> data(pcre2_match_data_create_from_pattern(code, nullptr),
                                                                       pcre2_match_data_free);
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  for (size_t at = 0; at <= text.size();) {
    int rc = pcre2_match(code, subject, text.size(), at, PCRE2_NO_UTF_CHECK, data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) fail("tokenizer regex: matching failed with PCRE2 error {}", rc);
    PCRE2_SIZE* range = pcre2_get_ovector_pointer(data.get());
    on_match(range[0], range[1]);
    if (range[1] > range[0]) at = range[1];
    else if (range[1] < text.size()) at = range[1] + utf8_length(static_cast<unsigned char>(text[range[1]]));
    else return;
  }
}

}  // namespace dpo
