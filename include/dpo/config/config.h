// The run configuration: one option table (key, type, default, help) read from YAML and then
// from repeatable `--set key=value` overrides (precedence: default < file < --set), validated,
// and dumped resolved. Owns nothing about what the options do.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dpo {

struct RunOptions {
  std::string output_dir;  // required
  int64_t seed = 0;
  int64_t log_every = 1;
  bool tensorboard = true;  // TensorBoard event files under <output_dir>/tensorboard (train, sft)
};

struct ModelOptions {
  std::string policy;     // Hugging Face directory
  std::string reference;  // resolved to `policy` when not given
  std::string tokenizer;  // tokenizer files' directory; empty: the policy's
  // The dtype the weights are stored and trained in: float32 (the default; train.precision then
  // says what the matrix products run in) or, only by explicit choice, bfloat16 / float16.
  std::string dtype = "float32";
  std::string device;     // resolved: "cpu" | "cuda" (auto: cuda when available)
};

struct DataOptions {
  std::string train;
  std::string eval;  // empty = none
  int64_t max_length = 512;
  int64_t max_prompt_length = 256;
  std::string truncation = "keep_end";  // keep_end | keep_start
  std::string response_budget = "remaining";  // remaining | paper (data/preference_data.h: TruncationRule)
  std::string boundary_mismatch = "warn";  // text data: warn | skip | error (data/text_preferences.h)
};

struct LossOptions {
  std::string type = "sigmoid";  // a loss of docs/losses.md, or a comma list of them (loss_terms() reads it)
  std::string weights;           // comma list of one weight per type; empty: 1 each
  double beta = 0.1;
  double label_smoothing = 0.0;
  double discopop_tau = 0.05;  // DiscoPOP's temperature (TRL's default)
  double rpo_alpha = 0.0;      // weight of an added sft term (0: none)
  std::string f_divergence = "reverse_kl";
  double f_alpha = 0.5;        // alpha_divergence's alpha (TRL's f_alpha_divergence_coef default)
  bool use_weighting = false;  // WPO
  double ld_alpha = 1.0;       // LD-DPO (1: plain sums)
  double simpo_gamma = 0.5;
  double cpo_alpha = 1.0;
};

struct ReferenceOptions {
  std::string logps_path;  // empty = none (live reference model)
  int64_t batch_size = 32;  // pairs per reference forward in precompute-ref
};

struct TrainOptions {
  int64_t global_batch_size = 64;
  int64_t micro_batch_size = 8;
  int64_t epochs = 1;
  int64_t max_steps = -1;
  std::string optimizer = "rmsprop";
  double lr = 1e-6;
  int64_t warmup_steps = 150;
  double warmup_ratio = 0.0;  // > 0: warm up for ceil(ratio * total steps) instead of warmup_steps
  double min_lr_rate = 0.0;   // cosine_with_min_lr: the floor, as a share of lr
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 10.0;
  bool shuffle = true;
  int64_t save_every = 0;
  int64_t eval_every = 0;
  std::string lr_scheduler = "constant";  // constant | linear | cosine | cosine_with_min_lr (after the warm-up)
  int64_t keep_checkpoints = 2;           // newest complete checkpoints kept; 0 keeps all
  bool skip_nonfinite = false;            // false: a NaN/Inf loss or grad norm stops the run
  // resolved: fp32 | bf16-mixed | fp16-mixed (float32 weights) | pure (everything in model.dtype);
  // auto: bf16-mixed on cuda, fp32 on cpu, pure when model.dtype is not float32.
  std::string precision = "auto";
  std::string save_dtype = "auto";  // dtype of the final model's weights (auto: the weights' own)
  bool gradient_checkpointing = false;    // recompute each decoder block's activations in backward
  bool prefix_sharing = true;             // a pair's prompt once, its responses after it (data/collate.h)
};

struct DistOptions {
  std::string backend = "auto";  // auto | nccl | mpi
  int64_t bucket_mb = 25;
};

struct Config {
  RunOptions run;
  ModelOptions model;
  DataOptions data;
  LossOptions loss;
  ReferenceOptions reference;
  TrainOptions train;
  DistOptions dist;
  // Not a config key: the resume keys a resumed run may change (`--allow-changed KEY` of train/sft).
  std::vector<std::string> allow_changed;
};

enum class OptionType { String, Int, Float, Bool };

// One row of the option table. `choices`, when non-empty, lists the accepted string values.
struct OptionSpec {
  std::string key;  // "section.name"
  OptionType type;
  std::string default_value;  // as YAML text; "" with required=true means no default
  std::string help;
  bool required = false;
  std::vector<std::string> choices;
  // A list: a YAML sequence or a comma-separated string, kept as "a,b,c"; choices apply to each item.
  bool list = false;
};

const std::vector<OptionSpec>& option_table();

// Reads `path` (YAML), applies each "key=value" of `overrides`, fills defaults, validates, resolves
// "auto" values. Errors name the file and key; an unknown key suggests the closest valid one.
Config load_config(const std::string& path, const std::vector<std::string>& overrides);
// The same from YAML text (`source` names it in messages); used by tests.
Config config_from_yaml_text(const std::string& yaml_text, const std::vector<std::string>& overrides,
                             const std::string& source = "<config>");

// The full resolved config as YAML text (every key of the table, defaults filled in).
std::string dump_config(const Config& config);
// Writes dump_config() to `<run.output_dir>/config.<command>.yaml` (temporary name, then rename):
// each command its own file, so that precompute-ref or eval never overwrites a training run's.
void write_resolved_config(const Config& config, const std::string& command);
// "config.train.yaml" for "train".
std::string resolved_config_name(const std::string& command);

// Help text listing every option with type, default and help, grouped by section.
std::string options_help();
// The same table in Markdown, one table per section (docs/reference.md's generated part).
std::string options_markdown();

}  // namespace dpo
