// The config contract: one option table, YAML then --set, unknown keys refused with a suggestion.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>


#include "catch2_api.h"

#include "dpo/config/config.h"
#include "dpo/config/trl_names.h"
#include "dpo/config/text_distance.h"
#include "dpo/error.h"
#include "scratch_dir.h"

namespace {

const std::string kMinimal = "run:\n  output_dir: out\nmodel:\n  policy: models/sft\n";

dpo::Config parse(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return dpo::config_from_yaml_text(yaml, overrides, "run.yaml");
}

}  // namespace

TEST_CASE("the option table holds exactly the SPEC keys", "[config]") {
  const std::set<std::string> spec_keys = {
      "run.output_dir", "run.seed", "run.log_every", "run.tensorboard", "model.policy", "model.reference", "model.dtype",
      "model.tokenizer",
      "model.device", "data.train", "data.eval", "data.max_length", "data.max_prompt_length", "data.truncation",
      "data.boundary_mismatch", "data.response_budget",
      "loss.type", "loss.beta", "loss.label_smoothing", "loss.discopop_tau",
      "loss.weights", "loss.rpo_alpha", "loss.f_divergence", "loss.f_alpha", "loss.use_weighting", "loss.ld_alpha",
      "loss.simpo_gamma", "loss.cpo_alpha", "reference.logps_path", "reference.batch_size",
      "train.global_batch_size", "train.gradient_checkpointing", "train.prefix_sharing",
      "train.micro_batch_size", "train.epochs", "train.max_steps", "train.optimizer", "train.lr",
      "train.warmup_steps", "train.weight_decay", "train.warmup_ratio", "train.min_lr_rate", "train.adam_beta1",
      "train.adam_beta2", "train.adam_epsilon", "train.max_grad_norm", "train.shuffle", "train.save_every",
      "train.eval_every", "train.lr_scheduler", "train.keep_checkpoints", "train.skip_nonfinite", "train.precision", "train.save_dtype", "dist.backend",
      "dist.bucket_mb"};
  std::set<std::string> table_keys;
  for (const dpo::OptionSpec& spec : dpo::option_table()) {
    CHECK_FALSE(spec.help.empty());
    table_keys.insert(spec.key);
  }
  CHECK(table_keys == spec_keys);
  CHECK(dpo::option_table().size() == spec_keys.size());
}

TEST_CASE("defaults are filled in and auto values resolved", "[config]") {
  const dpo::Config c = parse(kMinimal);
  CHECK(c.run.output_dir == "out");
  CHECK(c.run.seed == 0);
  CHECK(c.run.log_every == 1);
  CHECK(c.run.tensorboard == true);
  CHECK(c.model.policy == "models/sft");
  CHECK(c.model.reference == "models/sft");  // reference defaults to the policy
  CHECK((c.model.device == "cpu" || c.model.device == "cuda"));
  CHECK(c.model.dtype == "float32");  // float32 weights on every device: train.precision picks the matmuls'
  CHECK(c.train.precision == (c.model.device == "cpu" ? "fp32" : "bf16-mixed"));
  CHECK(c.train.save_dtype == "auto");  // the dtype model.policy is stored in, read at save time
  CHECK(c.data.train.empty());
  CHECK(c.data.eval.empty());
  CHECK(c.data.max_length == 512);
  CHECK(c.data.max_prompt_length == 256);
  CHECK(c.data.truncation == "keep_end");
  CHECK(c.loss.type == "sigmoid");
  CHECK(c.loss.beta == 0.1);
  CHECK(c.loss.label_smoothing == 0.0);
  CHECK(c.reference.logps_path.empty());
  CHECK(c.train.global_batch_size == 64);
  CHECK(c.train.micro_batch_size == 8);
  CHECK(c.train.epochs == 1);
  CHECK(c.train.max_steps == -1);
  CHECK(c.train.optimizer == "rmsprop");
  CHECK(c.train.lr == 1e-6);
  CHECK(c.train.warmup_steps == 150);
  CHECK(c.train.weight_decay == 0.0);
  CHECK(c.train.max_grad_norm == 10.0);
  CHECK(c.train.shuffle == true);
  CHECK(c.train.save_every == 0);
  CHECK(c.train.eval_every == 0);
  CHECK(c.train.lr_scheduler == "constant");
  CHECK(c.train.keep_checkpoints == 2);
  CHECK(c.train.skip_nonfinite == false);
  CHECK(c.train.gradient_checkpointing == false);
  CHECK(c.dist.backend == "auto");
  CHECK(c.dist.bucket_mb == 25);
}

