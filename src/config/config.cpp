#include "dpo/config/config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <variant>

#include <fmt/format.h>
#include <torch/cuda.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include "dpo/config/text_distance.h"
#include "dpo/config/trl_names.h"
#include "dpo/error.h"
#include "dpo/io/durable_file.h"

namespace dpo {
namespace {

// Where a field of Config lives; the option's type is the pointer's type, checked against the table.
using FieldRef = std::variant<std::string*, int64_t*, double*, bool*>;
using FieldOf = FieldRef (*)(Config&);

// One row of the table: the documented option and the Config field it fills. This is the only
// place that names options, their defaults and their fields.
struct OptionRow {
  OptionSpec spec;
  FieldOf field;
};

#define DPO_FIELD(member) [](Config& c) -> FieldRef { return &c.member; }

const std::vector<OptionRow>& option_rows() {
  using T = OptionType;
  static const std::vector<OptionRow> rows = {
      {{"run.output_dir", T::String, "", "directory for metrics.jsonl, checkpoints and config.<command>.yaml", true, {}},
       DPO_FIELD(run.output_dir)},
      {{"run.seed", T::Int, "0", "seed for initialisation, shuffling and anything random", false, {}},
       DPO_FIELD(run.seed)},
      {{"run.log_every", T::Int, "1", "write metrics every this many optimizer steps", false, {}},
       DPO_FIELD(run.log_every)},
      {{"run.tensorboard", T::Bool, "true",
        "train and sft also write every logged metric and the resolved config as TensorBoard event files "
        "into <run.output_dir>/tensorboard", false, {}},
       DPO_FIELD(run.tensorboard)},

      {{"model.policy", T::String, "", "Hugging Face model directory of the policy (the SFT model)", true, {}},
       DPO_FIELD(model.policy)},
      {{"model.reference", T::String, "", "Hugging Face model directory of the reference model (empty: the policy)",
        false, {}},
       DPO_FIELD(model.reference)},
      {{"model.tokenizer", T::String, "",
        "directory tokenizer.json / tokenizer_config.json are read from and copied into every saved model from "
        "(empty: the policy)", false, {}},
       DPO_FIELD(model.tokenizer)},
      {{"model.dtype", T::String, "float32",
        "dtype the weights are stored and trained in (bfloat16/float16: pure low precision, no master weights)",
        false, {"float32", "bfloat16", "float16"}},
       DPO_FIELD(model.dtype)},
      {{"model.device", T::String, "auto", "device (auto: cuda when available)", false, {"auto", "cpu", "cuda"}},
       DPO_FIELD(model.device)},

      {{"data.train", T::String, "",
        "training preference data: JSONL (text in TRL's formats, or token ids; .gz too) or HDF5 (dpo prepare-data)",
        false, {}},
       DPO_FIELD(data.train)},
      {{"data.eval", T::String, "", "evaluation preference data (empty: none)", false, {}}, DPO_FIELD(data.eval)},
      {{"data.max_length", T::Int, "512", "maximum prompt + response tokens", false, {}},
       DPO_FIELD(data.max_length)},
      {{"data.max_prompt_length", T::Int, "256", "prompt tokens kept when prompt + response is too long", false,
        {}},
       DPO_FIELD(data.max_prompt_length)},
      {{"data.truncation", T::String, "keep_end", "which prompt tokens truncation keeps", false,
        {"keep_end", "keep_start"}},
       DPO_FIELD(data.truncation)},
      {{"data.response_budget", T::String, "remaining",
        "what responses are cut to when prompt + response is still too long after the prompt is cut: max_length - "
        "prompt length (remaining, TRL's) or max_length - max_prompt_length (paper: the DPO paper's code, TRL "
        "before 2026)",
        false, {"remaining", "paper"}},
       DPO_FIELD(data.response_budget)},
      {{"data.boundary_mismatch", T::String, "warn",
        "text data: a pair whose prompt+response tokens do not start with the prompt's tokens is counted and kept "
        "(warn), dropped (skip) or refused (error)",
        false, {"warn", "skip", "error"}},
       DPO_FIELD(data.boundary_mismatch)},

      {{"loss.type", T::String, "sigmoid",
        "preference loss, or a list of them summed with loss.weights (TRL's names and more; see docs/losses.md)",
        false,
        {"sigmoid", "ipo", "ipo_sum", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
         "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm", "simpo", "cpo", "unlikelihood",
         "plackett_luce"},
        /*list=*/true},
       DPO_FIELD(loss.type)},
      {{"loss.weights", T::String, "", "weight of each loss.type in the sum, in its order (empty: 1 each)", false, {},
        /*list=*/true},
       DPO_FIELD(loss.weights)},
      {{"loss.beta", T::Float, "0.1", "strength of the KL penalty towards the reference", false, {}},
       DPO_FIELD(loss.beta)},
      {{"loss.label_smoothing", T::Float, "0.0", "assumed probability that a preference label is flipped", false,
        {}},
       DPO_FIELD(loss.label_smoothing)},
      {{"loss.discopop_tau", T::Float, "0.05", "temperature of the discopop loss's blend of logistic and exponential",
        false, {}},
       DPO_FIELD(loss.discopop_tau)},
      {{"loss.rpo_alpha", T::Float, "0.0",
        "weight of an NLL term on the chosen response (token mean) added to the loss (RPO; 0: none)", false, {}},
       DPO_FIELD(loss.rpo_alpha)},
      {{"loss.f_divergence", T::String, "reverse_kl",
        "divergence from the reference whose derivative scores each log-ratio (f-DPO; reverse_kl: DPO)", false,
        {"reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"}},
       DPO_FIELD(loss.f_divergence)},
      {{"loss.f_alpha", T::Float, "0.5", "alpha of loss.f_divergence alpha_divergence", false, {}},
       DPO_FIELD(loss.f_alpha)},
      {{"loss.use_weighting", T::Bool, "false",
        "weigh each pair by its responses' length-normalised probabilities under the policy (WPO)", false, {}},
       DPO_FIELD(loss.use_weighting)},
      {{"loss.ld_alpha", T::Float, "1.0",
        "weight of response tokens past the shorter response's length in every log-prob (LD-DPO; 1: none)", false,
        {}},
       DPO_FIELD(loss.ld_alpha)},
      {{"loss.simpo_gamma", T::Float, "0.5", "target reward margin of the simpo loss", false, {}},
       DPO_FIELD(loss.simpo_gamma)},
      {{"loss.cpo_alpha", T::Float, "1.0", "weight of the cpo loss's NLL term on the chosen response", false, {}},
       DPO_FIELD(loss.cpo_alpha)},

      {{"reference.logps_path", T::String, "",
        "HDF5 reference log-probs from precompute-ref (empty: run the reference model live)", false, {}},
       DPO_FIELD(reference.logps_path)},
      {{"reference.batch_size", T::Int, "32", "pairs per reference forward in dpo precompute-ref", false, {}},
       DPO_FIELD(reference.batch_size)},

      {{"train.global_batch_size", T::Int, "64", "preference pairs per optimizer step, over all ranks", false, {}},
       DPO_FIELD(train.global_batch_size)},
      {{"train.micro_batch_size", T::Int, "8", "preference pairs per forward/backward on one rank", false, {}},
       DPO_FIELD(train.micro_batch_size)},
      {{"train.epochs", T::Int, "1", "passes over the training data", false, {}}, DPO_FIELD(train.epochs)},
      {{"train.max_steps", T::Int, "-1", "run exactly this many optimizer steps, overriding train.epochs as HF's max_steps does (-1: epochs decide)", false, {}},
       DPO_FIELD(train.max_steps)},
      {{"train.optimizer", T::String, "rmsprop", "optimizer", false, {"rmsprop", "adamw", "sgd"}},
       DPO_FIELD(train.optimizer)},
      {{"train.lr", T::Float, "1e-6", "peak learning rate", false, {}}, DPO_FIELD(train.lr)},
      {{"train.warmup_steps", T::Int, "150", "linear warm-up steps from 0 to train.lr", false, {}},
       DPO_FIELD(train.warmup_steps)},
      {{"train.warmup_ratio", T::Float, "0.0",
        "warm up for this share of the run's steps instead of train.warmup_steps (HF's warmup_ratio; 0: off)", false,
        {}},
       DPO_FIELD(train.warmup_ratio)},
      {{"train.weight_decay", T::Float, "0.0",
        "decoupled weight decay (adamw) or L2 penalty, on every parameter but biases and norm weights (as HF)", false,
        {}},
       DPO_FIELD(train.weight_decay)},
      {{"train.adam_beta1", T::Float, "0.9", "adamw's beta1", false, {}}, DPO_FIELD(train.adam_beta1)},
      {{"train.adam_beta2", T::Float, "0.999", "adamw's beta2", false, {}}, DPO_FIELD(train.adam_beta2)},
      {{"train.adam_epsilon", T::Float, "1e-8", "adamw's epsilon", false, {}}, DPO_FIELD(train.adam_epsilon)},
      {{"train.max_grad_norm", T::Float, "10.0", "clip gradients to this global L2 norm", false, {}},
       DPO_FIELD(train.max_grad_norm)},
      {{"train.shuffle", T::Bool, "true", "shuffle the training data every epoch", false, {}},
       DPO_FIELD(train.shuffle)},
      {{"train.save_every", T::Int, "0", "checkpoint every this many optimizer steps (0: only at the end)", false,
        {}},
       DPO_FIELD(train.save_every)},
      {{"train.eval_every", T::Int, "0", "evaluate on data.eval every this many steps (0: only at the end)", false,
        {}},
       DPO_FIELD(train.eval_every)},
      {{"train.lr_scheduler", T::String, "constant",
        "learning rate after the warm-up: constant (the DPO paper's), or transformers' linear or cosine decay to 0 "
        "by the last step, or cosine_with_min_lr (down to train.min_lr_rate x lr)",
        false, {"constant", "linear", "cosine", "cosine_with_min_lr"}},
       DPO_FIELD(train.lr_scheduler)},
      {{"train.min_lr_rate", T::Float, "0.0", "cosine_with_min_lr's final learning rate as a share of train.lr", false,
        {}},
       DPO_FIELD(train.min_lr_rate)},
      {{"train.keep_checkpoints", T::Int, "2", "newest complete checkpoints to keep (0: keep all)", false, {}},
       DPO_FIELD(train.keep_checkpoints)},
      {{"train.skip_nonfinite", T::Bool, "false",
        "skip the update of a step whose loss or grad norm is NaN/Inf (false: stop the run)", false, {}},
       DPO_FIELD(train.skip_nonfinite)},
      {{"train.precision", T::String, "auto",
        "matrix products in bf16/fp16 on float32 master weights (auto: bf16-mixed on cuda, fp32 on cpu, pure "
        "when model.dtype is not float32)",
        false, {"auto", "fp32", "bf16-mixed", "fp16-mixed", "pure"}},
       DPO_FIELD(train.precision)},
      {{"train.save_dtype", T::String, "auto",
        "dtype of the final model's weights (auto: the dtype model.policy's weights are stored in; checkpoints "
        "always keep the training weights' own for resume)",
        false, {"auto", "float32", "bfloat16", "float16"}},
       DPO_FIELD(train.save_dtype)},
      {{"train.gradient_checkpointing", T::Bool, "false",
        "recompute each decoder block's activations in backward instead of keeping them: less memory, up to 1/3 more "
        "compute per step",
        false, {}},
       DPO_FIELD(train.gradient_checkpointing)},
      {{"train.prefix_sharing", T::Bool, "true",
        "each pair's prompt computed once, its responses packed after it, several pairs per row with no padding "
        "between them (train, eval and precompute-ref); log-probs equal the padded rows' to float rounding",
        false, {}},
       DPO_FIELD(train.prefix_sharing)},

      {{"dist.backend", T::String, "auto", "gradient all-reduce (auto: nccl for cuda tensors, mpi otherwise)", false,
        {"auto", "nccl", "mpi"}},
       DPO_FIELD(dist.backend)},
      {{"dist.bucket_mb", T::Int, "25", "size of gradient all-reduce buckets in MiB", false, {}},
       DPO_FIELD(dist.bucket_mb)},
  };
  return rows;
}

#undef DPO_FIELD

const char* type_name(OptionType type) {
  switch (type) {
    case OptionType::String: return "string";
    case OptionType::Int: return "int";
    case OptionType::Float: return "float";
    case OptionType::Bool: return "bool";
  }
  return "?";
}

OptionType type_of(const FieldRef& field) {
  switch (field.index()) {
    case 0: return OptionType::String;
    case 1: return OptionType::Int;
    case 2: return OptionType::Float;
    default: return OptionType::Bool;
  }
}

std::string section_of(const std::string& key) { return key.substr(0, key.find('.')); }

std::vector<std::string> all_keys() {
  std::vector<std::string> keys;
  for (const OptionRow& row : option_rows()) keys.push_back(row.spec.key);
  return keys;
}

std::vector<std::string> all_sections() {
  std::vector<std::string> sections;
  for (const OptionRow& row : option_rows()) {
    const std::string section = section_of(row.spec.key);
    if (sections.empty() || sections.back() != section) sections.push_back(section);
  }
  return sections;
}

const OptionRow* find_row(const std::string& key) {
  for (const OptionRow& row : option_rows())
    if (row.spec.key == key) return &row;
  return nullptr;
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const std::string match = closest_match(word, candidates);
  return match.empty() ? std::string() : fmt::format(" (did you mean '{}'?)", match);
}

// For an unknown key or section: TRL's name for it when it is one (docs/trl.md), else the closest key.
std::string suggestion(const std::string& word, const std::vector<std::string>& candidates) {
  const std::string hint = trl_hint(word);
  return hint.empty() ? did_you_mean(word, candidates) : fmt::format(" ({})", hint);
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

// The text given for one key and where it came from ("run.yaml:12", "--set", "default").
struct GivenValue {
  std::string text;
  std::string source;
};
using GivenValues = std::map<std::string, GivenValue>;

void read_sections(const YAML::Node& root, const std::string& source, GivenValues& given);

void read_yaml(const std::string& yaml_text, const std::string& source, GivenValues& given) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::DeepRecursion& e) {
    // e.depth() counts yaml-cpp's recursive calls, not nesting levels: not worth printing.
    fail("{}:{}:{}: YAML nested deeper than the parser allows (no config nests past 2 levels)", source,
         e.mark.line + 1, e.mark.column + 1);
  } catch (const YAML::Exception& e) {
    fail("{}:{}:{}: YAML parse error: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  if (!root || root.IsNull()) return;  // an empty file: everything from defaults and --set
  const auto where = [&](const YAML::Node& node) { return fmt::format("{}:{}", source, node.Mark().line + 1); };
  if (!root.IsMap()) fail("{}: the config must be a mapping of sections (run:, model:, ...)", where(root));

  try {
    read_sections(root, source, given);
  } catch (const YAML::Exception& e) {
    fail("{}:{}: {}", source, e.mark.line + 1, e.msg);
  }
}

// A YAML list of scalars as the comma-separated text a list option holds.
std::string list_text(const YAML::Node& sequence, const std::string& where, const std::string& key) {
  std::vector<std::string> items;
  for (const auto& item : sequence) {
    if (!item.IsScalar()) fail("{}: {}: expected a list of single values", where, key);
    items.push_back(item.Scalar());
  }
  return join(items, ",");
}

void read_sections(const YAML::Node& root, const std::string& source, GivenValues& given) {
  const auto where = [&](const YAML::Node& node) { return fmt::format("{}:{}", source, node.Mark().line + 1); };
  const std::vector<std::string> sections = all_sections();
  std::vector<std::string> section_and_key_names = sections;
  for (const std::string& key : all_keys()) section_and_key_names.push_back(key);
  for (const auto& section_entry : root) {
    const std::string section = section_entry.first.as<std::string>();
    const YAML::Node& body = section_entry.second;
    if (std::find(sections.begin(), sections.end(), section) == sections.end())
      fail("{}: unknown section '{}'{}{}", where(section_entry.first), section,
           suggestion(section, section_and_key_names),
           trl_hint(section).empty() ? "" : "; dpo's config is nested: section, then key (docs/trl.md)");
    if (body.IsNull()) continue;  // "train:" with nothing under it
    if (!body.IsMap())
      fail("{}: section '{}' must be a mapping of key: value, got {}", where(section_entry.first), section,
           body.IsSequence() ? "a list" : fmt::format("'{}'", body.Scalar()));
    for (const auto& entry : body) {
      const std::string key = section + "." + entry.first.as<std::string>();
      const OptionRow* row = find_row(key);
      if (!row) fail("{}: unknown key '{}'{}", where(entry.first), key, suggestion(key, all_keys()));
      const YAML::Node& value = entry.second;
      if (row->spec.list && value.IsSequence()) {
        given[key] = GivenValue{list_text(value, where(entry.first), key), where(entry.first)};
        continue;
      }
      if (value.IsMap() || value.IsSequence())
        fail("{}: {}: expected a single {} value, got a {}", where(entry.first), key, type_name(row->spec.type),
             value.IsMap() ? "mapping" : "list");
      if (value.IsNull() && row->spec.type != OptionType::String)
        fail("{}: {}: expected {} {}, got nothing", where(entry.first), key,
             row->spec.type == OptionType::Int ? "an" : "a", type_name(row->spec.type));
      given[key] = GivenValue{value.IsNull() ? std::string() : value.Scalar(), where(entry.first)};
    }
  }
}

std::string trim(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const size_t end = text.find_last_not_of(" \t");
  return text.substr(begin, end - begin + 1);
}

void read_override(const std::string& item, GivenValues& given) {
  const size_t equals = item.find('=');
  if (equals == std::string::npos) fail("--set '{}': expected key=value (e.g. --set train.lr=1e-6)", item);
  const std::string key = trim(item.substr(0, equals));
  std::string value = trim(item.substr(equals + 1));
  if (!find_row(key)) {
    if (key.empty()) fail("--set '{}': the key before '=' is empty", item);
    fail("--set: unknown key '{}'{}", key, suggestion(key, all_keys()));
  }
  // A value quoted for YAML ('--set model.reference=""') means the text inside the quotes.
  if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
    value = value.substr(1, value.size() - 2);
  given[key] = GivenValue{value, "--set"};
}

bool parse_int(const std::string& text, int64_t& out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (errno == 0 && end == text.c_str() + text.size()) {
    out = value;
    return true;
  }
  // "1e3" or "64.0" name an integer too; "1.5" does not.
  errno = 0;
  const double as_double = std::strtod(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size()) return false;
  if (!std::isfinite(as_double) || std::floor(as_double) != as_double || std::fabs(as_double) > 9.0e18)
    return false;
  out = static_cast<int64_t>(as_double);
  return true;
}

bool parse_float(const std::string& text, double& out) {
  std::string normalized = text;
  // YAML spells infinity .inf; strtod spells it inf.
  for (const char* yaml_inf : {".inf", "+.inf", "-.inf", ".Inf", "+.Inf", "-.Inf"})
    if (text == yaml_inf) normalized = (text[0] == '-' ? "-inf" : "inf");
  if (normalized.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(normalized.c_str(), &end);
  if (errno == ERANGE && std::fabs(value) > 1.0) return false;
  if (end != normalized.c_str() + normalized.size() || std::isnan(value)) return false;
  out = value;
  return true;
}

bool parse_bool(const std::string& text, bool& out) {
  if (text == "true" || text == "True" || text == "TRUE") return out = true, true;
  if (text == "false" || text == "False" || text == "FALSE") return out = false, true;
  return false;
}

// A list option's items, trimmed, each checked against the choices, joined by commas.
std::string checked_list(const OptionSpec& spec, const GivenValue& given) {
  std::vector<std::string> items;
  std::stringstream in(given.text);
  for (std::string item; std::getline(in, item, ',');) {
    item = trim(item);
    if (item.empty()) fail("{}: {}: an empty item in the list '{}'", given.source, spec.key, given.text);
    if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), item) == spec.choices.end())
      fail("{}: {}: '{}' is not one of {}{}", given.source, spec.key, item, join(spec.choices, ", "),
           did_you_mean(item, spec.choices));
    items.push_back(item);
  }
  return join(items, ",");
}

// Sets the field of `row` from `given.text`, or fails naming the source and the key.
void apply(const OptionRow& row, const GivenValue& given, Config& config) {
  const OptionSpec& spec = row.spec;
  const FieldRef field = row.field(config);
  if (type_of(field) != spec.type)
    fail("internal: option {} is declared {} but its field is {}", spec.key, type_name(spec.type),
         type_name(type_of(field)));
  const std::string& text = given.text;
  if (spec.list) {
    *std::get<std::string*>(field) = checked_list(spec, given);
    return;
  }
  switch (spec.type) {
    case OptionType::String:
      if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end())
        fail("{}: {}: '{}' is not one of {}{}", given.source, spec.key, text, join(spec.choices, ", "),
             did_you_mean(text, spec.choices));
      *std::get<std::string*>(field) = text;
      break;
    case OptionType::Int:
      if (!parse_int(text, *std::get<int64_t*>(field))) {
        // transformers 5 folded warmup_ratio into warmup_steps (a float below 1 is a fraction).
        double fraction = 0;
        const bool ratio = spec.key == "train.warmup_steps" && parse_float(text, fraction) && fraction > 0 && fraction < 1;
        fail("{}: {}: expected an integer, got '{}'{}", given.source, spec.key, text,
             ratio ? fmt::format(" (a fraction of the run, as transformers 5's float warmup_steps, is "
                                 "train.warmup_ratio: {} here)", text)
                   : "");
      }
      break;
    case OptionType::Float:
      if (!parse_float(text, *std::get<double*>(field)))
        fail("{}: {}: expected a float, got '{}'", given.source, spec.key, text);
      break;
    case OptionType::Bool:
      if (!parse_bool(text, *std::get<bool*>(field)))
        fail("{}: {}: expected true or false, got '{}'", given.source, spec.key, text);
      break;
  }
}

