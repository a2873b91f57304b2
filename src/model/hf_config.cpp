// Hugging Face config.json <-> ModelSpec, and the config options that change the math. Anything
// we do not implement that would change the math is refused, naming the key: a model that loads
// computes what transformers computes.
#include <set>

#include "dpo/error.h"
#include "dpo/io/json_input.h"
#include "dpo/model/layers.h"

namespace dpo {
namespace {

using nlohmann::json;

// Upper bounds on config.json sizes, far above any real model's (vocabularies ~256k, hidden sizes
// ~16k, ~130 layers, contexts ~10M) and far below what would overflow products of them: a corrupt
// or hostile size is refused naming its key, before anything is allocated.
constexpr int64_t kMaxVocabSize = int64_t{1} << 24;
constexpr int64_t kMaxWidth = int64_t{1} << 20;  // hidden, intermediate, head_dim, heads
constexpr int64_t kMaxLayers = int64_t{1} << 12;
constexpr int64_t kMaxPositions = int64_t{1} << 28;
constexpr double kMaxParameters = 1ull << 40;  // ~1.1e12

// Reads config.json keys with type checks; null counts as absent (transformers' convention for
// "use the default", e.g. n_inner: null).
class ConfigReader {
 public:
  ConfigReader(const json& config, const std::string& source) : config_(config), source_(source) {}

  bool has(const char* key) const { return config_.contains(key) && !config_[key].is_null(); }
  const json& json_of() const { return config_; }

  // A size: a positive integer of at most `maximum`.
  int64_t positive_int(const char* key, int64_t maximum) const {
    if (!has(key)) fail("{}: required key '{}' is missing", source_, key);
    const json& v = config_[key];
    // Parsed JSON keeps integers above INT64_MAX as unsigned; get<int64_t> would wrap them.
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) ||
        v.get<int64_t>() <= 0) {
      fail("{}: '{}' must be a positive integer, got {}", source_, key, json_excerpt(v));
    }
    if (v.get<int64_t>() > maximum) {
      fail("{}: '{}' = {} is larger than any real model's (at most {}); the file is damaged or not a model config",
           source_, key, v.get<int64_t>(), maximum);
    }
    return v.get<int64_t>();
  }
  int64_t positive_int(const char* key, int64_t fallback, int64_t maximum) const {
    return has(key) ? positive_int(key, maximum) : fallback;
  }
  double positive_number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = config_[key];
    if (!v.is_number() || !(v.get<double>() > 0)) {
      fail("{}: '{}' must be a positive number, got {}", source_, key, json_excerpt(v));
    }
    return v.get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!config_[key].is_boolean()) fail("{}: '{}' must be true or false", source_, key);
    return config_[key].get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!config_[key].is_string()) fail("{}: '{}' must be a string", source_, key);
    return config_[key].get<std::string>();
  }
  // An option we implement only at one value.
  void require_bool(const char* key, bool fallback, bool supported) const {
    if (boolean(key, fallback) != supported) {
      fail("{}: '{}' = {} is not supported (it changes the model's math)", source_, key,
           !supported);
    }
  }

 private:
  const json& config_;
  const std::string& source_;
};

std::string model_type_of(const json& config, const std::string& source) {
  if (config.contains("model_type") && config["model_type"].is_string()) {
    return config["model_type"].get<std::string>();
  }
  static const std::pair<const char*, const char*> kArchitectures[] = {
      {"GPT2LMHeadModel", "gpt2"},
      {"LlamaForCausalLM", "llama"},
      {"Qwen2ForCausalLM", "qwen2"},
      {"MistralForCausalLM", "mistral"}};
  if (config.contains("architectures") && config["architectures"].is_array()) {
    for (const auto& a : config["architectures"]) {
      for (const auto& [name, type] : kArchitectures) {
        if (a == name) return type;
      }
    }
  }
  fail("{}: 'model_type' is missing and 'architectures' names no supported model", source);
}

