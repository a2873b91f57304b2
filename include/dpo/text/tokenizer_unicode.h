// The Unicode and regex pieces the tokenizer components share: UTF-8 walking, the character
// classes Hugging Face's Rust code tests (char::is_whitespace, is_alphanumeric, is_numeric),
// GPT-2's byte-to-character alphabet, Rust's lossy UTF-8 decoding, and PCRE2 regexes with the
// Unicode semantics of the Oniguruma regexes in tokenizer.json.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dpo {

// The code point at text[at] and its length in bytes (text is valid UTF-8).
char32_t code_point_at(std::string_view text, size_t at, size_t* length);
// Byte length of the UTF-8 sequence that starts with `lead`.
size_t utf8_length(unsigned char lead);
void append_utf8(std::string& out, char32_t c);
bool is_valid_utf8(std::string_view text);
// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

bool is_rust_whitespace(char32_t c);  // Unicode White_Space
bool is_word_char(char32_t c);        // alphanumeric or '_' (added tokens' single_word)
bool is_numeric_char(char32_t c);     // categories Nd, Nl, No

// GPT-2's reversible map of the 256 bytes to printable characters (ByteLevel).
const std::array<std::string, 256>& byte_level_alphabet();
// The byte a ByteLevel character stands for, -1 for a character outside the alphabet.
int byte_of_byte_level_char(char32_t c);

// A compiled PCRE2 pattern (UTF, UCP; JIT when available). Thread-safe: each search has its own
// match data.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where);
  // Calls on_match(begin, end) for each non-overlapping match, left to right; an empty match
  // advances by one character.
  void for_each_match(std::string_view text, const std::function<void(size_t, size_t)>& on_match) const;

 private:
  std::shared_ptr<void> code_;
};

}  // namespace dpo
