// Text preference files into datasets (README, "Text data"): the tokenizer and chat template of
// model.tokenizer (else model.policy), gzip-compressed JSONL, row shares for prepare-data, and the
// recorded tokenization that keeps files tokenized one way from being used with another. A tiny
// hand-made tokenizer.json stands in for a real one (tests/data/prepare_data_cli.py checks real
// tokenizers against Hugging Face's).
#include "catch2_api.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "dpo/data/text_tokenization.h"
#include "dpo/error.h"
#include "dpo/text/tokenizer.h"
#include "scratch_dir.h"

using Catch::Contains;
using dpo::TokenIds;
using nlohmann::json;

namespace {

// ids: <unk> 0, a 1, b 2, ' ' 3, c 4, d 5, ab 6 (merge), and the added tokens </s> 7, <|u|> 8, <|a|> 9.
json tiny_tokenizer() {
  json added = json::array();
  int id = 7;
  for (const char* token : {"</s>", "<|u|>", "<|a|>"})
    added.push_back({{"content", token}, {"id", id++}, {"special", true}, {"normalized", false}});
  json model = {{"type", "BPE"},
                {"vocab", {{"<unk>", 0}, {"a", 1}, {"b", 2}, {" ", 3}, {"c", 4}, {"d", 5}, {"ab", 6}}},
                {"merges", json::array({"a b"})},
                {"unk_token", "<unk>"}};
  return {{"model", model}, {"added_tokens", added}};
}

const char* kTemplate =
    "{% for m in messages %}{% if m.role == 'user' %}<|u|>{% else %}<|a|>{% endif %}{{ m.content }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|a|>{% endif %}";

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A tokenizer directory: tokenizer.json and a tokenizer_config.json with eos_token and the template.
std::string make_tokenizer_dir(const ScratchDir& scratch, const std::string& name, const std::string& eos = "</s>") {
  const auto dir = scratch.path / name;
  std::filesystem::create_directories(dir);
  write_text(dir / "tokenizer.json", tiny_tokenizer().dump());
  write_text(dir / "tokenizer_config.json", json{{"eos_token", eos}, {"chat_template", kTemplate}}.dump());
  return dir.string();
}

dpo::Config config_with_tokenizer(const std::string& dir, const std::string& on_mismatch = "warn") {
  dpo::Config config;
  config.model.policy = dir;
  config.data.boundary_mismatch = on_mismatch;
  config.data.max_length = 64;
  config.data.max_prompt_length = 32;
  return config;
}

void write_gzip(const std::filesystem::path& path, const std::string& text) {
  gzFile file = gzopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  REQUIRE(gzwrite(file, text.data(), static_cast<unsigned>(text.size())) == static_cast<int>(text.size()));
  REQUIRE(gzclose(file) == Z_OK);
}

std::vector<std::vector<TokenIds>> rows_of(const dpo::PreferenceDataset& data) {
  std::vector<std::vector<TokenIds>> out;
  for (size_t i = 0; i < data.size(); ++i) out.push_back({data[i].prompt, data[i].chosen, data[i].rejected});
  return out;
}

const std::string kStandard =
    "{\"prompt\": \"ab\", \"chosen\": \"c\", \"rejected\": \"d\"}\n"
    "{\"prompt\": \"a\", \"chosen\": \"bc\", \"rejected\": \"d</s>\"}\n";

}  // namespace

