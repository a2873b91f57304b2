#include <c10/core/GradMode.h>

#include "catch2_api.h"
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "dpo/error.h"
#include "dpo/model/layers.h"
#include "dpo/model/model.h"
#include "float_rounding.h"
#include "scratch_dir.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Vec = std::vector<double>;
using Catch::Contains;

// ---------------------------------------------------------------------------------------------
// An independent float64 reference: one position and one head at a time, over plain vectors,
// reading the parameters by their Hugging Face names.

struct Weights {
  std::map<std::string, at::Tensor> by_name;  // float64, contiguous
  bool has(const std::string& name) const { return by_name.count(name) > 0; }
  const double* operator()(const std::string& name) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) FAIL("reference needs missing parameter " << name);
    return it->second.data_ptr<double>();
  }
};

Weights weights_of(const dpo::CausalLMImpl& model) {
  Weights w;
  for (const auto& p : model.named_parameters()) {
    w.by_name[p.key()] = p.value().detach().to(at::kDouble).contiguous();
  }
  return w;
}

// y[j] = sum_i W[j][i] x[i] + b[j] with W stored [out][in] (nn.Linear).
Vec linear(const double* W, const double* b, const Vec& x, size_t out) {
  Vec y(out, 0.0);
  for (size_t j = 0; j < out; ++j) {
    double s = b ? b[j] : 0.0;
    for (size_t i = 0; i < x.size(); ++i) s += W[j * x.size() + i] * x[i];
    y[j] = s;
  }
  return y;
}

// y[j] = sum_i x[i] W[i][j] + b[j] with W stored [in][out] (GPT-2 Conv1D).
Vec conv1d(const double* W, const double* b, const Vec& x, size_t out) {
  Vec y(b, b + out);
  for (size_t i = 0; i < x.size(); ++i) {
    for (size_t j = 0; j < out; ++j) y[j] += x[i] * W[i * out + j];
  }
  return y;
}

Vec layer_norm(const Vec& x, const double* w, const double* b, double eps) {
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= x.size();
  for (double v : x) var += (v - mean) * (v - mean);
  var /= x.size();
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + eps) * w[i] + b[i];
  return y;
}

Vec rms_norm(const Vec& x, const double* w, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  ms /= x.size();
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] / std::sqrt(ms + eps) * w[i];
  return y;
}

void add_into(Vec& h, const Vec& d) {
  for (size_t i = 0; i < h.size(); ++i) h[i] += d[i];
}

// Causal attention of one head: q[t], k[t], v[t] are head vectors at offset `qo` / `ko`.
Vec attend(const std::vector<Vec>& q, const std::vector<Vec>& k, const std::vector<Vec>& v,
           size_t t, size_t qo, size_t ko, size_t dim) {
  std::vector<double> scores(t + 1);
  double top = -1e300;
  for (size_t j = 0; j <= t; ++j) {
    double s = 0;
    for (size_t i = 0; i < dim; ++i) s += q[t][qo + i] * k[j][ko + i];
    scores[j] = s / std::sqrt(static_cast<double>(dim));
    top = std::max(top, scores[j]);
  }
  double total = 0;
  for (double& s : scores) total += (s = std::exp(s - top));
  Vec out(dim, 0.0);
  for (size_t j = 0; j <= t; ++j) {
    for (size_t i = 0; i < dim; ++i) out[i] += scores[j] / total * v[j][ko + i];
  }
  return out;
}

