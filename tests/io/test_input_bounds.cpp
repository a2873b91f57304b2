// Hostile input at the function level: JSON nesting and duplicate keys, absurd sizes in
// config.json and the run config, batch plans that cannot be, and the JSONL line reader's limits.
// The end-to-end battery against the dpo binary is tests/robustness/inputs.sh.
#include <cstdint>
#include <fstream>
#include <limits>
#include <string>

#include "catch2_api.h"

#include "dpo/config/config.h"
#include "dpo/data/batch_plan.h"
#include "dpo/data/preference_data.h"
#include "dpo/error.h"
#include "dpo/io/json_input.h"
#include "dpo/model/model.h"
#include "scratch_dir.h"

namespace {

using Catch::Contains;

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

nlohmann::json llama_config() { return dpo::default_hf_config(dpo::Architecture::Llama); }

dpo::Config config_with(const std::vector<std::string>& overrides) {
  return dpo::config_from_yaml_text("run: {output_dir: out}\nmodel: {policy: m}\n", overrides, "run.yaml");
}

std::string write_file(const ScratchDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = (dir.path / name).string();
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

const std::string kLine = R"({"prompt_input_ids": [1], "chosen_input_ids": [2], "rejected_input_ids": [3]})";

}  // namespace

TEST_CASE("JSON up to the depth limit parses, deeper JSON is refused naming the source", "[input]") {
  CHECK(dpo::parse_json(nested(dpo::kMaxJsonDepth), "ok.json").is_array());
  REQUIRE_THROWS_WITH(dpo::parse_json(nested(dpo::kMaxJsonDepth + 1), "deep.json"),
                      Contains("deep.json: JSON nested deeper than 128 levels"));
  // A million levels: refused as it is read, not after building (and later overflowing the
  // stack in a recursive copy, dump or destructor).
  REQUIRE_THROWS_WITH(dpo::parse_json("{\"a\": " + nested(1000000) + "}", "f.jsonl:7"),
                      Contains("f.jsonl:7: JSON nested deeper"));
}

TEST_CASE("a key given twice in one JSON object is refused, the same key in two objects is not", "[input]") {
  REQUIRE_THROWS_WITH(dpo::parse_json(R"({"a": 1, "b": 2, "a": 3})", "dup.json"),
                      Contains("dup.json: JSON object has the key 'a' twice"));
  REQUIRE_THROWS_WITH(dpo::parse_json(R"({"x": {"w": [1, {"k": 1, "k": 2}]}})", "nested.json"),
                      Contains("key 'k' twice"));
  const auto ok = dpo::parse_json(R"({"x": {"k": 1}, "y": {"k": 2}, "k": [{"k": 3}]})", "ok.json");
  CHECK(ok["y"]["k"] == 2);
}

TEST_CASE("malformed JSON is one line naming the source and the place", "[input]") {
  REQUIRE_THROWS_WITH(dpo::parse_json("{\"a\": [1, 2", "cut.jsonl:3"), Contains("cut.jsonl:3: malformed JSON at column"));
  REQUIRE_THROWS_WITH(dpo::parse_json("{\n\"a\":\n}", "config.json"), Contains("config.json: malformed JSON at line 3"));
  // nlohmann reports a number out of double's range as out_of_range, not parse_error.
  REQUIRE_THROWS_WITH(dpo::parse_json("[1e400]", "big.json"), Contains("big.json: malformed JSON: number overflow"));
  REQUIRE_THROWS_WITH(dpo::parse_json("[\"\xff\xfe\"]", "utf8.json"), Contains("utf8.json: malformed JSON"));
  try {
    dpo::parse_json("[\"" + std::string(10000, 'x') + "\n", "long.json");
    FAIL("accepted");
  } catch (const dpo::Error& e) {
    const std::string what = e.what();
    CHECK(what.find('\n') == std::string::npos);
    CHECK(what.size() < 400);
  }
  CHECK(dpo::json_excerpt(nlohmann::json(std::string(1000, 'y'))).size() < 100);
}

TEST_CASE("config.json sizes beyond any real model's are refused by key before anything is allocated", "[input]") {
  const auto refused = [](const char* key, const nlohmann::json& value, const std::string& expected) {
    nlohmann::json c = llama_config();
    c[key] = value;
    INFO(key << " = " << value.dump());
    REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(c, "m/config.json"),
                        Contains("m/config.json: '" + std::string(key) + "'") && Contains(expected));
  };
  refused("vocab_size", int64_t{1000000000000}, "is larger than any real model's");
  refused("vocab_size", 1e12, "must be a positive integer");
  refused("hidden_size", std::numeric_limits<uint64_t>::max(), "must be a positive integer");
  refused("hidden_size", 0, "must be a positive integer");
  refused("num_hidden_layers", -2, "must be a positive integer");
  refused("num_hidden_layers", "2", "must be a positive integer");
  refused("max_position_embeddings", int64_t{1} << 40, "is larger than any real model's");
  refused("intermediate_size", int64_t{1} << 40, "is larger than any real model's");
  refused("head_dim", int64_t{1} << 21, "is larger than any real model's");