std::vector<std::string> list_items(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  return items;
}

// The loss keys that depend on each other; `require(ok, key, what)` reports a problem.
template <typename Require>
void validate_loss(const LossOptions& loss, const Require& require) {
  const std::vector<std::string> types = list_items(loss.type);
  const auto has = [&](const char* name) { return std::find(types.begin(), types.end(), name) != types.end(); };
  // exo_pair's target distribution is (1 - eps, eps): log(eps) is -inf at 0 (TRL refuses it too).
  require(!has("exo_pair") || loss.label_smoothing > 0, "loss.label_smoothing",
          "must be greater than 0 for loss.type exo_pair (the EXO paper suggests 1e-3)");
  const std::vector<std::string> weights = list_items(loss.weights);
  require(weights.empty() || weights.size() == types.size(), "loss.weights",
          fmt::format("has {} weights for the {} loss types of loss.type ({})", weights.size(), types.size(), loss.type));
  for (const std::string& w : weights) {
    double value = 0;
    require(parse_float(w, value) && std::isfinite(value), "loss.weights", fmt::format("'{}' is not a number", w));
  }
  for (const std::string& t : types)
    require(std::count(types.begin(), types.end(), t) == 1, "loss.type", fmt::format("lists '{}' twice", t));
  // Plackett-Luce is a loss of K responses, not of pairs: none of the pair terms or weightings apply.
  if (has("plackett_luce")) {
    require(types.size() == 1, "loss.type", "plackett_luce ranks K responses and is not summed with pair losses");
    require(loss.rpo_alpha == 0, "loss.rpo_alpha", "is a pair term; plackett_luce does not take it");
    require(!loss.use_weighting, "loss.use_weighting", "WPO weighs pairs; plackett_luce does not take it");
    require(loss.ld_alpha == 1, "loss.ld_alpha", "LD-DPO weighs pairs' shared lengths; plackett_luce does not take it");
    require(loss.f_divergence == "reverse_kl", "loss.f_divergence",
            "plackett_luce's rewards are the reverse-KL log-ratios of the paper; other divergences are not defined for it");
  }
  require(!(loss.use_weighting && (has("aot") || has("aot_unpaired"))), "loss.use_weighting",
          "cannot weigh the pairs of aot or aot_unpaired, whose losses pair sorted ranks, not pairs (as TRL)");
  require(loss.ld_alpha >= 0 && loss.ld_alpha <= 1, "loss.ld_alpha", fmt::format("must be in [0, 1], got {}", loss.ld_alpha));
  require(loss.rpo_alpha >= 0 && std::isfinite(loss.rpo_alpha), "loss.rpo_alpha",
          fmt::format("must be a non-negative number, got {}", loss.rpo_alpha));
  require(loss.cpo_alpha >= 0 && std::isfinite(loss.cpo_alpha), "loss.cpo_alpha",
          fmt::format("must be a non-negative number, got {}", loss.cpo_alpha));
  require(std::isfinite(loss.simpo_gamma), "loss.simpo_gamma", fmt::format("must be a number, got {}", loss.simpo_gamma));
  require(loss.f_alpha > 0 && std::isfinite(loss.f_alpha), "loss.f_alpha",
          fmt::format("must be a positive number, got {}", loss.f_alpha));
}

