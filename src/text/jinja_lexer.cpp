// Jinja source to tokens. Whitespace control follows Jinja2 with transformers' settings
// (trim_blocks=True, lstrip_blocks=True): a block or comment tag drops the first newline after it
// and the spaces and tabs before it on its line; "-" strips all whitespace on that side, "+" keeps
// the line's leading whitespace.
#include <cctype>
#include <cstring>

#include <fmt/format.h>

#include "jinja_ast.h"

namespace dpo::jinja {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

struct Lexer {
  const std::string& source;
  size_t pos = 0;
  int line = 1;
  std::vector<Token> tokens;

  [[noreturn]] void error(const std::string& message) const { throw TemplateFaultAt(line, message); }

  void advance_to(size_t to) {
    for (; pos < to && pos < source.size(); ++pos)
      if (source[pos] == '\n') ++line;
  }

  void add(Token::Kind kind, std::string text) { tokens.push_back({kind, std::move(text), line}); }

  std::string read_string(char quote) {
    std::string out;
    for (advance_to(pos + 1); pos < source.size() && source[pos] != quote; advance_to(pos + 1)) {
      char c = source[pos];
      if (c == '\\' && pos + 1 < source.size()) {
        advance_to(pos + 1);
        const char e = source[pos];
        static const char* from = "ntr\\'\"0";
        static const char* to = "\n\t\r\\'\"\0";
        const char* found = std::strchr(from, e);
        if (found && e) c = to[found - from];
        else {
          out += '\\';
          c = e;
        }
      }
      out += c;
    }
    if (pos >= source.size()) error("unterminated string");
    advance_to(pos + 1);
    return out;
  }

  void read_number() {
    size_t end = pos;
    while (end < source.size() && (std::isdigit(static_cast<unsigned char>(source[end])) || source[end] == '_')) ++end;
    bool is_float = end + 1 < source.size() && source[end] == '.' && std::isdigit(static_cast<unsigned char>(source[end + 1]));
    if (is_float)
      for (++end; end < source.size() && std::isdigit(static_cast<unsigned char>(source[end]));) ++end;
    if (end < source.size() && (source[end] == 'e' || source[end] == 'E')) {  // 1e20, 2.5e-3
      size_t digits_at = end + 1 + (end + 1 < source.size() && (source[end + 1] == '-' || source[end + 1] == '+'));
      if (digits_at < source.size() && std::isdigit(static_cast<unsigned char>(source[digits_at]))) {
        is_float = true;
        for (end = digits_at; end < source.size() && std::isdigit(static_cast<unsigned char>(source[end]));) ++end;
      }
    }
    std::string digits;
    for (size_t i = pos; i < end; ++i)
      if (source[i] != '_') digits += source[i];
    add(is_float ? Token::Kind::Float : Token::Kind::Int, digits);
    advance_to(end);
  }

