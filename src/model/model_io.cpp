// Model construction, initialisation, and Hugging Face directory I/O (config.json +
// model.safetensors or sharded model.safetensors.index.json).
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/json_input.h"
#include "dpo/model/layers.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;

CausalLM make_model(const ModelSpec& spec, const at::TensorOptions& options) {
  return spec.arch == Architecture::GPT2 ? make_gpt2(spec, options) : make_llama(spec, options);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The safetensors files of a model directory: model.safetensors, or the shards named by
// model.safetensors.index.json.
std::vector<std::string> checkpoint_files(const std::string& dir) {
  const std::string single = dir + "/model.safetensors";
  if (fs::exists(single)) return {single};
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (!fs::exists(index_path)) {
    fail("{}: neither model.safetensors nor model.safetensors.index.json exists", dir);
  }
  const nlohmann::json index = read_json_file(index_path);
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
    fail("{}: 'weight_map' is missing or not an object", index_path);
  }
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) fail("{}: weight_map['{}'] is not a file name", index_path, tensor);
    const std::string name = file.get<std::string>();
    if (name.find('/') != std::string::npos || name == "..") {
      fail("{}: weight_map['{}'] = '{}' is not a file in the directory", index_path, tensor, name);
    }
    if (seen.insert(name).second) files.push_back(dir + "/" + name);
  }
  return files;
}

// Where a checkpoint tensor goes in our model: its name there, or "" for tensors transformers
// also ignores (old GPT-2 attention-mask buffers, saved rotary tables, a tied head's copy).
bool is_ignored_tensor(const ModelSpec& spec, const std::string& name) {
  return ends_with(name, "rotary_emb.inv_freq") ||
         (spec.arch == Architecture::GPT2 &&
          (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias")));
}

std::string parameter_name_for(const ModelSpec& spec, const std::string& name,
                               const at::Tensor& tensor, const std::string& file) {
  if (is_ignored_tensor(spec, name)) return "";
  if (name == "lm_head.weight" && spec.tie_word_embeddings) {
    const std::vector<int64_t> expected = {spec.vocab_size, spec.hidden_size};
    if (tensor.sizes().vec() != expected) {
      fail("{}: tensor 'lm_head.weight' has shape {} but the tied head needs {}", file,
           shape_text(tensor.sizes()), shape_text(expected));
    }
    return "";
  }
  if (spec.arch != Architecture::GPT2) return name;
  // Original OpenAI-converted GPT-2 checkpoints are saved from GPT2Model, without the prefix.
  return name.rfind("transformer.", 0) == 0 ? name : "transformer." + name;
}

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", value, units[unit]);
}

}  // namespace

CausalLM build_model(const ModelSpec& spec, uint64_t seed) {
  CausalLM model = make_model(spec, at::TensorOptions().dtype(at::kFloat));
  const double std =
      spec.hf_config.is_object() ? spec.hf_config.value("initializer_range", 0.02) : 0.02;
  // GPT-2 scales its residual output projections by 1/sqrt(2 * n_layer), as transformers does.
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(spec.num_layers));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  c10::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    at::Tensor& t = p.value();
    if (ends_with(name, ".bias")) {
      t.zero_();
    } else if (t.dim() == 1) {  // LayerNorm / RMSNorm scales
      t.fill_(1.0);
    } else if (spec.arch == Architecture::GPT2 && ends_with(name, "c_proj.weight")) {
      t.normal_(0.0, residual_std, gen);
    } else {
      t.normal_(0.0, std, gen);
    }
  }
  return model;
}

CausalLM load_model(const std::string& dir, at::ScalarType dtype, const std::string& device) {
  const std::string config_path = dir + "/config.json";
  const ModelSpec spec = model_spec_from_hf_config(read_json_file(config_path), config_path);
  CausalLM model;
  try {
    model = make_model(spec, at::TensorOptions().dtype(dtype).device(at::Device(device)));
  } catch (const c10::Error& e) {  // sizes within their bounds can still exceed this machine's memory
    const std::string what = e.what_without_backtrace();
    fail("{}: cannot allocate the model it describes on {}: {}", config_path, device, what.substr(0, what.find('\n')));
  }
  auto parameters = model->named_parameters();
  std::map<std::string, std::string> loaded_from;  // parameter -> file
  c10::NoGradGuard no_grad;
  for (const std::string& file : checkpoint_files(dir)) {
    if (!fs::exists(file))
      fail("{}: shard listed in model.safetensors.index.json is missing", file);
    const SafetensorsFile checkpoint = read_safetensors(file);
    for (const auto& [name, tensor] : checkpoint.tensors) {
      const std::string target = parameter_name_for(spec, name, tensor, file);
      if (target.empty()) continue;
      at::Tensor* param = parameters.find(target);
      if (param == nullptr)
        fail("{}: unexpected tensor '{}' (no such parameter in the model)", file, name);
      if (!at::isFloatingType(tensor.scalar_type())) {
        fail("{}: tensor '{}' has dtype {}, expected a floating type", file, name,
             c10::toString(tensor.scalar_type()));
      }
      if (!tensor.sizes().equals(param->sizes())) {
        fail("{}: tensor '{}' has shape {} but the model expects {}", file, name,
             shape_text(tensor.sizes()), shape_text(param->sizes()));
      }
      const auto [previous, inserted] = loaded_from.emplace(target, file);
      if (!inserted) fail("{}: tensor '{}' also appears in {}", file, name, previous->second);
      param->copy_(tensor);
    }
  }
  for (const auto& p : parameters) {
    if (!loaded_from.count(p.key()))
      fail("{}: tensor '{}' is missing from the checkpoint", dir, p.key());
  }
  return model;
}