std::vector<Vec> gpt2_reference(const dpo::ModelSpec& s, const Weights& w,
                                const std::vector<int64_t>& ids, const std::string& act) {
  const size_t d = s.hidden_size, T = ids.size(), H = s.num_heads, D = s.head_dim;
  const size_t inner = s.intermediate_size;
  std::vector<Vec> h(T, Vec(d));
  for (size_t t = 0; t < T; ++t) {
    for (size_t i = 0; i < d; ++i) {
      h[t][i] =
          w("transformer.wte.weight")[ids[t] * d + i] + w("transformer.wpe.weight")[t * d + i];
    }
  }
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    std::vector<Vec> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      const Vec a = layer_norm(h[t], w(p + "ln_1.weight"), w(p + "ln_1.bias"), s.norm_eps);
      const Vec qkv = conv1d(w(p + "attn.c_attn.weight"), w(p + "attn.c_attn.bias"), a, 3 * d);
      q[t].assign(qkv.begin(), qkv.begin() + d);
      k[t].assign(qkv.begin() + d, qkv.begin() + 2 * d);
      v[t].assign(qkv.begin() + 2 * d, qkv.end());
    }
    for (size_t t = 0; t < T; ++t) {
      Vec y;
      for (size_t head = 0; head < H; ++head) {
        const Vec o = attend(q, k, v, t, head * D, head * D, D);
        y.insert(y.end(), o.begin(), o.end());
      }
      add_into(h[t], conv1d(w(p + "attn.c_proj.weight"), w(p + "attn.c_proj.bias"), y, d));
    }
    for (size_t t = 0; t < T; ++t) {
      const Vec m = layer_norm(h[t], w(p + "ln_2.weight"), w(p + "ln_2.bias"), s.norm_eps);
      Vec f = conv1d(w(p + "mlp.c_fc.weight"), w(p + "mlp.c_fc.bias"), m, inner);
      for (double& x : f) {
        x = act == "gelu"
                ? 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)))
                : 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
      }
      add_into(h[t], conv1d(w(p + "mlp.c_proj.weight"), w(p + "mlp.c_proj.bias"), f, d));
    }
  }
  std::vector<Vec> logits(T);
  for (size_t t = 0; t < T; ++t) {
    const Vec x =
        layer_norm(h[t], w("transformer.ln_f.weight"), w("transformer.ln_f.bias"), s.norm_eps);
    logits[t] = linear(w("transformer.wte.weight"), nullptr, x, s.vocab_size);
  }
  return logits;
}

// Inverse RoPE frequencies, with Llama 3.1's scaling written out per frequency. Theta and the
// scaling are read from the config as transformers 5 (rope_parameters) or earlier versions
// (rope_theta, rope_scaling) write them.
Vec reference_inv_freq(const dpo::ModelSpec& s) {
  const json& c = s.hf_config;
  const json rs = c.contains("rope_parameters") ? c["rope_parameters"] : c.value("rope_scaling", json());
  const double theta = rs.is_object() && rs.contains("rope_theta") ? rs["rope_theta"].get<double>()
                                                                    : c.value("rope_theta", 10000.0);
  Vec f(s.head_dim / 2);
  for (size_t i = 0; i < f.size(); ++i) f[i] = std::pow(theta, -2.0 * i / s.head_dim);
  if (rs.is_object() && rs.value("rope_type", "") == "llama3") {
    const double factor = rs["factor"], lo = rs["low_freq_factor"], hi = rs["high_freq_factor"];
    const double old_context = rs["original_max_position_embeddings"];
    for (double& x : f) {
      const double wavelen = 2 * M_PI / x;
      if (wavelen > old_context / lo) {
        x /= factor;
      } else if (wavelen >= old_context / hi) {
        const double smooth = (old_context / wavelen - lo) / (hi - lo);
        x = (1 - smooth) * x / factor + smooth * x;
      }
    }
  }
  return f;
}

void rotate(Vec& x, size_t offset, size_t dim, size_t position, const Vec& inv_freq) {
  for (size_t i = 0; i < dim / 2; ++i) {
    const double c = std::cos(position * inv_freq[i]), sn = std::sin(position * inv_freq[i]);
    const double a = x[offset + i], b = x[offset + i + dim / 2];
    x[offset + i] = a * c - b * sn;
    x[offset + i + dim / 2] = b * c + a * sn;
  }
}

