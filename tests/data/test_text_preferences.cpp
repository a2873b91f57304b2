// TRL's text preference formats (README, "Data"): format detection, TRL's extract_prompt, the
// boundary and EOS rules, data.boundary_mismatch. A fake byte-level encoder stands in for the
// tokenizer: one id per byte, except that "ab" merges into one id, so that a prompt ending in 'a'
// followed by a response starting with 'b' makes a boundary mismatch on purpose.
#include "catch2_api.h"

#include <sstream>

#include "dpo/data/text_preferences.h"
#include "dpo/error.h"
#include "dpo/text/chat_template.h"

using Catch::Contains;
using dpo::BoundaryMismatch;
using dpo::PreferenceFormat;
using dpo::TextEncoding;
using dpo::TextPreferenceFile;
using dpo::TokenIds;

namespace {

constexpr int64_t kMergedAb = 300;

std::vector<int64_t> fake_encode(const std::string& text) {
  std::vector<int64_t> ids;
  for (size_t k = 0; k < text.size(); ++k) {
    if (text.compare(k, 2, "ab") == 0) {
      ids.push_back(kMergedAb);
      ++k;
    } else {
      ids.push_back(static_cast<unsigned char>(text[k]));
    }
  }
  return ids;
}

TokenIds ids_of(const std::string& text) {
  TokenIds out;
  for (int64_t id : fake_encode(text)) out.push_back(static_cast<int32_t>(id));
  return out;
}

const dpo::ChatTemplate& chat_template() {
  static const dpo::ChatTemplate chat(
      "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
      "{% if add_generation_prompt %}<|assistant|>{% endif %}",
      "<s>", "</s>");
  return chat;
}

TextEncoding fake_encoding() {
  return TextEncoding{fake_encode, fake_encode, "</s>", &chat_template()};
}

TextPreferenceFile read(const std::string& jsonl, BoundaryMismatch on_mismatch = BoundaryMismatch::Warn,
                        const TextEncoding& encoding = fake_encoding()) {
  std::istringstream in(jsonl);
  return dpo::read_text_preferences(in, "prefs.jsonl", encoding, on_mismatch);
}

}  // namespace

TEST_CASE("each of TRL's four text formats and the pre-tokenized one is detected and named", "[data]") {
  const std::string user = R"({"role": "user", "content": "hi"})";
  const auto turn = [](const std::string& text) { return R"([{"role": "assistant", "content": ")" + text + R"("}])"; };
  const auto name = [](const std::string& jsonl) { return dpo::preference_format_name(read(jsonl).format); };
  CHECK(name(R"({"prompt_input_ids": [1], "chosen_input_ids": [2], "rejected_input_ids": [3]})") ==
        std::string("pre-tokenized"));
  CHECK(name(R"({"prompt": "Q", "chosen": "A", "rejected": "B"})") == std::string("standard, explicit prompt"));
  CHECK(name(R"({"chosen": "Q A", "rejected": "Q B"})") == std::string("standard, implicit prompt"));
  CHECK(name(R"({"prompt": [)" + user + R"(], "chosen": )" + turn("A") + R"(, "rejected": )" + turn("B") + "}") ==
        std::string("conversational, explicit prompt"));
  CHECK(name(R"({"chosen": [)" + user + R"(, {"role": "assistant", "content": "A"}], "rejected": [)" + user +
             R"(, {"role": "assistant", "content": "B"}]})") == std::string("conversational, implicit prompt"));
}

TEST_CASE("an implicit string prompt is TRL's: the common prefix, less a trailing space", "[data]") {
  const auto sky = dpo::extract_prompt("The sky is blue.", "The sky is green.");
  CHECK(sky.prompt == "The sky is");
  CHECK(sky.chosen == " blue.");
  CHECK(sky.rejected == " green.");
  const auto no_space = dpo::extract_prompt("x=12", "x=13");
  CHECK(no_space.prompt == "x=1");
  CHECK(no_space.chosen == "2");
}

TEST_CASE("an implicit string prompt is cut between code points, as Python indexes strings", "[data]") {
  // ö (C3 B6) and ä (C3 A4) share their first byte; the prompt must not end inside the character.
  const auto cut = dpo::extract_prompt("h\xC3\xA9llo w\xC3\xB6rld", "h\xC3\xA9llo w\xC3\xA4rld");
  CHECK(cut.prompt == "h\xC3\xA9llo w");
  CHECK(cut.chosen == "\xC3\xB6rld");
  CHECK(cut.rejected == "\xC3\xA4rld");
}

TEST_CASE("where one response contains the other, TRL's loop leaves the last character to the responses", "[data]") {
  const auto prefix = dpo::extract_prompt("abc", "abcdef");
  CHECK(prefix.prompt == "ab");
  CHECK(prefix.chosen == "c");
  CHECK(prefix.rejected == "cdef");
  const auto same = dpo::extract_prompt("same", "same");
  CHECK(same.prompt == "sam");
  CHECK(same.chosen == "e");
}

