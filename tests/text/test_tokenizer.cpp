// The tokenizer.json components' edge cases on small hand-made tokenizers (the real files are
// checked against Hugging Face in test_tokenizer_goldens.cpp).
#include "catch2_api.h"
#include <nlohmann/json.hpp>

#include "dpo/error.h"
#include "dpo/text/tokenizer.h"
#include "dpo/text/tokenizer_components.h"

using nlohmann::json;

namespace {

std::vector<std::string> pieces_of(const json& pre_tokenizer, const std::string& text) {
  auto step = dpo::make_pre_tokenizer(pre_tokenizer, "test");
  std::vector<dpo::TextPiece> pieces{{text, true}};
  step->pre_tokenize(pieces);
  std::vector<std::string> texts;
  for (const auto& piece : pieces) texts.push_back(piece.text);
  return texts;
}

json split_on_dash(const std::string& behavior, bool invert = false) {
  return {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}};
}

// Characters a, b, x, space and é's two bytes; "ab" merged; <unk>.
json tiny_tokenizer(json added_tokens = json::array(), json model_overrides = json::object()) {
  json model = {{"type", "BPE"},
                {"vocab", {{"<unk>", 0}, {"a", 1}, {"b", 2}, {" ", 3}, {"x", 4}, {"ab", 5}, {"<0xC3>", 6}, {"<0xA9>", 7}}},
                {"merges", json::array({"a b"})},
                {"unk_token", "<unk>"}};
  for (const auto& [key, value] : model_overrides.items()) model[key] = value;
  return {{"model", model}, {"added_tokens", added_tokens}};
}

json added(const std::string& content, int id, json flags) {
  json token = {{"content", content}, {"id", id}, {"special", false}, {"normalized", false}};
  for (const auto& [key, value] : flags.items()) token[key] = value;
  return token;
}

std::vector<int64_t> ids(std::initializer_list<int64_t> list) { return list; }

}  // namespace

TEST_CASE("a Split pre-tokenizer cuts 'a--b-c' on '-' as each behaviour says", "[text][tokenizer]") {
  using V = std::vector<std::string>;
  CHECK(pieces_of(split_on_dash("Removed"), "a--b-c") == V{"a", "b", "c"});
  CHECK(pieces_of(split_on_dash("Isolated"), "a--b-c") == V{"a", "-", "-", "b", "-", "c"});
  CHECK(pieces_of(split_on_dash("MergedWithPrevious"), "a--b-c") == V{"a-", "-", "b-", "c"});
  CHECK(pieces_of(split_on_dash("MergedWithNext"), "a--b-c") == V{"a", "-", "-b", "-c"});
  CHECK(pieces_of(split_on_dash("Contiguous"), "a--b-c") == V{"a", "--", "b", "-", "c"});
  CHECK(pieces_of(split_on_dash("Removed", true), "a--b-c") == V{"-", "-", "-"});
}

TEST_CASE("a regex Split keeps lookahead and Unicode classes as Hugging Face's Oniguruma does", "[text][tokenizer]") {
  json split = {{"type", "Split"}, {"pattern", {{"Regex", R"(\s+(?!\S)|\s+|\p{L}+|\p{N}{1,3})"}}}, {"behavior", "Isolated"}};
  CHECK(pieces_of(split, "héllo   12345") == std::vector<std::string>{"héllo", "  ", " ", "123", "45"});
}

TEST_CASE("a regex's whitespace class is Unicode White_Space, as Oniguruma's: U+0085 is a space and U+180E is not", "[text][tokenizer]") {
  json split = {{"type", "Split"}, {"pattern", {{"Regex", R"(\s+)"}}}, {"behavior", "Removed"}};
  CHECK(pieces_of(split, "a\u180Eb\u0085c\u3000d") == std::vector<std::string>{"a\u180Eb", "c", "d"});
  json not_space = {{"type", "Split"}, {"pattern", {{"Regex", R"([^\s]+)"}}}, {"behavior", "Isolated"}};
  CHECK(pieces_of(not_space, "x\u0085y") == std::vector<std::string>{"x", "\u0085", "y"});
}

TEST_CASE("Digits and Metaspace pre-tokenizers", "[text][tokenizer]") {
  using V = std::vector<std::string>;
  CHECK(pieces_of({{"type", "Digits"}, {"individual_digits", true}}, "a12b") == V{"a", "1", "2", "b"});
  CHECK(pieces_of({{"type", "Digits"}, {"individual_digits", false}}, "a12b") == V{"a", "12", "b"});
  json metaspace = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  CHECK(pieces_of(metaspace, "hi there") == V{"▁hi", "▁there"});
}