// Each size is bounded, but their products may still describe an absurd model; counted in double,
// so that the count itself cannot overflow.
void check_parameter_count(const ModelSpec& s, const std::string& source) {
  const double d = static_cast<double>(s.hidden_size);
  const double q = static_cast<double>(s.num_heads) * static_cast<double>(s.head_dim);
  const double kv = static_cast<double>(s.num_kv_heads) * static_cast<double>(s.head_dim);
  const double mlp = (s.arch == Architecture::GPT2 ? 2.0 : 3.0) * d * static_cast<double>(s.intermediate_size);
  const double embeddings = static_cast<double>(s.vocab_size) * d * (s.tie_word_embeddings ? 1.0 : 2.0) +
                            (s.arch == Architecture::GPT2 ? static_cast<double>(s.max_position_embeddings) * d : 0.0);
  const double parameters = embeddings + static_cast<double>(s.num_layers) * (2 * d * q + 2 * d * kv + mlp);
  if (parameters > kMaxParameters) {
    fail("{}: the sizes describe a model of {:.3g} parameters, more than the {:.3g} this build accepts (vocab {}, "
         "hidden {}, intermediate {}, layers {}, heads {}); the file is damaged or not a model config",
         source, parameters, kMaxParameters, s.vocab_size, s.hidden_size, s.intermediate_size, s.num_layers,
         s.num_heads);
  }
}

void check_heads(const ModelSpec& s, const std::string& source, const char* heads_key) {
  if (s.num_heads % s.num_kv_heads != 0) {
    fail("{}: '{}' ({}) is not a multiple of num_key_value_heads ({})", source, heads_key,
         s.num_heads, s.num_kv_heads);
  }
  if (s.head_dim % 2 != 0) fail("{}: head_dim {} must be even", source, s.head_dim);
}

ModelSpec gpt2_spec(const ConfigReader& r, const std::string& source) {
  ModelSpec s;
  s.arch = Architecture::GPT2;
  s.vocab_size = r.positive_int("vocab_size", kMaxVocabSize);
  s.hidden_size = r.positive_int("n_embd", kMaxWidth);
  s.num_layers = r.positive_int("n_layer", kMaxLayers);
  s.num_heads = r.positive_int("n_head", kMaxWidth);
  s.num_kv_heads = s.num_heads;
  if (s.hidden_size % s.num_heads != 0) {
    fail("{}: n_embd {} is not divisible by n_head {}", source, s.hidden_size, s.num_heads);
  }
  s.head_dim = s.hidden_size / s.num_heads;
  s.intermediate_size = r.positive_int("n_inner", 4 * s.hidden_size, kMaxWidth);
  s.max_position_embeddings = r.positive_int("n_positions", kMaxPositions);
  s.norm_eps = r.positive_number("layer_norm_epsilon", 1e-5);
  s.tie_word_embeddings = true;
  r.require_bool("tie_word_embeddings", true, true);
  r.require_bool("scale_attn_weights", true, true);
  r.require_bool("scale_attn_by_inverse_layer_idx", false, false);
  r.require_bool("reorder_and_upcast_attn", false, false);
  r.require_bool("add_cross_attention", false, false);
  return s;
}

// transformers 5 keeps every RoPE setting in `rope_parameters` (rope_theta and rope_type beside the
// scaling factors) where older versions wrote `rope_theta` and `rope_scaling`. Both spellings are
// read; where a file has both, they must agree, so that neither is silently ignored.
const json* rope_parameters_of(const json& config, const std::string& source) {
  if (!config.contains("rope_parameters") || config["rope_parameters"].is_null()) return nullptr;
  const json& rope = config["rope_parameters"];
  if (!rope.is_object()) fail("{}: 'rope_parameters' must be an object or null", source);
  for (const auto& item : rope.items()) {
    if (item.value().is_object()) {
      fail("{}: rope_parameters.{} is an object: RoPE parameters per layer type (Gemma 3, ModernBERT style) are not "
           "supported", source, item.key());
    }
  }
  if (rope.contains("partial_rotary_factor") &&
      !(rope["partial_rotary_factor"].is_number() && rope["partial_rotary_factor"].get<double>() == 1.0)) {
    fail("{}: rope_parameters.partial_rotary_factor = {} is not supported (only 1: RoPE on the whole head)", source,
         json_excerpt(rope["partial_rotary_factor"]));
  }
  return &rope;
}