std::vector<Vec> llama_reference(const dpo::ModelSpec& s, const Weights& w,
                                 const std::vector<int64_t>& ids) {
  const size_t d = s.hidden_size, T = ids.size(), H = s.num_heads, KV = s.num_kv_heads;
  const size_t D = s.head_dim, inner = s.intermediate_size;
  auto bias = [&](const std::string& name) { return w.has(name) ? w(name) : nullptr; };
  const Vec inv_freq = reference_inv_freq(s);
  std::vector<Vec> h(T);
  for (size_t t = 0; t < T; ++t) {
    const double* row = w("model.embed_tokens.weight") + ids[t] * d;
    h[t].assign(row, row + d);
  }
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<Vec> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      const Vec a = rms_norm(h[t], w(p + "input_layernorm.weight"), s.norm_eps);
      q[t] = linear(w(p + "self_attn.q_proj.weight"), bias(p + "self_attn.q_proj.bias"), a, H * D);
      k[t] = linear(w(p + "self_attn.k_proj.weight"), bias(p + "self_attn.k_proj.bias"), a, KV * D);
      v[t] = linear(w(p + "self_attn.v_proj.weight"), bias(p + "self_attn.v_proj.bias"), a, KV * D);
      for (size_t head = 0; head < H; ++head) rotate(q[t], head * D, D, t, inv_freq);
      for (size_t head = 0; head < KV; ++head) rotate(k[t], head * D, D, t, inv_freq);
    }
    for (size_t t = 0; t < T; ++t) {
      Vec y;
      for (size_t head = 0; head < H; ++head) {
        const size_t kv_head = head / (H / KV);
        const Vec o = attend(q, k, v, t, head * D, kv_head * D, D);
        y.insert(y.end(), o.begin(), o.end());
      }
      add_into(h[t],
               linear(w(p + "self_attn.o_proj.weight"), bias(p + "self_attn.o_proj.bias"), y, d));
    }
    for (size_t t = 0; t < T; ++t) {
      const Vec m = rms_norm(h[t], w(p + "post_attention_layernorm.weight"), s.norm_eps);
      const Vec gate =
          linear(w(p + "mlp.gate_proj.weight"), bias(p + "mlp.gate_proj.bias"), m, inner);
      Vec up = linear(w(p + "mlp.up_proj.weight"), bias(p + "mlp.up_proj.bias"), m, inner);
      for (size_t i = 0; i < inner; ++i) up[i] *= gate[i] / (1 + std::exp(-gate[i]));
      add_into(h[t], linear(w(p + "mlp.down_proj.weight"), bias(p + "mlp.down_proj.bias"), up, d));
    }
  }
  const std::string head = s.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  std::vector<Vec> logits(T);
  for (size_t t = 0; t < T; ++t) {
    logits[t] =
        linear(w(head), nullptr, rms_norm(h[t], w("model.norm.weight"), s.norm_eps), s.vocab_size);
  }
  return logits;
}

// ---------------------------------------------------------------------------------------------

// One scratch directory per test process, removed when the process exits.
std::string scratch_dir(const std::string& name) {
  static const ScratchDir root("models");
  const fs::path dir = root.path / name;
  fs::remove_all(dir);
  return dir.string();
}

json tiny_config(dpo::Architecture arch) {
  json c = dpo::default_hf_config(arch);
  c["vocab_size"] = 40;
  if (arch == dpo::Architecture::GPT2) {
    c.update({{"n_embd", 16}, {"n_head", 4}, {"n_inner", 24}, {"n_positions", 16}});
  } else {
    c.update({{"hidden_size", 16},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"intermediate_size", 24},
              {"max_position_embeddings", 16}});
  }
  return c;
}

// Parameters far from their initial values so that every one of them moves the logits.
dpo::CausalLM random_model(const json& config, uint64_t seed) {
  dpo::CausalLM model = dpo::build_model(dpo::model_spec_from_hf_config(config, "test"), seed);
  at::manual_seed(seed);
  c10::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    at::Tensor& t = p.value();
    const bool is_bias = p.key().size() > 5 && p.key().substr(p.key().size() - 5) == ".bias";
    if (is_bias) {
      t.normal_(0, 0.2);
    } else if (t.dim() == 1) {
      t.normal_(1, 0.2);
    } else {
      t.normal_(0, 0.35);
    }
  }
  return model;
}

const std::vector<std::vector<int64_t>> kBatch = {{3, 17, 0, 39, 8, 8, 25},
                                                  {11, 2, 30, 5, 19, 1, 36}};

at::Tensor batch_ids() {
  at::Tensor ids = at::empty({2, 7}, at::kLong);
  for (int b = 0; b < 2; ++b) {
    for (int t = 0; t < 7; ++t) ids[b][t] = kBatch[b][t];
  }
  return ids;
}

// max |model - reference| relative to max |reference|, over the whole batch.
double relative_error(const at::Tensor& logits,
                      const std::function<std::vector<Vec>(const std::vector<int64_t>&)>& ref) {
  const at::Tensor got = logits.to(at::kDouble).contiguous();
  double worst = 0, scale = 0;
  for (int b = 0; b < 2; ++b) {
    const std::vector<Vec> expected = ref(kBatch[b]);
    for (size_t t = 0; t < expected.size(); ++t) {
      for (size_t v = 0; v < expected[t].size(); ++v) {
        worst = std::max(worst, std::abs(got[b][t][v].item<double>() - expected[t][v]));
        scale = std::max(scale, std::abs(expected[t][v]));
      }
    }
  }
  REQUIRE(scale > 0.5);  // the comparison means something
  return worst / scale;
}