// Checks that need more than one value's type; each message names the key and where it was set.
void validate(const Config& c, const GivenValues& given, std::vector<std::string>& problems) {
  // Pairs per step: far above any real batch, far below overflow of products with it.
  constexpr int64_t kMaxPairsPerStep = int64_t{1} << 24;
  const auto from = [&](const std::string& key) {
    const auto it = given.find(key);
    return it == given.end() ? std::string("default") : it->second.source;
  };
  const auto require = [&](bool ok, const std::string& key, const std::string& what) {
    if (!ok) problems.push_back(fmt::format("{}: {} {}", from(key), key, what));
  };
  require(c.run.log_every >= 1, "run.log_every", fmt::format("must be at least 1, got {}", c.run.log_every));
  require(c.run.seed >= 0, "run.seed", fmt::format("must be non-negative, got {}", c.run.seed));
  require(c.data.max_length > 0, "data.max_length", fmt::format("must be positive, got {}", c.data.max_length));
  require(c.data.max_prompt_length > 0, "data.max_prompt_length",
          fmt::format("must be positive, got {}", c.data.max_prompt_length));
  require(c.data.max_prompt_length < c.data.max_length, "data.max_prompt_length",
          fmt::format("({}) must be less than data.max_length ({}) to leave room for the responses",
                      c.data.max_prompt_length, c.data.max_length));
  require(c.loss.beta > 0 && std::isfinite(c.loss.beta), "loss.beta",
          fmt::format("must be a positive number, got {}", c.loss.beta));
  require(c.loss.label_smoothing >= 0 && c.loss.label_smoothing < 0.5, "loss.label_smoothing",
          fmt::format("must be in [0, 0.5), got {}", c.loss.label_smoothing));
  validate_loss(c.loss, require);
  require(c.loss.discopop_tau > 0 && std::isfinite(c.loss.discopop_tau), "loss.discopop_tau",
          fmt::format("must be a positive number, got {}", c.loss.discopop_tau));
  require(c.train.global_batch_size > 0, "train.global_batch_size",
          fmt::format("must be positive, got {}", c.train.global_batch_size));
  require(c.train.micro_batch_size > 0, "train.micro_batch_size",
          fmt::format("must be positive, got {}", c.train.micro_batch_size));
  require(c.train.global_batch_size <= kMaxPairsPerStep, "train.global_batch_size",
          fmt::format("must be at most {}, got {}", kMaxPairsPerStep, c.train.global_batch_size));
  require(c.train.micro_batch_size <= kMaxPairsPerStep, "train.micro_batch_size",
          fmt::format("must be at most {}, got {}", kMaxPairsPerStep, c.train.micro_batch_size));
  require(c.train.micro_batch_size <= 0 || c.train.global_batch_size % c.train.micro_batch_size == 0,
          "train.global_batch_size",
          fmt::format("({}) must be divisible by train.micro_batch_size ({})", c.train.global_batch_size,
                      c.train.micro_batch_size));
  require(c.train.epochs >= 1, "train.epochs", fmt::format("must be at least 1, got {}", c.train.epochs));
  require(c.train.max_steps >= -1, "train.max_steps",
          fmt::format("must be -1 (no limit) or a step count, got {}", c.train.max_steps));
  require(c.train.lr >= 0 && std::isfinite(c.train.lr), "train.lr",
          fmt::format("must be non-negative, got {}", c.train.lr));
  require(c.train.warmup_steps >= 0, "train.warmup_steps",
          fmt::format("must be non-negative, got {}", c.train.warmup_steps));
  require(c.train.warmup_ratio >= 0 && c.train.warmup_ratio < 1, "train.warmup_ratio",
          fmt::format("must be in [0, 1), got {}", c.train.warmup_ratio));
  require(c.train.warmup_ratio == 0 || !given.count("train.warmup_steps"), "train.warmup_ratio",
          "and train.warmup_steps are both set; set one (HF would silently prefer warmup_steps)");
  require(c.train.min_lr_rate >= 0 && c.train.min_lr_rate <= 1, "train.min_lr_rate",
          fmt::format("must be in [0, 1], got {}", c.train.min_lr_rate));
  require(c.train.adam_beta1 >= 0 && c.train.adam_beta1 < 1, "train.adam_beta1",
          fmt::format("must be in [0, 1), got {}", c.train.adam_beta1));
  require(c.train.adam_beta2 >= 0 && c.train.adam_beta2 < 1, "train.adam_beta2",
          fmt::format("must be in [0, 1), got {}", c.train.adam_beta2));
  require(c.train.adam_epsilon > 0, "train.adam_epsilon", fmt::format("must be positive, got {}", c.train.adam_epsilon));
  require(c.train.weight_decay >= 0, "train.weight_decay",
          fmt::format("must be non-negative, got {}", c.train.weight_decay));
  require(c.train.max_grad_norm > 0, "train.max_grad_norm",
          fmt::format("must be positive, got {}", c.train.max_grad_norm));
  require(c.train.save_every >= 0, "train.save_every",
          fmt::format("must be non-negative, got {}", c.train.save_every));
  require(c.train.eval_every >= 0, "train.eval_every",
          fmt::format("must be non-negative, got {}", c.train.eval_every));
  require(c.train.keep_checkpoints >= 0, "train.keep_checkpoints",
          fmt::format("must be non-negative (0 keeps all), got {}", c.train.keep_checkpoints));
  require(c.reference.batch_size > 0, "reference.batch_size",
          fmt::format("must be positive, got {}", c.reference.batch_size));
  require(c.dist.bucket_mb > 0, "dist.bucket_mb", fmt::format("must be positive, got {}", c.dist.bucket_mb));
  require(std::isfinite(c.train.weight_decay), "train.weight_decay", "must be finite");

  // Upper bounds far above any real run and far below where products of them (steps x batch,
  // MiB x 2^20, epochs x steps) overflow: an absurd value is refused here, naming its key, instead
  // of reaching the allocator or wrapping into a run that trains nothing.
  const auto at_most = [&](int64_t value, int64_t maximum, const char* key) {
    require(value <= maximum, key, fmt::format("must be at most {}, got {}", maximum, value));
  };
  constexpr int64_t kMaxTokens = int64_t{1} << 24;
  constexpr int64_t kMaxStepCount = int64_t{1} << 40;
  at_most(c.reference.batch_size, kMaxPairsPerStep, "reference.batch_size");
  at_most(c.data.max_length, kMaxTokens, "data.max_length");
  at_most(c.train.epochs, int64_t{1} << 20, "train.epochs");
  at_most(c.train.max_steps, kMaxStepCount, "train.max_steps");
  at_most(c.train.warmup_steps, kMaxStepCount, "train.warmup_steps");
  at_most(c.train.save_every, kMaxStepCount, "train.save_every");
  at_most(c.train.eval_every, kMaxStepCount, "train.eval_every");
  at_most(c.run.log_every, kMaxStepCount, "run.log_every");
  at_most(c.train.keep_checkpoints, kMaxStepCount, "train.keep_checkpoints");
  at_most(c.dist.bucket_mb, int64_t{1} << 16, "dist.bucket_mb");
}