double rope_theta_of(const ConfigReader& r, const std::string& source) {
  const double top = r.positive_number("rope_theta", 10000.0);
  const json* rope = rope_parameters_of(r.json_of(), source);
  if (rope == nullptr || !rope->contains("rope_theta")) return top;
  const ConfigReader inner(*rope, source);
  const double theta = inner.positive_number("rope_theta", top);
  if (r.has("rope_theta") && theta != top) {
    fail("{}: rope_theta {} and rope_parameters.rope_theta {} disagree", source, top, theta);
  }
  return theta;
}

ModelSpec llama_spec(const ConfigReader& r, const std::string& source,
                     const std::string& model_type) {
  ModelSpec s;
  s.arch = Architecture::Llama;
  s.vocab_size = r.positive_int("vocab_size", kMaxVocabSize);
  s.hidden_size = r.positive_int("hidden_size", kMaxWidth);
  s.intermediate_size = r.positive_int("intermediate_size", kMaxWidth);
  s.num_layers = r.positive_int("num_hidden_layers", kMaxLayers);
  s.num_heads = r.positive_int("num_attention_heads", kMaxWidth);
  s.num_kv_heads = r.positive_int("num_key_value_heads", s.num_heads, kMaxWidth);
  if (!r.has("head_dim") && s.hidden_size % s.num_heads != 0) {
    fail("{}: hidden_size {} is not divisible by num_attention_heads {} (and no head_dim)", source,
         s.hidden_size, s.num_heads);
  }
  s.head_dim = r.positive_int("head_dim", s.hidden_size / s.num_heads, kMaxWidth);
  check_heads(s, source, "num_attention_heads");
  s.max_position_embeddings = r.positive_int("max_position_embeddings", 2048, kMaxPositions);
  s.norm_eps = r.positive_number("rms_norm_eps", 1e-6);
  s.rope_theta = rope_theta_of(r, source);
  s.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") fail("{}: hidden_act '{}' is not supported (only silu)", source, act);
  if (model_type == "qwen2") {
    s.attention_bias = true;  // Qwen2 always has q/k/v biases (and none on o_proj)
    r.require_bool("use_sliding_window", false, false);
  } else if (model_type == "llama") {
    s.attention_bias = r.boolean("attention_bias", false);
    s.mlp_bias = r.boolean("mlp_bias", false);
  }
  return s;
}

}  // namespace

ModelSpec model_spec_from_hf_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) fail("{}: config is not a JSON object", source);
  const std::string model_type = model_type_of(config, source);
  const ConfigReader reader(config, source);
  ModelSpec spec;
  if (model_type == "gpt2") {
    spec = gpt2_spec(reader, source);
  } else if (model_type == "llama" || model_type == "qwen2" || model_type == "mistral") {
    spec = llama_spec(reader, source, model_type);
  } else {
    fail("{}: model_type '{}' is not supported (gpt2, llama, qwen2, mistral are)", source,
         model_type);
  }
  check_parameter_count(spec, source);
  spec.hf_config = config;
  spec.hf_config["model_type"] = model_type;
  // Validate the math-changing options now, so that a bad config fails at load, naming its source.
  if (spec.arch == Architecture::GPT2) {
    gpt2_activation(spec, source);
  } else {
    rope_inv_freq(spec, source);
    llama_sliding_window(spec, source);
  }
  return spec;
}