at::Tensor logits_of(dpo::CausalLMImpl& model) {
  c10::NoGradGuard no_grad;
  return model.forward(batch_ids());
}

void write_config(const std::string& dir, const json& config) {
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << config.dump(2);
}

std::map<std::string, at::Tensor> state_map(const dpo::CausalLMImpl& model) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [name, t] : dpo::model_state_for_save(model)) m[name] = t;
  return m;
}

bool same_parameters(const dpo::CausalLMImpl& a, const dpo::CausalLMImpl& b) {
  const auto sa = state_map(a), sb = state_map(b);
  if (sa.size() != sb.size()) return false;
  for (const auto& [name, t] : sa) {
    if (!sb.count(name) || !at::equal(t, sb.at(name))) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("GPT-2 logits match an independent float64 implementation", "[models]") {
  for (const std::string act : {"gelu_new", "gelu"}) {
    INFO(act);
    json config = tiny_config(dpo::Architecture::GPT2);
    config["activation_function"] = act;
    auto model = random_model(config, 1);
    const Weights w = weights_of(*model);
    const double err = relative_error(logits_of(*model), [&](const std::vector<int64_t>& ids) {
      return gpt2_reference(model->spec(), w, ids, act);
    });
    CHECK(err < 1e-5);  // float32 against float64: float32 rounding only (docs/numerics.md)
  }
}

TEST_CASE("Llama-family logits match an independent float64 implementation", "[models]") {
  json config = tiny_config(dpo::Architecture::Llama);
  // The reference uses a bias wherever the model has one; which ones exist is checked here.
  bool o_bias = false, mlp_bias = false;
  SECTION("llama, grouped-query attention, untied head") {}
  SECTION("qwen2: q/k/v biases, tied head") {
    config.update({{"model_type", "qwen2"},
                   {"architectures", {"Qwen2ForCausalLM"}},
                   {"tie_word_embeddings", true},
                   {"num_key_value_heads", 1}});
    config.erase("attention_bias");
    config.erase("mlp_bias");
  }
  SECTION("llama: all biases, explicit head_dim, llama3 rope scaling, rope_theta") {
    config.update({{"attention_bias", true},
                   {"mlp_bias", true},
                   {"head_dim", 8},
                   {"num_key_value_heads", 4},
                   {"rope_theta", 500.0},
                   {"rope_scaling",
                    {{"rope_type", "llama3"},
                     {"factor", 8.0},
                     {"low_freq_factor", 1.0},
                     {"high_freq_factor", 4.0},
                     {"original_max_position_embeddings", 64}}}});
    o_bias = mlp_bias = true;
  }
  SECTION("llama, a transformers 5 config: rope_parameters holds theta and the llama3 scaling") {
    config.erase("rope_theta");
    config.update({{"head_dim", 8},
                   {"num_key_value_heads", 4},
                   {"rope_parameters",
                    {{"rope_type", "llama3"},
                     {"rope_theta", 500.0},
                     {"factor", 8.0},
                     {"low_freq_factor", 1.0},
                     {"high_freq_factor", 4.0},
                     {"original_max_position_embeddings", 64}}}});
  }
  auto model = random_model(config, 2);
  const Weights w = weights_of(*model);
  CHECK(w.has("lm_head.weight") == !config["tie_word_embeddings"].get<bool>());
  CHECK(w.has("model.layers.1.self_attn.q_proj.bias") == model->spec().attention_bias);
  CHECK(w.has("model.layers.1.self_attn.o_proj.bias") == o_bias);
  CHECK(w.has("model.layers.1.mlp.up_proj.bias") == mlp_bias);
  const double err = relative_error(logits_of(*model), [&](const std::vector<int64_t>& ids) {
    return llama_reference(model->spec(), w, ids);
  });
  CHECK(err < 1e-5);  // float32 against float64: float32 rounding only (docs/numerics.md)
}

TEST_CASE("parameters carry the Hugging Face names", "[models]") {
  auto gpt2 = dpo::build_model(
      dpo::model_spec_from_hf_config(tiny_config(dpo::Architecture::GPT2), "t"), 0);
  const auto g = state_map(*gpt2);
  CHECK(g.at("transformer.h.1.attn.c_attn.weight").sizes() == at::IntArrayRef({16, 48}));
  CHECK(g.at("transformer.h.0.mlp.c_fc.weight").sizes() == at::IntArrayRef({16, 24}));
  CHECK(g.at("transformer.wpe.weight").sizes() == at::IntArrayRef({16, 16}));
  CHECK(g.count("transformer.ln_f.bias") == 1);
  CHECK(g.count("lm_head.weight") == 0);
  CHECK(g.size() == 2 + 2 * 12 + 2);

  auto llama = dpo::build_model(
      dpo::model_spec_from_hf_config(tiny_config(dpo::Architecture::Llama), "t"), 0);
  const auto l = state_map(*llama);
  CHECK(l.at("model.layers.1.self_attn.k_proj.weight").sizes() == at::IntArrayRef({8, 16}));
  CHECK(l.at("model.layers.0.mlp.down_proj.weight").sizes() == at::IntArrayRef({16, 24}));
  CHECK(l.at("lm_head.weight").sizes() == at::IntArrayRef({40, 16}));
  CHECK(l.count("model.norm.weight") == 1);
  CHECK(l.size() == 1 + 2 * 9 + 2);
}

TEST_CASE("initialisation follows transformers and is deterministic for a seed", "[models]") {
  const auto spec =
      dpo::model_spec_from_hf_config(dpo::default_hf_config(dpo::Architecture::GPT2), "t");
  auto a = dpo::build_model(spec, 7), b = dpo::build_model(spec, 7), c = dpo::build_model(spec, 8);
  CHECK(same_parameters(*a, *b));
  CHECK_FALSE(same_parameters(*a, *c));
  const auto s = state_map(*a);
  CHECK(s.at("transformer.h.0.ln_1.weight").eq(1).all().item<bool>());
  CHECK(s.at("transformer.h.0.attn.c_attn.bias").eq(0).all().item<bool>());
  CHECK(s.at("transformer.wte.weight").std().item<double>() == Approx(0.02).epsilon(0.05));
  CHECK(s.at("transformer.h.0.mlp.c_proj.weight").std().item<double>() ==
        Approx(0.01).epsilon(0.05));
}

TEST_CASE("a saved model loads back bit for bit with identical logits", "[models]") {
  for (auto arch : {dpo::Architecture::GPT2, dpo::Architecture::Llama}) {
    auto model = random_model(tiny_config(arch), 3);
    const std::string dir = scratch_dir("roundtrip");
    dpo::save_model(*model, dir);
    const auto header = dpo::read_safetensors_header(dir + "/model.safetensors");
    CHECK(header.metadata.at("format") == "pt");
    std::ifstream config_file(dir + "/config.json");
    const json saved_config = json::parse(config_file);
    CHECK(saved_config["torch_dtype"] == "float32");
    CHECK(saved_config["architectures"][0] ==
          (arch == dpo::Architecture::GPT2 ? "GPT2LMHeadModel" : "LlamaForCausalLM"));

    auto loaded = dpo::load_model(dir, at::kFloat);
    CHECK(same_parameters(*model, *loaded));
    CHECK(at::equal(logits_of(*model), logits_of(*loaded)));
    CHECK(loaded->spec().num_kv_heads == model->spec().num_kv_heads);
    CHECK_THAT(dpo::describe_model_dir(dir), Contains("layers 2, hidden 16"));
  }
}

TEST_CASE("a GPT-2 checkpoint without the transformer. prefix and with old buffers loads",
          "[models]") {
  const json config = tiny_config(dpo::Architecture::GPT2);
  auto model = random_model(config, 4);
  dpo::NamedTensors tensors;
  for (const auto& [name, t] : dpo::model_state_for_save(*model)) {
    tensors.emplace_back(name.substr(std::string("transformer.").size()), t.to(at::kHalf));
  }
  tensors.emplace_back("h.0.attn.bias", at::ones({1, 1, 16, 16}).tril());
  tensors.emplace_back("h.0.attn.masked_bias", at::scalar_tensor(-1e4));
  tensors.emplace_back("lm_head.weight", state_map(*model).at("transformer.wte.weight"));
  const std::string dir = scratch_dir("noprefix");
  write_config(dir, config);
  dpo::write_safetensors(dir + "/model.safetensors", tensors);

  auto loaded = dpo::load_model(dir, at::kFloat);
  int64_t count = 0;
  for (const auto& p : loaded->parameters()) count += p.numel();
  // The description counts the model's parameters, not the mask buffers or the tied head's copy.
  CHECK_THAT(dpo::describe_model_dir(dir),
             Contains(fmt::format("parameters: {} in 28 tensors", count)));
  const auto expected = state_map(*model);
  for (const auto& [name, t] : state_map(*loaded)) {
    INFO(name);
    CHECK(at::equal(t, expected.at(name).to(at::kHalf).to(at::kFloat)));
  }
}

TEST_CASE("missing, unexpected and mis-shaped tensors are refused, naming them", "[models]") {
  const json config = tiny_config(dpo::Architecture::Llama);
  auto model = random_model(config, 5);
  dpo::NamedTensors tensors = dpo::model_state_for_save(*model);
  const std::string dir = scratch_dir("bad");
  write_config(dir, config);
  const std::string file = dir + "/model.safetensors";

  SECTION("missing") {
    tensors.erase(tensors.begin() + 3);
    dpo::write_safetensors(file, tensors);
    REQUIRE_THROWS_WITH(
        dpo::load_model(dir, at::kFloat),
        Contains("'model.layers.0.self_attn.v_proj.weight'") && Contains("missing"));
  }
  SECTION("unexpected") {
    tensors.emplace_back("model.layers.0.self_attn.extra.weight", at::zeros({2}));
    dpo::write_safetensors(file, tensors);
    REQUIRE_THROWS_WITH(dpo::load_model(dir, at::kFloat),
                        Contains("model.safetensors") &&
                            Contains("'model.layers.0.self_attn.extra.weight'") &&
                            Contains("unexpected"));
  }
  SECTION("mis-shaped") {
    tensors[1].second = at::zeros({8, 15});
    dpo::write_safetensors(file, tensors);
    REQUIRE_THROWS_WITH(dpo::load_model(dir, at::kFloat), Contains("'" + tensors[1].first + "'") &&
                                                              Contains("[8, 15]") &&
                                                              Contains("[16, 16]"));
  }
}

TEST_CASE("a sharded checkpoint with model.safetensors.index.json loads", "[models]") {
  const json config = tiny_config(dpo::Architecture::Llama);
  auto model = random_model(config, 6);
  const dpo::NamedTensors state = dpo::model_state_for_save(*model);
  const std::string dir = scratch_dir("sharded");
  write_config(dir, config);
  const size_t half = state.size() / 2;
  dpo::NamedTensors first(state.begin(), state.begin() + half),
      second(state.begin() + half, state.end());
  dpo::write_safetensors(dir + "/model-00001-of-00002.safetensors", first);
  dpo::write_safetensors(dir + "/model-00002-of-00002.safetensors", second);
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& [name, t] : first)
    index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, t] : second)
    index["weight_map"][name] = "model-00002-of-00002.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();

  auto loaded = dpo::load_model(dir, at::kFloat);
  CHECK(same_parameters(*model, *loaded));
  CHECK_THAT(dpo::describe_model_dir(dir), Contains("model-00002-of-00002.safetensors"));
}