  // Tokens of one {{ }} or {% %} tag up to its closing; returns the strip sign before the close
  // ('-', '+' or 0).
  char read_tag(bool output) {
    static const char* operators[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                      "=",  "(",  ")",  "[",  "]",  "{",  "}", ",", ".", ":", "|"};
    int braces = 0;
    for (;;) {
      while (pos < source.size() && is_space(source[pos])) advance_to(pos + 1);
      if (pos >= source.size()) error(output ? "unclosed '{{'" : "unclosed '{%'");
      const char* closer = output ? "}}" : "%}";
      for (char sign : {'-', '+', '\0'}) {
        const std::string close = sign ? std::string(1, sign) + closer : closer;
        if ((braces == 0 || !output) && source.compare(pos, close.size(), close) == 0) {
          add(Token::Kind::Close, "");
          advance_to(pos + close.size());
          return sign;
        }
      }
      const char c = source[pos];
      if (c == '\'' || c == '"') {
        const int at = line;
        std::string text = read_string(c);
        tokens.push_back({Token::Kind::String, std::move(text), at});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        read_number();
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t end = pos;
        while (end < source.size() && (std::isalnum(static_cast<unsigned char>(source[end])) || source[end] == '_')) ++end;
        add(Token::Kind::Name, source.substr(pos, end - pos));
        advance_to(end);
      } else {
        const char** match = nullptr;
        for (const char*& op : operators)
          if (source.compare(pos, std::strlen(op), op) == 0) {
            match = &op;
            break;
          }
        if (!match) error(fmt::format("unexpected character '{}'", c));
        braces += (**match == '{') - (**match == '}');
        add(Token::Kind::Operator, *match);
        advance_to(pos + std::strlen(*match));
      }
    }
  }
};

// Text between tags with the whitespace control of the tags on both sides applied. The tag after
// the text is applied first, on the text as written, so that "start of a line" means what it
// does in the source.
std::string trimmed_text(std::string text, bool strip_all_left, bool drop_newline, char open_sign, bool is_block,
                         bool line_starting) {
  if (open_sign == '-') {
    size_t end = text.size();
    while (end > 0 && is_space(text[end - 1])) --end;
    text.erase(end);
  } else if (is_block && open_sign != '+') {
    const size_t newline = text.rfind('\n');
    const size_t line_start = newline == std::string::npos ? 0 : newline + 1;
    if ((newline != std::string::npos || line_starting) &&
        text.find_first_not_of(" \t", line_start) == std::string::npos)
      text.erase(line_start);
  }
  if (strip_all_left) {
    size_t first = 0;
    while (first < text.size() && is_space(text[first])) ++first;
    text.erase(0, first);
  } else if (drop_newline) {
    if (text.rfind("\r\n", 0) == 0) text.erase(0, 2);
    else if (text.rfind("\n", 0) == 0) text.erase(0, 1);
  }
  return text;
}

// The text of {% raw %}...{% endraw %} as written (Jinja2 keeps even the newline after
// {% raw %}), up to the endraw tag, whose own whitespace control applies; returns its closing sign.
char lex_raw_body(Lexer& lexer, char raw_close_sign) {
  const std::string& source = lexer.source;
  for (size_t open = source.find("{%", lexer.pos); open != std::string::npos; open = source.find("{%", open + 2)) {
    size_t at = open + 2;
    const char open_sign = at < source.size() && (source[at] == '-' || source[at] == '+') ? source[at++] : 0;
    while (at < source.size() && is_space(source[at])) ++at;
    if (source.compare(at, 6, "endraw") != 0) continue;
    at += 6;
    while (at < source.size() && is_space(source[at])) ++at;
    const char close_sign = at < source.size() && (source[at] == '-' || source[at] == '+') ? source[at++] : 0;
    if (source.compare(at, 2, "%}") != 0) continue;
    std::string text = trimmed_text(source.substr(lexer.pos, open - lexer.pos), raw_close_sign == '-', false,
                                    open_sign, true, false);
    if (!text.empty()) lexer.add(Token::Kind::Text, std::move(text));
    lexer.advance_to(at + 2);
    return close_sign;
  }
  lexer.error("missing '{% endraw %}'");
}

}  // namespace

std::vector<Token> lex(const std::string& source) {
  Lexer lexer{source, 0, 1, {}};
  bool strip_all_left = false, drop_newline = false;
  while (lexer.pos <= source.size()) {
    size_t open = lexer.pos;
    while ((open = source.find('{', open)) != std::string::npos &&
           !(open + 1 < source.size() && std::strchr("{%#", source[open + 1])))
      ++open;
    const bool at_end = open == std::string::npos;
    if (at_end) open = source.size();
    const char tag = at_end ? 0 : source[open + 1];
    const char open_sign = !at_end && open + 2 < source.size() && std::strchr("-+", source[open + 2]) ? source[open + 2] : 0;
    const bool line_starting = lexer.pos == 0 || source[lexer.pos - 1] == '\n';
    std::string text = trimmed_text(source.substr(lexer.pos, open - lexer.pos), strip_all_left, drop_newline,
                                     open_sign, tag == '%' || tag == '#', line_starting);
    if (!text.empty()) lexer.add(Token::Kind::Text, std::move(text));
    lexer.advance_to(open);
    if (at_end) break;
    lexer.advance_to(open + 2 + (open_sign ? 1 : 0));
    char close_sign = 0;
    if (tag == '#') {
      const size_t close = source.find("#}", lexer.pos);
      if (close == std::string::npos) lexer.error("unclosed comment '{#'");
      close_sign = close > lexer.pos && source[close - 1] == '-' ? '-' : 0;
      lexer.advance_to(close + 2);
    } else {
      lexer.add(tag == '{' ? Token::Kind::OutputOpen : Token::Kind::BlockOpen, "");
      close_sign = lexer.read_tag(tag == '{');
      const size_t n = lexer.tokens.size();
      if (tag == '%' && n >= 3 && lexer.tokens[n - 2].kind == Token::Kind::Name && lexer.tokens[n - 2].text == "raw" &&
          lexer.tokens[n - 3].kind == Token::Kind::BlockOpen) {
        lexer.tokens.resize(n - 3);
        close_sign = lex_raw_body(lexer, close_sign);
      }
    }
    strip_all_left = close_sign == '-';
    drop_newline = tag != '{' && close_sign != '+';
  }
  lexer.add(Token::Kind::End, "");
  return lexer.tokens;
}

}  // namespace dpo::jinja