// train.precision against model.dtype: mixed precision needs float32 master weights, and
// low-precision weights are only ever trained as they are ("pure").
void resolve_precision(Config& c, const std::function<std::string(const std::string&)>& from) {
  std::string& precision = c.train.precision;
  const bool float32_weights = c.model.dtype == "float32";
  if (precision == "auto") {
    precision = !float32_weights ? "pure" : c.model.device == "cuda" ? "bf16-mixed" : "fp32";
  } else if (precision == "pure" && float32_weights) {
    fail("{}: train.precision pure keeps everything in model.dtype, which is float32: that is fp32 (pure low "
         "precision needs model.dtype bfloat16 or float16)", from("train.precision"));
  } else if (precision != "pure" && !float32_weights) {
    fail("{}: train.precision {} keeps float32 master weights, but model.dtype is {}: set model.dtype float32, or "
         "train.precision pure to train the {} weights as they are", from("train.precision"), precision,
         c.model.dtype, c.model.dtype);
  }
}

// Replaces the "auto" and "same as" values by what they mean on this machine.
void resolve(Config& c, const GivenValues& given) {
  const auto from = [&](const std::string& key) {
    const auto it = given.find(key);
    return it == given.end() ? std::string("default") : it->second.source;
  };
  if (c.model.reference.empty()) c.model.reference = c.model.policy;
  if (c.model.device == "auto") {
    c.model.device = torch::cuda::is_available() ? "cuda" : "cpu";
  } else if (c.model.device == "cuda" && !torch::cuda::is_available()) {
    fail("{}: model.device is cuda but no CUDA device is available (use cpu or auto)", from("model.device"));
  }
  resolve_precision(c, from);
  if (c.dist.backend == "nccl" && c.model.device != "cuda")
    fail("{}: dist.backend nccl needs model.device cuda (got {})", from("dist.backend"), c.model.device);
}