NamedTensors model_state_for_save(const CausalLMImpl& model, at::ScalarType dtype) {
  NamedTensors state;
  for (const auto& p : model.named_parameters()) {
    at::Tensor tensor = p.value().detach().to(at::kCPU);
    if (dtype != at::ScalarType::Undefined) tensor = tensor.to(dtype);
    state.emplace_back(p.key(), tensor.contiguous());
  }
  return state;
}

void write_model_files(const CausalLMImpl& model, const std::string& dir, at::ScalarType dtype) {
  const NamedTensors state = model_state_for_save(model, dtype);
  if (state.empty()) fail("{}: the model has no parameters to save", dir);
  const std::string torch_dtype = dtype_name(state.front().second.scalar_type());
  write_synced_file(dir + "/config.json", hf_config_from_model_spec(model.spec(), torch_dtype).dump(2) + "\n");
  // transformers refuses safetensors files whose metadata lacks format=pt.
  write_safetensors(dir + "/model.safetensors", state, {{"format", "pt"}});
}

void save_model(const CausalLMImpl& model, const std::string& dir, at::ScalarType dtype,
                const ServingSources& serving) {
  TemporaryPath tmp(dir);
  make_directories(tmp.path());
  write_model_files(model, tmp.path(), dtype);
  copy_serving_files(serving, tmp.path());
  tmp.commit();
}

at::ScalarType stored_weights_dtype(const std::string& dir) {
  std::map<at::ScalarType, uint64_t> elements;
  for (const std::string& file : checkpoint_files(dir)) {
    for (const auto& e : read_safetensors_header(file).entries) {
      if (!at::isFloatingType(e.dtype)) continue;
      uint64_t n = 1;
      for (int64_t d : e.shape) n *= static_cast<uint64_t>(d);
      elements[e.dtype] += n;
    }
  }
  if (elements.empty()) fail("{}: no floating-point weights in its safetensors files", dir);
  return std::max_element(elements.begin(), elements.end(), [](const auto& a, const auto& b) { return a.second < b.second; })
      ->first;
}

std::string describe_model_dir(const std::string& dir) {
  const std::string config_path = dir + "/config.json";
  const ModelSpec s = model_spec_from_hf_config(read_json_file(config_path), config_path);
  std::ostringstream out;
  out << fmt::format("model directory {}\n", dir);
  out << fmt::format("  architecture: {} (model_type {})\n",
                     s.arch == Architecture::GPT2 ? "gpt2" : "llama",
                     s.hf_config.value("model_type", ""));
  out << fmt::format(
      "  layers {}, hidden {}, heads {} (kv heads {}, head_dim {}), intermediate {}, vocab {}, "
      "max positions {}\n",
      s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim, s.intermediate_size,
      s.vocab_size, s.max_position_embeddings);
  // GPT-2's attention and MLP projections always have biases; the spec's flags are Llama's options.
  const bool gpt2 = s.arch == Architecture::GPT2;
  out << fmt::format("  tied embeddings: {}, attention bias: {}, mlp bias: {}\n",
                     s.tie_word_embeddings ? "yes" : "no", gpt2 || s.attention_bias ? "yes" : "no",
                     gpt2 || s.mlp_bias ? "yes" : "no");
  if (!gpt2) {
    const RopeScaling scaling = rope_scaling_of(s.hf_config, config_path);
    out << fmt::format("  rope: theta {}, scaling {}\n", s.rope_theta,
                       scaling.settings->is_null() ? std::string("none")
                                                   : fmt::format("{} {}", scaling.key, scaling.settings->dump()));
  }
  uint64_t elements = 0, tensors = 0;
  std::map<std::string, uint64_t> by_dtype;
  std::vector<std::string> files;
  for (const std::string& file : checkpoint_files(dir)) {
    const SafetensorsHeader header = read_safetensors_header(file);
    for (const auto& e : header.entries) {
      // Count what the model holds: not mask buffers, nor a tied head's second copy.
      if (is_ignored_tensor(s, e.name) || (e.name == "lm_head.weight" && s.tie_word_embeddings)) {
        continue;
      }
      uint64_t n = 1;
      for (int64_t d : e.shape) n *= static_cast<uint64_t>(d);
      elements += n;
      ++tensors;
      by_dtype[c10::toString(e.dtype)] += n;
    }
    files.push_back(fmt::format("{} ({})", fs::path(file).filename().string(),
                                human_bytes(fs::file_size(file))));
  }
  std::string dtypes;
  for (const auto& [name, n] : by_dtype)
    dtypes += fmt::format("{}{} x {}", dtypes.empty() ? "" : ", ", n, name);
  out << fmt::format("  parameters: {} in {} tensors ({})\n", elements, tensors, dtypes);
  out << "  files:";
  for (const auto& f : files) out << " " << f;
  out << "\n";
  out << describe_serving_files(dir);
  return out.str();
}

}  // namespace dpo
