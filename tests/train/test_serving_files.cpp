// Models that leave ready to serve: every model directory a run writes (checkpoints, final/, the
// outputs of sft) carries byte-for-byte copies of the tokenizer files of model.tokenizer (or the
// policy) and the policy's generation_config.json, invents none that are missing, and
// `dpo inspect` (describe_model_dir) says which are there.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "catch2_api.h"

#include "dpo/config/config.h"
#include "dpo/model/model.h"
#include "dpo/train/trainer.h"
#include "scratch_dir.h"
#include "tiny_llama.h"
#include "toy_run.h"

namespace fs = std::filesystem;
using Catch::Contains;
using toy::ToyRun;

namespace {

std::string bytes_of(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  REQUIRE(out);
}

// Fake serving files, with bytes a text-mode copy or a JSON re-serialisation would change.
std::map<std::string, std::string> write_fake_serving_files(const fs::path& dir, const std::string& tag) {
  const std::map<std::string, std::string> files = {
      {"tokenizer.json", "{\"model\": {\"type\": \"BPE\"},  \"tag\": \"" + tag + "\"}\r\n"},
      {"tokenizer_config.json", std::string("{\"bos_token\": \"<s>\"}\n\0trailing", 30)},
      {"special_tokens_map.json", "{ \"eos_token\" : \"</s>\" }"},
      {"chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}\n"},
      {"generation_config.json", "{\"temperature\": 0.6, \"tag\": \"" + tag + "\"}"}};
  for (const auto& [name, bytes] : files) write_bytes(dir / name, bytes);
  write_bytes(dir / "README.md", "not a serving file\n");
  return files;
}

void check_copies(const fs::path& model_dir, const std::map<std::string, std::string>& expected) {
  INFO(model_dir.string());
  for (const auto& [name, bytes] : expected) {
    INFO(name);
    REQUIRE(fs::exists(model_dir / name));
    CHECK(bytes_of(model_dir / name) == bytes);
  }
}

}  // namespace

TEST_CASE("checkpoints and final/ carry byte-identical copies of the policy's serving files, and no others",
          "[training][serving]") {
  const ToyRun toy("serving-copies", 24);
  const auto files = write_fake_serving_files(toy.model_dir, "policy");
  const dpo::TrainSummary summary =
      dpo::run_training(toy.config("out", {"train.save_every=1"}), dpo::Objective::Dpo);
  REQUIRE(summary.steps == 3);
  const fs::path checkpoints = toy.output("out") / "checkpoints";
  for (const fs::path& dir : {checkpoints / "step-2", checkpoints / "step-3", fs::path(summary.final_model_dir)}) {
    check_copies(dir, files);
    // Missing files are not invented; files that are not serving files are not copied.
    CHECK_FALSE(fs::exists(dir / "tokenizer.model"));
    CHECK_FALSE(fs::exists(dir / "vocab.json"));
    CHECK_FALSE(fs::exists(dir / "README.md"));
  }
}

TEST_CASE("dpo sft outputs carry the policy's serving files too", "[training][serving]") {
  const ToyRun toy("serving-sft", 16);
  const auto files = write_fake_serving_files(toy.model_dir, "policy");
  const dpo::TrainSummary summary =
      dpo::run_training(toy.config("out", {"train.max_steps=1", "train.save_every=1"}), dpo::Objective::Sft);
  REQUIRE(summary.steps == 1);
  check_copies(toy.output("out") / "checkpoints" / "step-1", files);
  check_copies(summary.final_model_dir, files);
}

TEST_CASE("a policy without serving files trains, and its outputs hold none", "[training][serving]") {
  const ToyRun toy("serving-none", 16);
  const dpo::TrainSummary summary =
      dpo::run_training(toy.config("out", {"train.max_steps=1", "train.save_every=1"}), dpo::Objective::Dpo);
  REQUIRE(summary.steps == 1);
  for (const fs::path& dir : {toy.output("out") / "checkpoints" / "step-1", fs::path(summary.final_model_dir)}) {
    INFO(dir.string());
    for (const std::string& name : dpo::tokenizer_file_names()) CHECK_FALSE(fs::exists(dir / name));
    CHECK_FALSE(fs::exists(dir / "generation_config.json"));
  }
  CHECK(toy::parameters_of(summary.final_model_dir).size() > 0);
}

