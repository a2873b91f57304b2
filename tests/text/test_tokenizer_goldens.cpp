// Token ids and decoded text equal Hugging Face tokenizers' (goldens made by
// scripts/make_tokenizer_goldens.sh) for every real tokenizer and component variant over the
// corpus. The real tokenizer.json files are fetched by scripts/fetch_tokenizers.sh (run by
// scripts/test.sh) into build/tokenizers, or $DPO_TOKENIZER_CACHE.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "catch2_api.h"
#include <nlohmann/json.hpp>

#include "dpo/io/json_input.h"
#include "dpo/text/tokenizer.h"

namespace fs = std::filesystem;

namespace {

fs::path tokenizer_cache() {
  const char* env = std::getenv("DPO_TOKENIZER_CACHE");
  return env && *env ? fs::path(env) : fs::path(DPO_TOKENIZER_CACHE);
}

// The base file with the variant's components swapped in, as make_goldens.js does.
nlohmann::json patched(nlohmann::json base, const nlohmann::json& patch) {
  for (const char* key : {"normalizer", "pre_tokenizer", "post_processor", "decoder"})
    if (patch.contains(key)) base[key] = patch[key];
  if (patch.contains("model"))
    for (const auto& [key, value] : patch["model"].items()) base["model"][key] = value;
  if (patch.contains("added_tokens"))
    for (const auto& token : patch["added_tokens"]) base["added_tokens"].push_back(token);
  return base;
}

const nlohmann::json& base_file(const std::string& name) {
  static std::map<std::string, nlohmann::json> bases;
  auto it = bases.find(name);
  if (it != bases.end()) return it->second;
  auto path = tokenizer_cache() / name / "tokenizer.json";
  INFO("missing " << path << ": run scripts/fetch_tokenizers.sh");
  REQUIRE(fs::exists(path));
  return bases[name] = dpo::read_json_file(path.string());
}

std::vector<fs::path> golden_files() {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(fs::path(DPO_TOKENIZER_FIXTURES) / "goldens")) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("token ids and decoded text equal Hugging Face tokenizers' for every tokenizer and corpus line", "[text][tokenizer]") {
  auto files = golden_files();
  REQUIRE(files.size() >= 20);
  for (const auto& file : files) {
    auto golden = dpo::read_json_file(file.string());
    auto name = file.stem().string();
    auto tokenizer = dpo::Tokenizer::from_json(patched(base_file(golden["base"]), golden["patch"]), name, "");
    for (const auto& line : golden["lines"]) {
      auto text = line["text"].get<std::string>();
      INFO(name << ": " << nlohmann::json(text).dump());
      CHECK(tokenizer.encode(text, false) == line["ids"].get<std::vector<int64_t>>());
      auto with_special = line["ids_with_special"].get<std::vector<int64_t>>();
      CHECK(tokenizer.encode(text, true) == with_special);
      CHECK(tokenizer.decode(with_special, false) == line["decoded"].get<std::string>());
      CHECK(tokenizer.decode(with_special, true) == line["decoded_skip_special"].get<std::string>());
    }
  }
}