TEST_CASE("a tied embedding's gradient joins the head's as one dense gradient with every looked-up row", "[models]") {
  at::manual_seed(3);
  // Row 1 is looked up three times, row 0 once at the end, rows 2, 4 and 5 never.
  const at::Tensor ids = at::tensor(std::vector<int64_t>{1, 3, 1, 6, 1, 0}).view({2, 3});
  const at::Tensor r = at::randn({2, 3, 4}, at::kDouble), s = at::randn({7, 4}, at::kDouble);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool tied : {true, false}) {
      INFO(dtype << (tied ? ", tied to the head" : ", untied"));
      dpo::EmbeddingImpl embedding(7, 4, at::TensorOptions().dtype(dtype), tied);
      {
        const at::NoGradGuard no_grad;
        embedding.weight.copy_(at::randn({7, 4}));
      }
      at::Tensor loss = (embedding.forward(ids) * r.to(dtype)).sum();
      if (tied) loss = loss + (embedding.weight * s.to(dtype)).sum();  // the head's use of the weight
      loss.backward();
      const at::Tensor grad = embedding.weight.grad();
      REQUIRE(grad.layout() == at::kStrided);
      // float64: the head's part, plus r's row for every lookup of a row.
      at::Tensor expected = tied ? s.to(dtype).to(at::kDouble) : at::zeros({7, 4}, at::kDouble);
      const at::Tensor rows = r.to(dtype).to(at::kDouble).view({6, 4});
      for (int64_t i = 0; i < 6; ++i) expected[ids.view({6})[i].item<int64_t>()] += rows[i];
      CHECK(at::allclose(grad.to(at::kDouble), expected, dtype == at::kFloat ? 1e-6 : 2e-2, 1e-6));
    }
  }
}