TEST_CASE("standard responses get the EOS string unless they end with it, and the prompt is tokenized alone", "[data]") {
  const auto file = read(R"({"prompt": "Q:", "chosen": " yes", "rejected": " no</s>"})");
  REQUIRE(file.pairs.size() == 1);
  CHECK(file.pairs[0].prompt == ids_of("Q:"));
  CHECK(file.pairs[0].chosen == ids_of(" yes</s>"));
  CHECK(file.pairs[0].rejected == ids_of(" no</s>"));
  CHECK(file.boundary_mismatches == 0);
}

TEST_CASE("standard implicit rows split at TRL's prompt and tokenize prompt+response jointly", "[data]") {
  const auto file = read(R"({"chosen": "The sky is blue.", "rejected": "The sky is green."})");
  REQUIRE(file.pairs.size() == 1);
  CHECK(file.pairs[0].prompt == ids_of("The sky is"));
  CHECK(file.pairs[0].chosen == ids_of(" blue.</s>"));
  CHECK(file.pairs[0].rejected == ids_of(" green.</s>"));
}

TEST_CASE("conversational rows: prompt with the generation prompt, responses from the full render, no EOS added",
          "[data]") {
  const auto file = read(
      R"({"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "yo"}], )"
      R"("rejected": [{"role": "assistant", "content": "no"}]})");
  REQUIRE(file.pairs.size() == 1);
  CHECK(file.pairs[0].prompt == ids_of("<|user|>hi</s><|assistant|>"));
  CHECK(file.pairs[0].chosen == ids_of("yo</s>"));
  CHECK(file.pairs[0].rejected == ids_of("no</s>"));
}

TEST_CASE("an implicit conversation's prompt is its common leading messages", "[data]") {
  const auto file = read(
      R"({"chosen": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, )"
      R"({"role": "assistant", "content": "yo"}], "rejected": [{"role": "system", "content": "s"}, )"
      R"({"role": "user", "content": "hi"}, {"role": "assistant", "content": "no"}]})");
  REQUIRE(file.pairs.size() == 1);
  CHECK(file.format == PreferenceFormat::ConversationalImplicit);
  CHECK(file.pairs[0].prompt == ids_of("<|system|>s</s><|user|>hi</s><|assistant|>"));
  CHECK(file.pairs[0].chosen == ids_of("yo</s>"));
  CHECK(file.pairs[0].rejected == ids_of("no</s>"));
}

TEST_CASE("a pair whose joint tokens do not start with the prompt's is counted and kept, skipped or refused",
          "[data]") {
  // "xa" + "b..." merges "ab" across the boundary; the second pair is clean.
  const std::string jsonl =
      "{\"prompt\": \"xa\", \"chosen\": \"bc\", \"rejected\": \"dc\"}\n"
      "{\"prompt\": \"xy\", \"chosen\": \"bc\", \"rejected\": \"dc\"}\n";
  const auto warned = read(jsonl, BoundaryMismatch::Warn);
  CHECK(warned.boundary_mismatches == 1);
  REQUIRE(warned.pairs.size() == 2);
  // As TRL: the response is whatever follows the prompt's length in the joint ids.
  CHECK(warned.pairs[0].chosen == ids_of("c</s>"));
  CHECK(dpo::text_preferences_summary(warned, BoundaryMismatch::Warn) ==
        "standard, explicit prompt; 1 boundary mismatch (kept)");

  const auto skipped = read(jsonl, BoundaryMismatch::Skip);
  CHECK(skipped.boundary_mismatches == 1);
  REQUIRE(skipped.pairs.size() == 1);
  CHECK(skipped.pairs[0].prompt == ids_of("xy"));

  CHECK_THROWS_WITH(read(jsonl, BoundaryMismatch::Error),
                    Contains("prefs.jsonl:1:") && Contains("prompt+chosen") && Contains("boundary_mismatch"));
}

TEST_CASE("data.boundary_mismatch values are warn, skip and error", "[data]") {
  CHECK(dpo::parse_boundary_mismatch("skip") == BoundaryMismatch::Skip);
  CHECK_THROWS_WITH(dpo::parse_boundary_mismatch("ignore"), Contains("data.boundary_mismatch"));
}

TEST_CASE("a row of another format than the first is refused naming the file and line", "[data]") {
  CHECK_THROWS_WITH(read("{\"prompt\": \"Q\", \"chosen\": \"A\", \"rejected\": \"B\"}\n\n"
                         "{\"chosen\": \"QA\", \"rejected\": \"QB\"}\n"),
                    Contains("prefs.jsonl:3:") && Contains("standard, implicit prompt") &&
                        Contains("standard, explicit prompt"));
  CHECK_THROWS_WITH(read("{\"prompt\": \"Q\", \"chosen\": \"A\", \"rejected\": \"B\"}\n"
                         "{\"prompt_input_ids\": [1], \"chosen_input_ids\": [2], \"rejected_input_ids\": [3]}\n"),
                    Contains("prefs.jsonl:2:") && Contains("pre-tokenized"));
}