// A YAML scalar for a string value: plain where that reads back as the same string, quoted otherwise.
std::string yaml_string(const std::string& text) {
  bool plain = !text.empty() && text.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                       "0123456789_./-+") == std::string::npos;
  if (plain && (text.front() == '-' || text.front() == '+' || text.front() == '.')) plain = false;
  double as_number = 0;
  if (plain && parse_float(text, as_number)) plain = false;
  std::string lower;
  for (char ch : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "null", "y", "n"})
    if (lower == word) plain = false;
  if (plain) return text;
  std::string quoted = "\"";
  for (char ch : text) {
    // Control characters escaped: a raw line break inside quotes would read back as a space.
    const auto byte = static_cast<unsigned char>(ch);
    if (byte < 0x20 || byte == 0x7f) {
      quoted += fmt::format("\\x{:02x}", byte);
      continue;
    }
    if (ch == '"' || ch == '\\') quoted += '\\';
    quoted += ch;
  }
  return quoted + "\"";
}

// A float that reads back exactly and looks like a float to other YAML readers ("10.0", not "10").
std::string yaml_float(double value) {
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".eE") == std::string::npos) text += ".0";
  return text;
}

std::string value_text(const OptionRow& row, Config& config) {
  const FieldRef field = row.field(config);
  switch (field.index()) {
    case 0: return yaml_string(*std::get<std::string*>(field));
    case 1: return std::to_string(*std::get<int64_t*>(field));
    case 2: return yaml_float(*std::get<double*>(field));
    default: return *std::get<bool*>(field) ? "true" : "false";
  }
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open config file", path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: cannot read config file", path);
  return text.str();
}

}  // namespace