TEST_CASE("an lstrip added token takes the whitespace before it, an rstrip one the whitespace after", "[text][tokenizer]") {
  auto lstrip = dpo::Tokenizer::from_json(tiny_tokenizer(json::array({added("<t>", 8, {{"lstrip", true}})})), "t", "");
  CHECK(lstrip.encode("a  <t> b", false) == ids({1, 8, 3, 2}));
  auto rstrip = dpo::Tokenizer::from_json(tiny_tokenizer(json::array({added("<t>", 8, {{"rstrip", true}})})), "t", "");
  CHECK(rstrip.encode("a <t>  b", false) == ids({1, 3, 8, 2}));
}

TEST_CASE("a single_word added token matches only between non-word characters", "[text][tokenizer]") {
  auto tokenizer = dpo::Tokenizer::from_json(tiny_tokenizer(json::array({added("ba", 8, {{"single_word", true}})})), "t", "");
  CHECK(tokenizer.encode("xba", false) == ids({4, 2, 1}));
  CHECK(tokenizer.encode("x ba", false) == ids({4, 3, 8}));
}

TEST_CASE("added tokens take the ids Hugging Face gives them on load", "[text][tokenizer]") {
  // "ab" is in the model's vocabulary: its id wins over the file's; the next new token takes the
  // first free id after the vocabulary, whatever the file says.
  auto tokenizer = dpo::Tokenizer::from_json(
      tiny_tokenizer(json::array({added("ab", 99, {{"special", true}}), added("<t>", 42, {})})), "t", "");
  CHECK(tokenizer.token_to_id("ab") == 5);
  CHECK(tokenizer.token_to_id("<t>") == 8);
  CHECK(tokenizer.encode("x<t>", false) == ids({4, 8}));
  CHECK(tokenizer.vocab_size() == 9);
  CHECK(tokenizer.decode({4, 5, 8}, true) == "x <t>");  // no decoder: tokens joined by spaces, as HF
}

TEST_CASE("byte_fallback spells an unknown character in <0xXX> tokens, else unk, fused or not", "[text][tokenizer]") {
  auto bytes = dpo::Tokenizer::from_json(tiny_tokenizer(json::array(), {{"byte_fallback", true}}), "t", "");
  CHECK(bytes.encode("aé", false) == ids({1, 6, 7}));
  auto unfused = dpo::Tokenizer::from_json(tiny_tokenizer(), "t", "");
  CHECK(unfused.encode("éé€a", false) == ids({0, 0, 0, 1}));
  auto fused = dpo::Tokenizer::from_json(tiny_tokenizer(json::array(), {{"fuse_unk", true}}), "t", "");
  CHECK(fused.encode("éé€a", false) == ids({0, 1}));
}

TEST_CASE("merges given as [a, b] pairs merge as \"a b\" strings do", "[text][tokenizer]") {
  auto pairs = dpo::Tokenizer::from_json(tiny_tokenizer(json::array(), {{"merges", json::array({json::array({"a", "b"})})}}), "t", "");
  CHECK(pairs.encode("xab", false) == ids({4, 5}));
}

TEST_CASE("the ByteFallback decoder turns invalid UTF-8 bytes into one U+FFFD each", "[text][tokenizer]") {
  auto decoder = dpo::make_decoder({{"type", "ByteFallback"}}, "test");
  std::vector<std::string> tokens{"<0xC3>", "<0xA9>", "a", "<0xC3>", "<0x28>"};
  decoder->decode_chain(tokens);
  CHECK(tokens == std::vector<std::string>{"é", "a", "\xEF\xBF\xBD", "\xEF\xBF\xBD"});
}

TEST_CASE("a component type that is not supported is refused by name", "[text][tokenizer]") {
  auto spec = tiny_tokenizer();
  spec["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  CHECK_THROWS_WITH(dpo::Tokenizer::from_json(spec, "tokenizer.json", ""),
                    "tokenizer.json: pre_tokenizer: pre_tokenizer type 'BertPreTokenizer' is not supported");
  spec = tiny_tokenizer();
  spec["model"]["type"] = "Unigram";
  CHECK_THROWS_WITH(dpo::Tokenizer::from_json(spec, "tokenizer.json", ""), Catch::Contains("model type 'Unigram' is not supported"));
}

TEST_CASE("a tokenizer.json without a model vocab is refused naming the key", "[text][tokenizer]") {
  auto spec = tiny_tokenizer();
  spec["model"].erase("vocab");
  CHECK_THROWS_WITH(dpo::Tokenizer::from_json(spec, "tokenizer.json", ""), "tokenizer.json: model: key 'vocab' is missing");
}

TEST_CASE("text that is not valid UTF-8 is refused", "[text][tokenizer]") {
  auto tokenizer = dpo::Tokenizer::from_json(tiny_tokenizer(), "t", "");
  CHECK_THROWS_WITH(tokenizer.encode("a\xC3", false), Catch::Contains("not valid UTF-8"));
}