TEST_CASE("a model loaded as bfloat16 gives logits close to float32", "[models]") {
  for (auto arch : {dpo::Architecture::GPT2, dpo::Architecture::Llama}) {
    auto model = random_model(tiny_config(arch), 9);
    const std::string dir = scratch_dir("bf16");
    dpo::save_model(*model, dir);
    auto bf16 = dpo::load_model(dir, at::kBFloat16);
    CHECK(state_map(*bf16).begin()->second.scalar_type() == at::kBFloat16);
    const at::Tensor low = logits_of(*bf16);
    CHECK(low.scalar_type() == at::kBFloat16);
    const at::Tensor ref = logits_of(*model);
    // In the 2-norm over all logits: the largest single difference depends on where rounding
    // happens to pile up, which any reordering of the float32 work between products moves.
    const double err = float_rounding::normwise_relative_difference(low, ref);
    CHECK(err < 0.05);  // bfloat16 keeps 8 bits (0.4% per rounding) through two layers: ~3% here
    CHECK(err > 0);  // it really ran in bfloat16
  }
}

TEST_CASE("transformers 5's rope_parameters are read and written in their own spelling", "[models]") {
  json old_style = tiny_config(dpo::Architecture::Llama);
  old_style["rope_theta"] = 1e6;
  old_style["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  json new_style = tiny_config(dpo::Architecture::Llama);
  new_style.erase("rope_theta");
  new_style["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 1e6}, {"factor", 2.0}};
  new_style["dtype"] = "bfloat16";
  const dpo::ModelSpec a = dpo::model_spec_from_hf_config(old_style, "old");
  const dpo::ModelSpec b = dpo::model_spec_from_hf_config(new_style, "new");
  CHECK(b.rope_theta == 1e6);  // not transformers 4's default of 10000
  CHECK(at::equal(dpo::rope_inv_freq(a, "old"), dpo::rope_inv_freq(b, "new")));

  // Only theta: rope_type defaults to "default" there.
  json theta_only = tiny_config(dpo::Architecture::Llama);
  theta_only.erase("rope_theta");
  theta_only["rope_parameters"] = {{"rope_theta", 5e5}};
  const dpo::ModelSpec c = dpo::model_spec_from_hf_config(theta_only, "theta");
  CHECK(c.rope_theta == 5e5);
  json plain = tiny_config(dpo::Architecture::Llama);
  plain["rope_theta"] = 5e5;
  CHECK(at::equal(dpo::rope_inv_freq(c, "theta"), dpo::rope_inv_freq(dpo::model_spec_from_hf_config(plain, "p"), "p")));

  // Written back as it came: theta inside rope_parameters, no top-level rope_theta, `dtype` kept.
  const json written = dpo::hf_config_from_model_spec(b, "float32");
  CHECK(written["rope_parameters"]["rope_theta"] == 1e6);
  CHECK_FALSE(written.contains("rope_theta"));
  CHECK(written["dtype"] == "float32");
  CHECK_FALSE(written.contains("torch_dtype"));
  const json written_old = dpo::hf_config_from_model_spec(a, "float32");
  CHECK(written_old["rope_theta"] == 1e6);
  CHECK_FALSE(written_old.contains("rope_parameters"));
  CHECK(written_old["torch_dtype"] == "float32");

  // Both spellings in one file must agree; what dpo cannot compute is refused, naming the key.
  json both = new_style;
  both["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  CHECK(dpo::model_spec_from_hf_config(both, "both").rope_theta == 1e6);
  both["rope_scaling"]["factor"] = 4.0;
  CHECK_THROWS_WITH(dpo::model_spec_from_hf_config(both, "both"),
                    Contains("both") && Contains("rope_scaling.factor") && Contains("rope_parameters.factor"));
  json theta_clash = new_style;
  theta_clash["rope_theta"] = 10000.0;
  CHECK_THROWS_WITH(dpo::model_spec_from_hf_config(theta_clash, "c"), Contains("rope_theta") && Contains("disagree"));
  json per_layer = tiny_config(dpo::Architecture::Llama);
  per_layer["rope_parameters"] = {{"full_attention", {{"rope_theta", 1e6}}}, {"sliding_attention", {{"rope_theta", 1e4}}}};
  CHECK_THROWS_WITH(dpo::model_spec_from_hf_config(per_layer, "c"), Contains("rope_parameters.full_attention"));
  json partial = new_style;
  partial["rope_parameters"]["partial_rotary_factor"] = 0.5;
  CHECK_THROWS_WITH(dpo::model_spec_from_hf_config(partial, "c"), Contains("partial_rotary_factor"));
  json yarn = new_style;
  yarn["rope_parameters"]["rope_type"] = "yarn";
  CHECK_THROWS_WITH(dpo::model_spec_from_hf_config(yarn, "c"), Contains("rope_parameters type 'yarn'"));
}

TEST_CASE("config.json errors name the source and the key", "[models]") {
  json llama = tiny_config(dpo::Architecture::Llama);
  llama.erase("hidden_size");
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(llama, "x/config.json"),
                      Contains("x/config.json") && Contains("'hidden_size'"));
  llama = tiny_config(dpo::Architecture::Llama);
  llama["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(llama, "c"), Contains("rope_scaling"));
  llama = tiny_config(dpo::Architecture::Llama);
  llama["num_key_value_heads"] = 3;
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(llama, "c"), Contains("num_key_value_heads"));
  llama["num_key_value_heads"] = 2;
  llama["hidden_act"] = "gelu";
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(llama, "c"), Contains("hidden_act"));

  json gpt2 = tiny_config(dpo::Architecture::GPT2);
  gpt2["scale_attn_by_inverse_layer_idx"] = true;
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(gpt2, "c"),
                      Contains("'scale_attn_by_inverse_layer_idx'"));
  gpt2 = tiny_config(dpo::Architecture::GPT2);
  gpt2["n_head"] = 5;
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(gpt2, "c"), Contains("n_head"));
  gpt2 = tiny_config(dpo::Architecture::GPT2);
  gpt2["model_type"] = "bert";
  REQUIRE_THROWS_WITH(dpo::model_spec_from_hf_config(gpt2, "c"), Contains("bert"));
  CHECK(
      dpo::model_spec_from_hf_config(tiny_config(dpo::Architecture::GPT2), "c").intermediate_size ==
      24);
  gpt2 = tiny_config(dpo::Architecture::GPT2);
  gpt2["n_inner"] = nullptr;
  CHECK(dpo::model_spec_from_hf_config(gpt2, "c").intermediate_size == 64);
}