TEST_CASE("an explicit reference and dtype are kept", "[config]") {
  const dpo::Config c = parse(kMinimal + "  reference: models/ref\n  dtype: bfloat16\n  device: cpu\n");
  CHECK(c.model.reference == "models/ref");
  CHECK(c.model.dtype == "bfloat16");
  CHECK(c.model.device == "cpu");
}

TEST_CASE("each --set overrides the file, later ones overriding earlier", "[config]") {
  const std::string yaml = kMinimal + "train:\n  lr: 5e-7\n  epochs: 3\n  shuffle: false\nloss:\n  beta: 0.5\n";
  const dpo::Config file_only = parse(yaml);
  CHECK(file_only.train.lr == 5e-7);
  CHECK(file_only.train.epochs == 3);
  CHECK(file_only.train.shuffle == false);
  CHECK(file_only.loss.beta == 0.5);
  const dpo::Config c = parse(yaml, {"train.lr=2e-6", "train.epochs=4", "train.lr=3e-6", "loss.type=ipo"});
  CHECK(c.train.lr == 3e-6);
  CHECK(c.train.epochs == 4);
  CHECK(c.train.shuffle == false);  // untouched by --set
  CHECK(c.loss.beta == 0.5);
  CHECK(c.loss.type == "ipo");
  // --set alone can supply required keys.
  const dpo::Config from_set = parse("", {"run.output_dir=o", "model.policy=p"});
  CHECK(from_set.model.reference == "p");
}

