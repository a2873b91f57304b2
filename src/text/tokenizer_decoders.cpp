// tokenizer.json decoders, as Hugging Face's decode_chain: ByteLevel, Replace, ByteFallback,
// Fuse, Strip, Metaspace, Sequence.
#include <cctype>

#include "dpo/error.h"
#include "dpo/text/tokenizer_components.h"
#include "dpo/text/tokenizer_unicode.h"

namespace dpo {

namespace {

// Each token's characters back to bytes (a token with a character outside the alphabet stays as
// it is), then all bytes as lossy UTF-8, as one token.
class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& token : tokens) {
      std::string mapped;
      bool all_mapped = true;
      for (size_t at = 0, length = 0; at < token.size() && all_mapped; at += length) {
        int byte = byte_of_byte_level_char(code_point_at(token, at, &length));
        all_mapped = byte >= 0;
        mapped += static_cast<char>(byte);
      }
      bytes += all_mapped ? mapped : token;
    }
    tokens = {utf8_lossy(bytes)};
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(const nlohmann::json& spec, const std::string& where) : replacement_(spec, where) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& token : tokens) token = replacement_.apply(token);
  }

 private:
  TextReplacement replacement_;
};

// Runs of <0xXX> tokens become their UTF-8 text, or one U+FFFD per byte when it is not valid.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t byte_count = 0;
    auto flush = [&] {
      if (byte_count == 0) return;
      if (is_valid_utf8(bytes)) out.push_back(bytes);
      else
        for (size_t i = 0; i < byte_count; ++i) out.push_back("\xEF\xBF\xBD");
      bytes.clear();
      byte_count = 0;
    };
    for (auto& token : tokens) {
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' && std::isxdigit(static_cast<unsigned char>(token[3])) &&
          std::isxdigit(static_cast<unsigned char>(token[4]))) {
        bytes += static_cast<char>(std::stoi(token.substr(3, 2), nullptr, 16));
        ++byte_count;
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const auto& token : tokens) joined += token;
    tokens = {joined};
  }
};

// Up to `start` leading and `stop` trailing copies of one character removed from each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& token : tokens) {
      size_t begin = 0, end = token.size();
      for (size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 && begin < end; ++i)
        begin += content_.size();
      for (size_t i = 0; i < stop_ && end - begin >= content_.size() &&
                         token.compare(end - content_.size(), content_.size(), content_) == 0; ++i)
        end -= content_.size();
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

// The replacement character back to spaces; in the first token it is dropped unless the scheme
// is "never" (Hugging Face drops every one there, not only the leading one).
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepends) : replacement_(std::move(replacement)), prepends_(prepends) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const auto& token = tokens[i];
      for (size_t at = 0; at < token.size();) {
        if (!replacement_.empty() && token.compare(at, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && prepends_)) out += ' ';
          at += replacement_.size();
        } else {
          out += token[at++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool prepends_;
};

class DecoderSequence : public Decoder {
 public:
  explicit DecoderSequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

std::unique_ptr<Decoder> make_metaspace_decoder(const nlohmann::json& spec, const std::string& where) {
  auto scheme = optional_key<std::string>(spec, "prepend_scheme", "", where);
  bool prepends = scheme.empty() ? optional_key<bool>(spec, "add_prefix_space", true, where) : scheme != "never";
  return std::make_unique<MetaspaceDecoder>(required_key(spec, "replacement", where).get<std::string>(), prepends);
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  auto type = required_key(spec, "type", where).get<std::string>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(spec, where);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(required_key(spec, "content", where).get<std::string>(),
                                          optional_key<size_t>(spec, "start", 0, where), optional_key<size_t>(spec, "stop", 0, where));
  if (type == "Metaspace") return make_metaspace_decoder(spec, where);
  if (type == "Sequence") {
    return std::make_unique<DecoderSequence>(sequence_steps(spec, "decoders", where, make_decoder));
  }
  fail("{}: decoder type '{}' is not supported", where, type);
}

}  // namespace dpo