TEST_CASE("model.tokenizer names where the tokenizer files come from, and generation_config.json stays the policy's",
          "[training][serving]") {
  const ToyRun toy("serving-tokenizer-dir", 16);
  const auto policy_files = write_fake_serving_files(toy.model_dir, "policy");
  const fs::path tokenizer_dir = toy.dir.path / "tokenizer";
  fs::create_directories(tokenizer_dir);
  const std::string tokenizer_json = "{\"tag\": \"elsewhere\"}";
  write_bytes(tokenizer_dir / "tokenizer.json", tokenizer_json);
  write_bytes(tokenizer_dir / "generation_config.json", "{\"tag\": \"not this one\"}");

  const dpo::TrainSummary summary = dpo::run_training(
      toy.config("out", {"train.max_steps=1", "model.tokenizer=" + tokenizer_dir.string()}), dpo::Objective::Dpo);
  const fs::path final_dir = summary.final_model_dir;
  CHECK(bytes_of(final_dir / "tokenizer.json") == tokenizer_json);
  // The policy's other tokenizer files are not mixed in with those of model.tokenizer.
  CHECK_FALSE(fs::exists(final_dir / "tokenizer_config.json"));
  CHECK_FALSE(fs::exists(final_dir / "chat_template.jinja"));
  CHECK(bytes_of(final_dir / "generation_config.json") == policy_files.at("generation_config.json"));
}

TEST_CASE("a model.tokenizer that is not a directory is refused naming it, before any step", "[training][serving]") {
  const ToyRun toy("serving-tokenizer-missing", 16);
  const std::string missing = (toy.dir.path / "no-such-tokenizer").string();
  CHECK_THROWS_WITH(dpo::run_training(toy.config("out", {"train.max_steps=1", "model.tokenizer=" + missing}),
                                      dpo::Objective::Dpo),
                    Contains(missing) && Contains("model.tokenizer"));
  CHECK_FALSE(fs::exists(toy.output("out") / "final"));
}

TEST_CASE("inspect lists the serving files present and the main ones absent", "[model][serving]") {
  ScratchDir dir("serving-inspect");
  const fs::path source = dir.path / "source";
  fs::create_directories(source);
  write_bytes(source / "tokenizer.json", "{}");
  write_bytes(source / "tokenizer_config.json", "{}");
  write_bytes(source / "generation_config.json", "{}");
  const std::string saved = (dir.path / "saved").string();
  dpo::save_model(*tiny_llama(3), saved, at::ScalarType::Undefined, dpo::ServingSources{source.string(), ""});
  const std::string text = dpo::describe_model_dir(saved);
  CHECK_THAT(text, Contains("serving files: tokenizer.json, tokenizer_config.json, generation_config.json "
                            "(no special_tokens_map.json)"));
  CHECK_THAT(text, !Contains("cannot load a tokenizer"));
}

TEST_CASE("inspect warns when a model directory has neither tokenizer.json nor tokenizer.model", "[model][serving]") {
  ScratchDir dir("serving-inspect-bare");
  const std::string saved = (dir.path / "saved").string();
  dpo::save_model(*tiny_llama(3), saved);
  const std::string text = dpo::describe_model_dir(saved);
  CHECK_THAT(text, Contains("serving files: none (no tokenizer.json, tokenizer_config.json, "
                            "special_tokens_map.json, generation_config.json)"));
  CHECK_THAT(text, Contains("transformers and vLLM cannot load a tokenizer from this directory"));

  // A SentencePiece tokenizer.model alone is loadable: no warning.
  write_bytes(fs::path(saved) / "tokenizer.model", std::string("\x0a\x02", 2));
  CHECK_THAT(dpo::describe_model_dir(saved), !Contains("cannot load a tokenizer"));
}