TEST_CASE("standard text is tokenized with model.policy's tokenizer, EOS appended, and the summary says how",
          "[data][text]") {
  ScratchDir scratch("text-data");
  const std::string dir = make_tokenizer_dir(scratch, "model");
  const auto file = scratch.path / "train.jsonl";
  write_text(file, kStandard);
  const auto data = dpo::load_preference_data("data.train", file.string(), config_with_tokenizer(dir), 0);
  REQUIRE(data.size() == 2);
  CHECK(data[0].prompt == TokenIds{6});
  CHECK(data[0].chosen == TokenIds{4, 7});
  CHECK(data[0].rejected == TokenIds{5, 7});
  // "a" + "bc</s>" merges across the boundary: the joint ids [ab, c, </s>] do not start with [a];
  // kept under warn, with the response being what follows the prompt's length, as in TRL.
  CHECK(data[1].prompt == TokenIds{1});
  CHECK(data[1].chosen == TokenIds{4, 7});
  CHECK(data[1].rejected == TokenIds{5, 7});  // already ended with </s>: nothing appended
  CHECK_THAT(data.summary_line(), Contains("text tokenized by " + dir + ": standard, explicit prompt; 1 boundary "
                                           "mismatch (kept); 2 pairs read"));
  CHECK(data.tokenization().tokenizer_fingerprint == dpo::Tokenizer::load(dir).fingerprint());
  CHECK(data.tokenization().eos_token == "</s>");
  CHECK(data.tokenization().chat_template_fingerprint.empty());

  const auto skipped = dpo::load_preference_data("data.train", file.string(), config_with_tokenizer(dir, "skip"), 0);
  CHECK(skipped.size() == 1);
  CHECK_THAT(skipped.summary_line(), Contains("1 boundary mismatch (skipped)"));
  CHECK(skipped.tokenization().key() != data.tokenization().key());
  CHECK_THROWS_WITH(dpo::load_preference_data("data.train", file.string(), config_with_tokenizer(dir, "error"), 0),
                    Contains(file.string() + ":2: the tokens of prompt+chosen do not start with the prompt's tokens"));
}

TEST_CASE("conversational text is rendered with model.tokenizer's chat template, which its fingerprint records",
          "[data][text]") {
  ScratchDir scratch("text-data");
  const std::string policy = make_tokenizer_dir(scratch, "model", "<|u|>");  // never used: model.tokenizer wins
  const std::string tokenizer = make_tokenizer_dir(scratch, "tokenizer");
  const auto file = scratch.path / "chat.jsonl";
  write_text(file,
             "{\"chosen\": [{\"role\": \"user\", \"content\": \"ab\"}, {\"role\": \"assistant\", \"content\": \"c\"}], "
             "\"rejected\": [{\"role\": \"user\", \"content\": \"ab\"}, {\"role\": \"assistant\", \"content\": \"d\"}]}\n");
  dpo::Config config = config_with_tokenizer(policy);
  config.model.tokenizer = tokenizer;
  const auto data = dpo::load_preference_data("data.train", file.string(), config, 0);
  REQUIRE(data.size() == 1);
  CHECK(data[0].prompt == TokenIds{8, 6, 7, 9});  // <|u|>ab</s><|a|>
  CHECK(data[0].chosen == TokenIds{4, 7});        // no EOS appended: the template closes the turn
  CHECK(data[0].rejected == TokenIds{5, 7});
  CHECK_THAT(data.summary_line(), Contains("text tokenized by " + tokenizer + ": conversational, implicit prompt"));
  CHECK_FALSE(data.tokenization().chat_template_fingerprint.empty());
  CHECK(data.tokenization().eos_token.empty());
}