RopeScaling rope_scaling_of(const nlohmann::json& config, const std::string& source) {
  static const json kNone;
  if (!config.is_object()) return {&kNone, "rope_scaling"};
  const json* rope = rope_parameters_of(config, source);
  const bool has_scaling = config.contains("rope_scaling") && !config["rope_scaling"].is_null();
  if (rope == nullptr) return {has_scaling ? &config["rope_scaling"] : &kNone, "rope_scaling"};
  if (has_scaling && config["rope_scaling"].is_object()) {
    for (const auto& item : config["rope_scaling"].items()) {
      const std::string key = item.key() == "type" ? "rope_type" : item.key();
      if (!rope->contains(key) || (*rope)[key] != item.value()) {
        fail("{}: rope_scaling.{} = {} disagrees with rope_parameters.{} = {}", source, item.key(),
             json_excerpt(item.value()), key, rope->contains(key) ? json_excerpt((*rope)[key]) : "(absent)");
      }
    }
  }
  return {rope, "rope_parameters"};
}

nlohmann::json hf_config_from_model_spec(const ModelSpec& spec, const std::string& torch_dtype) {
  json c = spec.hf_config.is_object() ? spec.hf_config : json::object();
  // transformers since 4.56 writes `dtype` (and reads the older `torch_dtype`); the config's own
  // spelling is kept.
  c[c.contains("dtype") && !c.contains("torch_dtype") ? "dtype" : "torch_dtype"] = torch_dtype;
  c["vocab_size"] = spec.vocab_size;
  if (spec.arch == Architecture::GPT2) {
    c["model_type"] = "gpt2";
    c["architectures"] = {"GPT2LMHeadModel"};
    c["n_embd"] = spec.hidden_size;
    c["n_layer"] = spec.num_layers;
    c["n_head"] = spec.num_heads;
    // Keep transformers' "null = 4 x n_embd" spelling where it holds.
    const bool default_inner = spec.intermediate_size == 4 * spec.hidden_size && (!c.contains("n_inner") || c["n_inner"].is_null());
    c["n_inner"] = default_inner ? nlohmann::json(nullptr) : nlohmann::json(spec.intermediate_size);
    c["n_positions"] = spec.max_position_embeddings;
    c["layer_norm_epsilon"] = spec.norm_eps;
    c["tie_word_embeddings"] = true;
    if (!c.contains("activation_function")) c["activation_function"] = "gelu_new";
    return c;
  }
  std::string model_type = c.value("model_type", "llama");
  // Qwen2 always has attention biases and Mistral never does; otherwise Llama expresses the spec.
  if ((model_type == "qwen2" && !spec.attention_bias) ||
      (model_type == "mistral" && (spec.attention_bias || spec.mlp_bias)) ||
      (model_type != "qwen2" && model_type != "mistral")) {
    model_type = "llama";
  }
  static const std::map<std::string, const char*> kArchitecture = {
      {"llama", "LlamaForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},
      {"mistral", "MistralForCausalLM"}};
  c["model_type"] = model_type;
  c["architectures"] = {kArchitecture.at(model_type)};
  c["hidden_size"] = spec.hidden_size;
  c["intermediate_size"] = spec.intermediate_size;
  c["num_hidden_layers"] = spec.num_layers;
  c["num_attention_heads"] = spec.num_heads;
  c["num_key_value_heads"] = spec.num_kv_heads;
  // Older transformers ignore head_dim and derive it; write it only where it says something.
  if (c.contains("head_dim") || spec.head_dim * spec.num_heads != spec.hidden_size) {
    c["head_dim"] = spec.head_dim;
  }
  c["max_position_embeddings"] = spec.max_position_embeddings;
  c["rms_norm_eps"] = spec.norm_eps;
  // Written in the spelling the config came in (transformers 5's rope_parameters, or rope_theta).
  const bool new_rope = c.contains("rope_parameters") && c["rope_parameters"].is_object();
  if (new_rope) c["rope_parameters"]["rope_theta"] = spec.rope_theta;
  if (!new_rope || c.contains("rope_theta")) c["rope_theta"] = spec.rope_theta;
  c["tie_word_embeddings"] = spec.tie_word_embeddings;
  c["hidden_act"] = "silu";
  if (model_type == "llama") {
    c["attention_bias"] = spec.attention_bias;
    c["mlp_bias"] = spec.mlp_bias;
  }
  return c;
}

nlohmann::json default_hf_config(Architecture arch) {
  if (arch == Architecture::GPT2) {
    return {{"architectures", {"GPT2LMHeadModel"}},
            {"model_type", "gpt2"},
            {"vocab_size", 256},
            {"n_embd", 64},
            {"n_layer", 2},
            {"n_head", 4},
            {"n_inner", nullptr},  // transformers' default: 4 x n_embd, so --set n_embd scales it
            {"n_positions", 512},
            {"layer_norm_epsilon", 1e-5},
            {"activation_function", "gelu_new"},
            {"initializer_range", 0.02},
            {"tie_word_embeddings", true}};
  }
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", 256},
          {"hidden_size", 64},
          {"intermediate_size", 128},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 512},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"hidden_act", "silu"},
          {"initializer_range", 0.02},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"tie_word_embeddings", false}};
}