TEST_CASE("a spec written to config.json reads back the same", "[models]") {
  for (auto arch : {dpo::Architecture::GPT2, dpo::Architecture::Llama}) {
    const auto spec = dpo::model_spec_from_hf_config(tiny_config(arch), "t");
    const auto back =
        dpo::model_spec_from_hf_config(dpo::hf_config_from_model_spec(spec, "bfloat16"), "t");
    CHECK(back.arch == spec.arch);
    CHECK(back.hidden_size == spec.hidden_size);
    CHECK(back.num_kv_heads == spec.num_kv_heads);
    CHECK(back.head_dim == spec.head_dim);
    CHECK(back.intermediate_size == spec.intermediate_size);
    CHECK(back.tie_word_embeddings == spec.tie_word_embeddings);
    CHECK(back.norm_eps == spec.norm_eps);
  }
  CHECK(dpo::parse_dtype("bfloat16") == at::kBFloat16);
  CHECK(dpo::dtype_name(at::kHalf) == "float16");
  REQUIRE_THROWS_WITH(dpo::parse_dtype("float64"), Contains("float64"));
  REQUIRE_THROWS_WITH(dpo::parse_architecture("bert"), Contains("bert"));
}

TEST_CASE("forward FLOPs per token count matmuls and full-length attention", "[models]") {
  const auto model = dpo::build_model(
      dpo::model_spec_from_hf_config(tiny_config(dpo::Architecture::Llama), "t"), 0);
  // per layer: q 16x16, k,v 16x8, o 16x16, mlp 3 x 16x24; head 16x40; attention 4 * 16 * T.
  const double matmul = 2 * (16 * 16 + 2 * 16 * 8 + 16 * 16 + 3 * 16 * 24) + 16 * 40;
  CHECK(model->forward_flops_per_token(10) == Approx(2 * matmul + 4 * 2 * 16 * 10));
  // One block's MLP: gate, up and down for Llama; fc and proj for GPT-2.
  CHECK(model->mlp_flops_per_token() == Approx(2 * 3 * 16 * 24));
  const auto gpt2 = dpo::build_model(dpo::model_spec_from_hf_config(tiny_config(dpo::Architecture::GPT2), "t"), 0);
  const auto& s = gpt2->spec();
  CHECK(gpt2->mlp_flops_per_token() == Approx(2.0 * 2 * static_cast<double>(s.hidden_size * s.intermediate_size)));
}