TEST_CASE("malformed text rows are refused naming the file, line and field", "[data]") {
  CHECK_THROWS_WITH(read(R"({"prompt": "Q", "chosen": "A", "rejected": [{"role": "assistant", "content": "B"}]})"),
                    Contains("prefs.jsonl:1:") && Contains("'rejected'"));
  CHECK_THROWS_WITH(read(R"({"chosen": [{"content": "A"}], "rejected": [{"role": "user", "content": "B"}]})"),
                    Contains("prefs.jsonl:1:") && Contains("'chosen' message 0"));
  CHECK_THROWS_WITH(read(R"({"prompt": "Q", "chosen": "", "rejected": "B"})"),
                    Contains("prefs.jsonl:1:") && Contains("'chosen' is empty"));
  CHECK_THROWS_WITH(read(R"({"text": "hello"})"), Contains("prefs.jsonl:1:") && Contains("'chosen'"));
}

TEST_CASE("conversational data without a chat template is refused naming the line", "[data]") {
  TextEncoding no_template = fake_encoding();
  no_template.chat_template = nullptr;
  CHECK_THROWS_WITH(read(R"({"chosen": [{"role": "user", "content": "A"}], "rejected": [{"role": "user", "content": "B"}]})",
                         BoundaryMismatch::Warn, no_template),
                    Contains("prefs.jsonl:1:") && Contains("chat template"));
}

TEST_CASE("a pre-tokenized file is read as before through the text reader", "[data]") {
  const auto file = read("{\"prompt_input_ids\": [1, 2], \"chosen_input_ids\": [3], \"rejected_input_ids\": [4]}\n");
  REQUIRE(file.pairs.size() == 1);
  CHECK(file.pairs[0].prompt == TokenIds{1, 2});
  CHECK(file.pairs[0].rejected == TokenIds{4});
}

TEST_CASE("ranked text rows: a prompt and K responses best first, standard or conversational", "[data]") {
  const auto standard = read(R"({"prompt": "Q:", "responses": [" a", " b", " c</s>", " d"]})");
  REQUIRE(standard.pairs.size() == 1);
  CHECK(standard.format == PreferenceFormat::StandardExplicit);
  CHECK(standard.pairs[0].prompt == ids_of("Q:"));
  CHECK(standard.pairs[0].chosen == ids_of(" a</s>"));
  CHECK(standard.pairs[0].rejected == ids_of(" b</s>"));
  CHECK(standard.pairs[0].more_rejected == std::vector<TokenIds>{ids_of(" c</s>"), ids_of(" d</s>")});
  const auto chat = read(
      R"({"prompt": [{"role": "user", "content": "hi"}], "responses": [[{"role": "assistant", "content": "x"}], )"
      R"([{"role": "assistant", "content": "y"}], [{"role": "assistant", "content": "z"}]]})");
  REQUIRE(chat.pairs.size() == 1);
  CHECK(chat.format == PreferenceFormat::ConversationalExplicit);
  CHECK(chat.pairs[0].chosen == ids_of("x</s>"));
  CHECK(chat.pairs[0].rejected == ids_of("y</s>"));
  CHECK(chat.pairs[0].more_rejected == std::vector<TokenIds>{ids_of("z</s>")});
  // Pairs and rankings mix in one file of one format.
  const auto mixed = read("{\"prompt\": \"Q\", \"chosen\": \"1\", \"rejected\": \"2\"}\n"
                          "{\"prompt\": \"Q\", \"responses\": [\"1\", \"2\", \"3\"]}");
  REQUIRE(mixed.pairs.size() == 2);
  CHECK(mixed.pairs[0].more_rejected.empty());
  CHECK(mixed.pairs[1].more_rejected.size() == 1);
}

TEST_CASE("malformed ranked text rows are refused naming the file, line and field", "[data]") {
  CHECK_THROWS_WITH(read(R"({"responses": ["a", "b", "c"]})"), Contains("prefs.jsonl:1:") && Contains("explicit 'prompt'"));
  CHECK_THROWS_WITH(read(R"({"prompt": "Q", "responses": ["a"]})"), Contains("prefs.jsonl:1:") && Contains("at least 2"));
  CHECK_THROWS_WITH(read(R"({"prompt": "Q", "responses": ["a", "b"], "chosen": "a"})"),
                    Contains("prefs.jsonl:1:") && Contains("'chosen' next to 'responses'"));
  CHECK_THROWS_WITH(read(R"({"prompt": "Q", "responses": ["a", "", "c"]})"),
                    Contains("prefs.jsonl:1:") && Contains("'responses[1]' is empty"));
  CHECK_THROWS_WITH(read(R"({"prompt": "Q", "responses": ["a", [{"role": "user", "content": "b"}]]})"),
                    Contains("prefs.jsonl:1:") && Contains("'responses[1]'"));
  CHECK_THROWS_WITH(read(R"({"prompt": "Qa", "responses": ["x", "y", "bz"]})", BoundaryMismatch::Error),
                    Contains("prefs.jsonl:1:") && Contains("prompt+responses[2]"));
}