Architecture parse_architecture(const std::string& name) {
  if (name == "gpt2") return Architecture::GPT2;
  if (name == "llama") return Architecture::Llama;
  fail("unknown architecture '{}' (expected gpt2 or llama)", name);
}

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  fail("unknown dtype '{}' (expected float32, bfloat16 or float16)", name);
}

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      fail("dtype {} is not a model dtype (float32, bfloat16, float16)", c10::toString(dtype));
  }
}

Gpt2Activation gpt2_activation(const ModelSpec& spec, const std::string& source) {
  const std::string act = spec.hf_config.is_object()
                              ? spec.hf_config.value("activation_function", "gelu_new")
                              : "gelu_new";
  // gelu_new, gelu_fast and gelu_pytorch_tanh are one function (the tanh approximation), which
  // transformers writes out op by op or calls fused; here it is always the fused kernel.
  if (act == "gelu_new" || act == "gelu_fast" || act == "gelu_pytorch_tanh") return Gpt2Activation::GeluTanh;
  if (act == "gelu") return Gpt2Activation::GeluErf;
  fail("{}: activation_function '{}' is not supported (gelu_new, gelu_pytorch_tanh, gelu are)",
       source, act);
}

bool llama_o_proj_bias(const ModelSpec& spec) {
  const bool qwen2 =
      spec.hf_config.is_object() && spec.hf_config.value("model_type", "") == "qwen2";
  return spec.attention_bias && !qwen2;
}

int64_t llama_sliding_window(const ModelSpec& spec, const std::string& source) {
  const json& c = spec.hf_config;
  if (!c.is_object() || c.value("model_type", "") != "mistral" || !c.contains("sliding_window") ||
      c["sliding_window"].is_null()) {
    return 0;
  }
  if (!c["sliding_window"].is_number_integer() || c["sliding_window"].get<int64_t>() <= 0) {
    fail("{}: 'sliding_window' must be a positive integer or null", source);
  }
  return c["sliding_window"].get<int64_t>();
}

// Matmul FLOPs are 2 per multiply-add of every weight matrix, the head included (biases, norms
// and activations are ignored). Attention adds, per layer, 2*T*H*D for the scores and 2*T*H*D
// for the weighted values, counted over the full length T (not the causal average T/2), which
// is the PaLM / llm.c convention for MFU.
double CausalLMImpl::forward_flops_per_token(int64_t seq_len) const {
  const double d = static_cast<double>(spec_.hidden_size);
  const double q_width = static_cast<double>(spec_.num_heads * spec_.head_dim);
  const double kv_width = static_cast<double>(spec_.num_kv_heads * spec_.head_dim);
  const double layers = static_cast<double>(spec_.num_layers);
  const double projections = layers * d * (2 * q_width + 2 * kv_width) + d * static_cast<double>(spec_.vocab_size);
  const double attention = 4.0 * layers * q_width * static_cast<double>(seq_len);
  return 2.0 * projections + layers * mlp_flops_per_token() + attention;
}

double CausalLMImpl::mlp_flops_per_token() const {
  const double mlp_matrices = spec_.arch == Architecture::GPT2 ? 2.0 : 3.0;  // fc, proj; or gate, up, down
  return 2.0 * mlp_matrices * static_cast<double>(spec_.hidden_size) * static_cast<double>(spec_.intermediate_size);
}

}  // namespace dpo