TEST_CASE("an unknown key is refused, suggesting the closest one", "[config]") {
  CHECK_THROWS_WITH(parse(kMinimal + "train:\n  lrr: 1e-6\n"),
                    Catch::Contains("run.yaml:6") && Catch::Contains("'train.lrr'") &&
                        Catch::Contains("did you mean 'train.lr'?"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.lrr=1e-6"}),
                    Catch::Contains("--set") && Catch::Contains("did you mean 'train.lr'?"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.warmup=10"}), Catch::Contains("did you mean 'train.warmup_steps'?"));
  CHECK_THROWS_WITH(parse(kMinimal, {"model.lr=1"}), Catch::Contains("did you mean 'train.lr'?"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.zzzzzzzz=1"}), !Catch::Contains("did you mean"));
}

TEST_CASE("an unknown section is refused, suggesting the closest one", "[config]") {
  CHECK_THROWS_WITH(parse(kMinimal + "trian:\n  lr: 1e-6\n"),
                    Catch::Contains("unknown section 'trian'") && Catch::Contains("did you mean 'train'?"));
  CHECK_THROWS_WITH(parse(kMinimal + "train: 3\n"), Catch::Contains("section 'train' must be a mapping"));
}

TEST_CASE("a mistyped value is refused, naming the key and the value", "[config]") {
  CHECK_THROWS_WITH(parse(kMinimal + "train:\n  lr: abc\n"),
                    Catch::Contains("run.yaml:6") && Catch::Contains("train.lr: expected a float, got 'abc'"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.epochs=1.5"}),
                    Catch::Contains("--set") && Catch::Contains("train.epochs: expected an integer, got '1.5'"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.shuffle=yes"}), Catch::Contains("train.shuffle: expected true or false"));
  CHECK_THROWS_WITH(parse(kMinimal + "train:\n  lr: [1, 2]\n"), Catch::Contains("train.lr"));
  CHECK(parse(kMinimal, {"train.epochs=2.0"}).train.epochs == 2);
}

TEST_CASE("a value outside the choices is refused, listing them", "[config]") {
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=sigmod"}),
                    Catch::Contains("loss.type") && Catch::Contains("'sigmod'") &&
                        Catch::Contains("sigmoid, ipo, ipo_sum, hinge, robust"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.optimizer=adam"}), Catch::Contains("rmsprop, adamw, sgd"));
}

TEST_CASE("every TRL loss type is accepted by name, with discopop's tau defaulting to TRL's", "[config]") {
  for (const char* type : {"sigmoid", "hinge", "ipo", "ipo_sum", "robust", "nca_pair", "sppo_hard", "apo_zero",
                           "apo_down", "discopop", "sigmoid_norm"})
    CHECK(parse(kMinimal, {std::string("loss.type=") + type}).loss.type == type);
  CHECK(parse(kMinimal).loss.discopop_tau == 0.05);
  CHECK(parse(kMinimal, {"loss.type=discopop", "loss.discopop_tau=0.2"}).loss.discopop_tau == 0.2);
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.discopop_tau=0"}), Catch::Contains("loss.discopop_tau"));
  CHECK(parse(kMinimal, {"loss.type=exo_pair", "loss.label_smoothing=1e-3"}).loss.label_smoothing == 1e-3);
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=exo_pair"}),
                    Catch::Contains("loss.label_smoothing") && Catch::Contains("exo_pair"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=sigmoid_nrom"}), Catch::Contains("did you mean 'sigmoid_norm'"));
}

TEST_CASE("a missing required key is refused, naming it", "[config]") {
  CHECK_THROWS_WITH(parse("model:\n  policy: p\n"),
                    Catch::Contains("run.yaml") && Catch::Contains("missing required key 'run.output_dir'"));
  CHECK_THROWS_WITH(parse("run:\n  output_dir: o\n"), Catch::Contains("'model.policy'"));
}

TEST_CASE("malformed --set and malformed YAML are refused with the place", "[config]") {
  CHECK_THROWS_WITH(parse(kMinimal, {"train.lr"}), Catch::Contains("--set 'train.lr'") && Catch::Contains("key=value"));
  CHECK_THROWS_WITH(parse(kMinimal + "train:\n  lr: [1e-6\n"), Catch::Contains("run.yaml:") && Catch::Contains("YAML"));
}

TEST_CASE("inconsistent or out-of-range values are refused, naming the key", "[config]") {
  CHECK_THROWS_WITH(parse(kMinimal, {"train.global_batch_size=60"}),
                    Catch::Contains("train.global_batch_size") && Catch::Contains("divisible") &&
                        Catch::Contains("train.micro_batch_size"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.micro_batch_size=0"}), Catch::Contains("train.micro_batch_size"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.beta=0"}), Catch::Contains("loss.beta"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.label_smoothing=0.5"}), Catch::Contains("loss.label_smoothing"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.lr=-1"}), Catch::Contains("train.lr"));
  CHECK_THROWS_WITH(parse(kMinimal, {"run.log_every=0"}), Catch::Contains("run.log_every"));
  CHECK_THROWS_WITH(parse(kMinimal, {"dist.bucket_mb=0"}), Catch::Contains("dist.bucket_mb"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.epochs=0"}), Catch::Contains("train.epochs"));
  CHECK_THROWS_WITH(parse(kMinimal, {"data.max_length=0"}), Catch::Contains("data.max_length"));
  CHECK_THROWS_WITH(parse(kMinimal, {"data.max_prompt_length=0"}), Catch::Contains("data.max_prompt_length"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.keep_checkpoints=-1"}), Catch::Contains("train.keep_checkpoints"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.lr_scheduler=exponential"}),
                    Catch::Contains("train.lr_scheduler") && Catch::Contains("constant, linear, cosine"));
}

TEST_CASE("the schedule, checkpoint retention and non-finite policy are read", "[config]") {
  const dpo::Config c =
      parse(kMinimal, {"train.lr_scheduler=cosine", "train.keep_checkpoints=0", "train.skip_nonfinite=true"});
  CHECK(c.train.lr_scheduler == "cosine");
  CHECK(c.train.keep_checkpoints == 0);
  CHECK(c.train.skip_nonfinite == true);
}

TEST_CASE("the dump lists every key and reads back to the same dump", "[config]") {
  const dpo::Config c = parse(kMinimal, {"train.lr=3.5e-7", "data.eval=\"with space.jsonl\"", "loss.beta=2",
                                         "train.shuffle=false", "data.train=123"});
  const std::string dump = dpo::dump_config(c);
  for (const dpo::OptionSpec& spec : dpo::option_table())
    CHECK_THAT(dump, Catch::Contains(spec.key.substr(spec.key.find('.') + 1) + ":"));
  const dpo::Config again = parse(dump);
  CHECK(dpo::dump_config(again) == dump);
  CHECK(again.train.lr == 3.5e-7);
  CHECK(again.loss.beta == 2.0);
  CHECK(again.data.eval == "with space.jsonl");
  CHECK(again.data.train == "123");
  CHECK(again.train.shuffle == false);
  CHECK_THAT(dump, Catch::Contains("beta: 2.0") && Catch::Contains("lr: 3.5e-07"));
}

TEST_CASE("string values with line breaks, tabs and quotes read back from the dump unchanged", "[config]") {
  // Found by fuzz/fuzz_config: a raw line break inside a quoted YAML string reads back as a space.
  const dpo::Config c = parse("run: {output_dir: \"out\\nrun\\t1\\r\\x01\\\"q\\\\\"}\nmodel: {policy: m}\n");
  REQUIRE(c.run.output_dir == "out\nrun\t1\r\x01\"q\\");
  const std::string dump = dpo::dump_config(c);
  const dpo::Config again = parse(dump);
  CHECK(again.run.output_dir == c.run.output_dir);
  CHECK(dpo::dump_config(again) == dump);
}

TEST_CASE("the resolved config is written into the output directory", "[config]") {
  namespace fs = std::filesystem;
  const ScratchDir scratch("config");
  const fs::path dir = scratch.path / "run";
  const dpo::Config c = parse("", {"run.output_dir=" + dir.string(), "model.policy=p"});
  dpo::write_resolved_config(c, "train");
  dpo::write_resolved_config(c, "precompute-ref");
  CHECK(fs::exists(dir / "config.precompute-ref.yaml"));
  std::ifstream in(dir / "config.train.yaml");
  std::stringstream text;
  text << in.rdbuf();
  CHECK(text.str() == dpo::dump_config(c));
  // load_config reads it back from the file, and names the file in errors.
  CHECK(dpo::dump_config(dpo::load_config((dir / "config.train.yaml").string(), {})) == text.str());
  CHECK_THROWS_WITH(dpo::load_config((dir / "config.train.yaml").string(), {"train.lrr=1"}),
                    Catch::Contains("train.lrr"));
  CHECK_THROWS_WITH(dpo::load_config((dir / "missing.yaml").string(), {}), Catch::Contains("missing.yaml"));
  fs::remove_all(dir.parent_path());
}

TEST_CASE("the help lists every option with its default", "[config]") {
  const std::string help = dpo::options_help();
  CHECK_THAT(help, Catch::Contains("global_batch_size") && Catch::Contains("[64]") &&
                       Catch::Contains("(required)") && Catch::Contains("sigmoid | ipo"));
}

TEST_CASE("edit distance and closest match", "[config]") {
  CHECK(dpo::edit_distance("", "abc") == 3);
  CHECK(dpo::edit_distance("kitten", "sitting") == 3);
  CHECK(dpo::edit_distance("train", "train") == 0);
  CHECK(dpo::closest_match("--confg", {"--config", "--set", "--help"}) == "--config");
  CHECK(dpo::closest_match("banana", {"--config", "--set", "--help"}).empty());
}

TEST_CASE("warmup_ratio and warmup_steps together are refused, and the AdamW and schedule keys are checked", "[config]") {
  CHECK(parse(kMinimal, {"train.warmup_ratio=0.1"}).train.warmup_ratio == 0.1);
  // transformers 5's float warmup_steps is pointed to warmup_ratio.
  CHECK_THROWS_WITH(parse(kMinimal, {"train.warmup_steps=0.1"}),
                    Catch::Contains("expected an integer") && Catch::Contains("train.warmup_ratio: 0.1"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.warmup_ratio=0.1", "train.warmup_steps=10"}),
                    Catch::Contains("train.warmup_ratio") && Catch::Contains("train.warmup_steps"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.warmup_ratio=1.5"}), Catch::Contains("train.warmup_ratio"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.adam_beta2=1"}), Catch::Contains("train.adam_beta2"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.adam_epsilon=0"}), Catch::Contains("train.adam_epsilon"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.min_lr_rate=2"}), Catch::Contains("train.min_lr_rate"));
  CHECK(parse(kMinimal, {"train.lr_scheduler=cosine_with_min_lr"}).train.lr_scheduler == "cosine_with_min_lr");
}

TEST_CASE("loss.type and loss.weights take a YAML list or a comma list, each item checked", "[config]") {
  const std::string listed = std::string(kMinimal) + "loss:\n  type: [sigmoid, bco_pair, sft]\n  weights: [0.8, 0.2, 1.0]\n";
  const dpo::Config c = parse(listed);
  CHECK(c.loss.type == "sigmoid,bco_pair,sft");
  CHECK(c.loss.weights == "0.8,0.2,1.0");
  CHECK(parse(kMinimal, {"loss.type=sigmoid, sft", "loss.weights=1,0.5"}).loss.type == "sigmoid,sft");
  // The resolved config reads back as the same list.
  CHECK(parse(dpo::dump_config(c)).loss.type == c.loss.type);
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=sigmoid,bco"}),
                    Catch::Contains("loss.type") && Catch::Contains("'bco'") && Catch::Contains("bco_pair"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=sigmoid,sft", "loss.weights=1"}),
                    Catch::Contains("loss.weights") && Catch::Contains("1 weights for the 2"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=sigmoid,sft", "loss.weights=1,x"}), Catch::Contains("'x' is not a number"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=sigmoid,sigmoid"}), Catch::Contains("lists 'sigmoid' twice"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=aot", "loss.use_weighting=true"}), Catch::Contains("loss.use_weighting"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.ld_alpha=1.5"}), Catch::Contains("loss.ld_alpha"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.type=sigmoid,exo_pair"}), Catch::Contains("exo_pair"));
  CHECK_THROWS_WITH(parse(kMinimal, {"loss.f_divergence=kl"}), Catch::Contains("loss.f_divergence"));
  CHECK_THROWS_WITH(parse(std::string(kMinimal) + "loss:\n  beta: [0.1]\n"), Catch::Contains("expected a single float"));
}

TEST_CASE("TRL's field names are pointed to their dpo keys, flat or in a section", "[config]") {
  CHECK_THROWS_WITH(parse(kMinimal + "train:\n  save_steps: 100\n"),
                    Catch::Contains("'train.save_steps'") && Catch::Contains("TRL's `save_steps` is `train.save_every` here"));
  CHECK_THROWS_WITH(parse(kMinimal, {"train.eval_steps=10"}), Catch::Contains("`train.eval_every`"));
  CHECK_THROWS_WITH(parse(kMinimal + "beta: 0.1\n"),
                    Catch::Contains("unknown section 'beta'") && Catch::Contains("`loss.beta`") && Catch::Contains("nested"));
  CHECK_THROWS_WITH(parse(kMinimal + "train:\n  learning_rate: 1e-6\n"), Catch::Contains("`train.lr`"));
  // Every TRL name points at a key of the option table (or says what to do instead).
  std::set<std::string> keys;
  for (const dpo::OptionSpec& spec : dpo::option_table()) keys.insert(spec.key);
  for (const dpo::TrlName& n : dpo::trl_names()) {
    const std::string target = n.dpo;
    const std::string key = target.substr(0, target.find(':'));
    CAPTURE(n.trl);
    CHECK((keys.count(key) == 1 || target.find("dpo ") == 0));
  }
}

TEST_CASE("every problem of a config is reported at once, one per line", "[config]") {
  CHECK_THROWS_WITH(parse(kMinimal, {"train.lr=-1", "loss.beta=0", "train.epochs=x"}),
                    Catch::Contains("3 config problems") && Catch::Contains("train.lr must be non-negative") &&
                        Catch::Contains("loss.beta must be a positive number") &&
                        Catch::Contains("train.epochs: expected an integer"));
  // One problem keeps its one-line message.
  CHECK_THROWS_WITH(parse(kMinimal, {"train.lr=-1"}), Catch::StartsWith("--set: train.lr must be non-negative"));
  // A zero micro-batch is reported, not divided by.
  CHECK_THROWS_WITH(parse(kMinimal, {"train.micro_batch_size=0"}), Catch::Contains("train.micro_batch_size"));
}