TEST_CASE("a gzip-compressed JSONL file reads as the plain one, and a truncated one is refused naming it",
          "[data][text]") {
  ScratchDir scratch("text-data");
  const std::string dir = make_tokenizer_dir(scratch, "model");
  const dpo::Config config = config_with_tokenizer(dir);
  const auto plain = scratch.path / "train.jsonl", packed = scratch.path / "train.jsonl.gz";
  write_text(plain, kStandard);
  write_gzip(packed, kStandard);
  CHECK(rows_of(dpo::load_preference_data("data.train", packed.string(), config, 0)) ==
        rows_of(dpo::load_preference_data("data.train", plain.string(), config, 0)));

  const std::string ids = "{\"prompt_input_ids\": [1], \"chosen_input_ids\": [2], \"rejected_input_ids\": [3]}\n";
  const auto ids_packed = scratch.path / "ids.jsonl.gz";
  write_gzip(ids_packed, ids);
  const auto from_ids = dpo::load_preference_data("data.train", ids_packed.string(), config, 0);
  CHECK(rows_of(from_ids) == std::vector<std::vector<TokenIds>>{{{1}, {2}, {3}}});
  CHECK(from_ids.tokenization().empty());

  std::string bytes;
  {
    std::ifstream in(packed, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto cut = scratch.path / "cut.jsonl.gz";
  write_text(cut, bytes.substr(0, bytes.size() - 12));  // the deflate end and the gzip trailer gone
  CHECK_THROWS_WITH(dpo::load_preference_data("data.train", cut.string(), config, 0),
                    Contains(cut.string()) && Contains("corrupt or truncated gzip data"));
}

TEST_CASE("row shares split a file's rows between ranks and keep each pair's row", "[data][text]") {
  ScratchDir scratch("text-data");
  const std::string dir = make_tokenizer_dir(scratch, "model");
  const auto file = scratch.path / "train.jsonl";
  write_text(file, kStandard + "\n" + kStandard + kStandard);  // 6 rows around a blank line
  const dpo::Config config = config_with_tokenizer(dir);
  const auto whole = dpo::tokenize_preference_rows("data.train", file.string(), config, 0);
  const auto even = dpo::tokenize_preference_rows("data.train", file.string(), config, 0, {0, 2});
  const auto odd = dpo::tokenize_preference_rows("data.train", file.string(), config, 0, {1, 2});
  CHECK(whole.file.row_of_pair == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  CHECK(even.file.row_of_pair == std::vector<int64_t>{0, 2, 4});
  CHECK(odd.file.row_of_pair == std::vector<int64_t>{1, 3, 5});
  CHECK(even.file.boundary_mismatches + odd.file.boundary_mismatches == whole.file.boundary_mismatches);
  for (size_t k = 0; k < 3; ++k) {
    CHECK(even.file.pairs[k].chosen == whole.file.pairs[2 * k].chosen);
    CHECK(odd.file.pairs[k].prompt == whole.file.pairs[2 * k + 1].prompt);
  }
}

TEST_CASE("a prepared HDF5 file tokenized with another tokenizer is refused naming both", "[data][text]") {
  ScratchDir scratch("text-data");
  const std::string dir = make_tokenizer_dir(scratch, "model");
  const dpo::Config config = config_with_tokenizer(dir);
  const auto text = scratch.path / "train.jsonl";
  write_text(text, kStandard);
  const auto rows = dpo::tokenize_preference_rows("data.train", text.string(), config, 0);
  const auto prepared = scratch.path / "train.h5";
  dpo::write_preference_hdf5(prepared.string(), rows.file.pairs, rows.tokenization, text.string());
  const auto data = dpo::load_preference_data("data.train", prepared.string(), config, 0);
  CHECK(data.tokenization().key() == rows.tokenization.key());
  CHECK_THAT(data.summary_line(), Contains("prepared by dpo prepare-data with the tokenizer of " + dir));

  dpo::TokenizationId other = rows.tokenization;
  other.tokenizer = "/elsewhere/llama";
  other.tokenizer_fingerprint = "fnv1a64:0000000000000000";
  const auto foreign = scratch.path / "foreign.h5";
  dpo::write_preference_hdf5(foreign.string(), rows.file.pairs, other, text.string());
  CHECK_THROWS_WITH(dpo::load_preference_data("data.train", foreign.string(), config, 0),
                    Contains("data.train: " + foreign.string() + " was tokenized with the tokenizer of /elsewhere/llama "
                             "(fingerprint fnv1a64:0000000000000000), but model.tokenizer (= model.policy) " + dir));
}

TEST_CASE("text data without a tokenizer is refused naming the key, the file and the directory", "[data][text]") {
  ScratchDir scratch("text-data");
  const auto empty_model = scratch.path / "model";
  std::filesystem::create_directories(empty_model);
  const auto file = scratch.path / "train.jsonl";
  write_text(file, kStandard);
  CHECK_THROWS_WITH(dpo::load_preference_data("data.train", file.string(), config_with_tokenizer(empty_model.string()), 0),
                    Contains("data.train: " + file.string() + " holds text (standard, explicit prompt) and needs a "
                             "tokenizer, but model.tokenizer (= model.policy) " + empty_model.string() +
                             " has no tokenizer.json"));
}