  nlohmann::json gpt2 = dpo::default_hf_config(dpo::Architecture::GPT2);
  gpt2["n_positions"] = int64_t{1} << 40;
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(gpt2, "g/config.json"), Contains("'n_positions'"));

  // Each size within its bound, their product absurd.
  nlohmann::json huge = llama_config();
  huge["vocab_size"] = int64_t{1} << 24;
  huge["hidden_size"] = int64_t{1} << 20;
  huge["num_attention_heads"] = 1024;
  huge["num_key_value_heads"] = 1024;
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(huge, "h/config.json"),
                      Contains("h/config.json: the sizes describe a model of"));
}

TEST_CASE("the sizes of the largest real models are accepted", "[input]") {
  nlohmann::json c = llama_config();  // Llama 3.1 405B
  c.update({{"vocab_size", 128256}, {"hidden_size", 16384}, {"intermediate_size", 53248}, {"num_hidden_layers", 126},
            {"num_attention_heads", 128}, {"num_key_value_heads", 8}, {"max_position_embeddings", 131072}});
  const dpo::ModelSpec spec = dpo::model_spec_from_hf_config(c, "405b/config.json");
  CHECK(spec.num_layers == 126);
  c.update({{"vocab_size", 262144}, {"max_position_embeddings", 10485760}});  // Gemma's vocabulary, a 10M context
  CHECK_NOTHROW(dpo::model_spec_from_hf_config(c, "long/config.json"));
}

TEST_CASE("absurd run-config counts are refused naming the key", "[input]") {
  const std::string int64_max = std::to_string(std::numeric_limits<int64_t>::max());
  for (const char* key : {"train.global_batch_size", "train.micro_batch_size", "data.max_length", "train.epochs",
                          "train.max_steps", "train.warmup_steps", "train.save_every", "train.eval_every",
                          "run.log_every", "dist.bucket_mb", "reference.batch_size"}) {
    INFO(key);
    REQUIRE_THROWS_WITH(config_with({std::string(key) + "=" + int64_max}),
                        Contains(std::string(key) + " must be at most"));
  }
  REQUIRE_THROWS_WITH(config_with({"train.global_batch_size=1e30"}),
                      Contains("train.global_batch_size: expected an integer"));
  CHECK_NOTHROW(config_with({"train.global_batch_size=4096", "train.micro_batch_size=16", "train.max_steps=100000"}));
}

TEST_CASE("a global batch larger than the training data is refused naming both numbers", "[input]") {
  REQUIRE_THROWS_WITH(dpo::BatchPlan(64, 128, 8, 1, 0, true),
                      Contains("train.global_batch_size (128)") && Contains("64 pairs"));
  CHECK_NOTHROW(dpo::BatchPlan(64, 64, 8, 1, 0, true));
  // micro x world past int64 is refused, not wrapped into a divisor.
  const int64_t big = int64_t{1} << 62;
  REQUIRE_THROWS_AS(dpo::BatchPlan(big, big, big, 4, 0, true), dpo::Error);
}

TEST_CASE("JSONL: a BOM on line 1 and CRLF endings are read, a BOM later and an endless line are refused",
          "[input]") {
  ScratchDir dir("input-bounds");
  const auto pairs = dpo::read_preference_jsonl(write_file(dir, "bom.jsonl", "\xEF\xBB\xBF" + kLine + "\r\n" + kLine + "\r\n"));
  CHECK(pairs.size() == 2);
  const std::string later = write_file(dir, "later.jsonl", kLine + "\n\xEF\xBB\xBF" + kLine + "\n");
  REQUIRE_THROWS_WITH(dpo::read_preference_jsonl(later), Contains(later + ":2: a UTF-8 byte-order mark"));
  const std::string endless =
      write_file(dir, "endless.jsonl", kLine + "\n{\"prompt_input_ids\": [" + std::string((64u << 20) + 10, '1'));
  REQUIRE_THROWS_WITH(dpo::read_preference_jsonl(endless), Contains(endless + ":2: line is longer than 64 MiB"));
  // A last line without '\n' and lines longer than the reader's chunk are read whole.
  std::string wide_prompt = "[";
  for (int i = 0; i < 30000; ++i) wide_prompt += (i ? ", " : "") + std::to_string(i % 100);
  wide_prompt += "]";
  const std::string wide = write_file(dir, "wide.jsonl", R"({"prompt_input_ids": )" + wide_prompt +
                                                             R"(, "chosen_input_ids": [2], "rejected_input_ids": [3]})");
  const auto read = dpo::read_preference_jsonl(wide);
  REQUIRE(read.size() == 1);
  CHECK(read[0].prompt.size() == 30000u);
}