const std::vector<OptionSpec>& option_table() {
  static const std::vector<OptionSpec> table = [] {
    std::vector<OptionSpec> specs;
    for (const OptionRow& row : option_rows()) specs.push_back(row.spec);
    return specs;
  }();
  return table;
}

Config config_from_yaml_text(const std::string& yaml_text, const std::vector<std::string>& overrides,
                             const std::string& source) {
  GivenValues given;
  read_yaml(yaml_text, source, given);
  for (const std::string& item : overrides) read_override(item, given);

  // Every problem of the config is reported at once, one per line, not only the first.
  std::vector<std::string> problems;
  Config config;
  for (const OptionRow& row : option_rows()) {
    const auto it = given.find(row.spec.key);
    const bool missing = it == given.end() || (row.spec.required && it->second.text.empty());
    if (row.spec.required && missing) {
      problems.push_back(fmt::format("{}: missing required key '{}' ({}); set it in the file or with --set {}=...",
                                     source, row.spec.key, row.spec.help, row.spec.key));
      continue;
    }
    try {
      apply(row, it == given.end() ? GivenValue{row.spec.default_value, "default"} : it->second, config);
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  // Values that did not parse keep their defaults, so the checks between values still run.
  validate(config, given, problems);
  if (problems.size() == 1) fail("{}", problems.front());
  if (!problems.empty()) {
    std::string lines;
    for (const std::string& p : problems) lines += "\n  " + p;
    fail("{}: {} config problems:{}", source, problems.size(), lines);
  }
  resolve(config, given);
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return config_from_yaml_text(read_text_file(path), overrides, path);
}

std::string dump_config(const Config& config) {
  Config copy = config;  // the field accessors hand out mutable pointers; read through a copy
  std::string out;
  std::string section;
  for (const OptionRow& row : option_rows()) {
    const std::string row_section = section_of(row.spec.key);
    if (row_section != section) {
      section = row_section;
      out += section + ":\n";
    }
    out += fmt::format("  {}: {}\n", row.spec.key.substr(section.size() + 1), value_text(row, copy));
  }
  return out;
}

void write_resolved_config(const Config& config, const std::string& command) {
  namespace fs = std::filesystem;
  const std::string& dir = config.run.output_dir;
  make_directories(dir);
  write_file_durably((fs::path(dir) / resolved_config_name(command)).string(), dump_config(config));
}

std::string resolved_config_name(const std::string& command) { return fmt::format("config.{}.yaml", command);
}

namespace {

// An option's default as both help formats show it: "required", "= model.policy" (the keys that
// default to the policy), "none", or the value.
std::string default_description(const OptionSpec& spec) {
  if (spec.required) return "required";
  if (!spec.default_value.empty()) return spec.default_value;
  return spec.key == "model.reference" || spec.key == "model.tokenizer" ? "= model.policy" : "none";
}

// Calls `row(spec, section_started)` for each option in table order.
template <typename Row>
void for_each_option(Row row) {
  std::string section;
  for (const OptionSpec& spec : option_table()) {
    const std::string spec_section = section_of(spec.key);
    const bool starts_section = spec_section != section;
    section = spec_section;
    row(spec, section, starts_section);
  }
}

}  // namespace

std::string options_markdown() {
  std::string out;
  // Markdown table cells: a '|' would end the cell.
  const auto cell = [](std::string text) {
    for (size_t at = 0; (at = text.find('|', at)) != std::string::npos; at += 2) text.replace(at, 1, "\\|");
    return text;
  };
  for_each_option([&](const OptionSpec& spec, const std::string& section, bool starts_section) {
    if (starts_section)
      out += fmt::format("\n### `{}`\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n", section);
    const std::string given = default_description(spec);
    const bool literal = !spec.required && !spec.default_value.empty();
    std::string meaning = spec.help;
    if (!spec.choices.empty()) meaning += fmt::format(" (one of: {})", join(spec.choices, ", "));
    out += fmt::format("| `{}` | {} | {} | {} |\n", spec.key, type_name(spec.type),
                       literal ? "`" + given + "`" : given, cell(meaning));
  });
  return out;
}

std::string options_help() {
  std::string out = "Config keys (YAML section -> key, or --set section.key=value):\n";
  for_each_option([&](const OptionSpec& spec, const std::string& section, bool starts_section) {
    if (starts_section) out += fmt::format("\n{}:\n", section);
    const std::string default_text = spec.required ? "(required)" : "[" + default_description(spec) + "]";
    out += fmt::format("  {:<20} {:<7} {:<16} {}", spec.key.substr(section.size() + 1), type_name(spec.type),
                       default_text, spec.help);
    if (!spec.choices.empty()) out += fmt::format(" (one of: {})", join(spec.choices, " | "));
    out += "\n";
  });
  return out;
}

}  // namespace dpo
