// The commands on models: init-model (a randomly initialised model in Hugging Face layout) and
// score-synthetic (a model's sampled responses scored by the synthetic task's known reward).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/cli/commands.h"
#include "dpo/config/text_distance.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/json_input.h"
#include "dpo/loss/logps.h"
#include "dpo/model/model.h"
#include "dpo/model/sampling.h"

namespace dpo {

namespace {

// The config.json keys transformers' GPT2Config / LlamaConfig take beyond dpo's defaults (which
// init-model writes anyway): special-token ids, head_dim, the RoPE settings of either
// transformers generation, and options dpo reads but does not default (dropouts, caches).
const std::vector<std::string>& optional_hf_keys(Architecture arch) {
  static const std::vector<std::string> kGpt2 = {
      "bos_token_id", "eos_token_id", "pad_token_id", "resid_pdrop", "embd_pdrop", "attn_pdrop", "use_cache",
      "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"};
  static const std::vector<std::string> kLlama = {
      "bos_token_id", "eos_token_id", "pad_token_id", "head_dim", "rope_scaling", "rope_parameters",
      "attention_dropout", "pretraining_tp", "use_cache"};
  return arch == Architecture::GPT2 ? kGpt2 : kLlama;
}

// A --set value: JSON when it looks like an object or a list (rope_parameters, eos_token_id
// lists), otherwise a scalar as in the config's --set.
nlohmann::json set_value(const std::string& flag, const std::string& text) {
  if (!text.empty() && (text.front() == '{' || text.front() == '[')) return parse_json(text, "--set " + flag);
  return json_scalar(text);
}

// The special-token ids a config names must be token ids of its vocabulary: an int, or a list of
// ints (eos_token_id of chat models).
void check_token_ids(const nlohmann::json& hf) {
  const int64_t vocab = hf.value("vocab_size", int64_t{0});
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (!hf.contains(key) || hf[key].is_null()) continue;
    const nlohmann::json ids = hf[key].is_array() ? hf[key] : nlohmann::json::array({hf[key]});
    for (const auto& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab)
        fail("--set {}: {} is not a token id of the vocabulary (0 .. vocab_size - 1 = {})", key, json_excerpt(id),
             vocab - 1);
    }
  }
}

}  // namespace

int cmd_init_model(Session&, const ParsedArgs& args) {
  const Architecture arch = parse_architecture(single(args.flags, "--arch", "init-model"));
  nlohmann::json hf = default_hf_config(arch);
  std::vector<std::string> known;
  for (const auto& item : hf.items()) known.push_back(item.key());
  for (const std::string& key : optional_hf_keys(arch)) known.push_back(key);
  for (const auto& kv : all_of(args.flags, "--set")) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail("--set {}: expected KEY=VALUE", kv);
    // KEY or SECTION.KEY (one level: rope_parameters.rope_theta=500000).
    const std::string key = kv.substr(0, eq);
    const auto dot = key.find('.');
    const std::string top = key.substr(0, dot);
    if (std::find(known.begin(), known.end(), top) == known.end()) {
      const std::string guess = closest_match(top, known);
      fail("--set {}: unknown config.json key '{}' for this architecture{}", kv, top,
           guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess));
    }
    const nlohmann::json value = set_value(key, kv.substr(eq + 1));
    if (dot == std::string::npos) {
      hf[top] = value;
    } else {
      if (!hf.contains(top) || !hf[top].is_object()) hf[top] = nlohmann::json::object();
      hf[top][key.substr(dot + 1)] = value;
    }
  }
  // A RoPE given in transformers 5's spelling carries its own theta; the default's old-style
  // rope_theta would otherwise be a second value to disagree with.
  const auto user_set = [&](const std::string& name) {
    for (const auto& kv : all_of(args.flags, "--set"))
      if (kv.compare(0, name.size(), name) == 0 && (kv[name.size()] == '=' || kv[name.size()] == '.')) return true;
    return false;
  };
  if (user_set("rope_parameters") && !user_set("rope_theta")) hf.erase("rope_theta");
  check_token_ids(hf);
  const ModelSpec spec = model_spec_from_hf_config(hf, "--set");
  const auto seed = static_cast<uint64_t>(integer_flag(args.flags, "--seed", 0, 0));
  CausalLM model = build_model(spec, seed);
  const auto dtype_flags = all_of(args.flags, "--dtype");
  if (!dtype_flags.empty()) model->to(parse_dtype(dtype_flags.front()));
  const std::string out = single(args.flags, "--out", "init-model");
  save_model(*model, out);
  // The generation defaults its config implies, as transformers' save_pretrained writes them.
  write_synced_file(out + "/" + kGenerationConfigFile, generation_config_from_hf_config(hf).dump(2) + "\n");
  fmt::print("{}", describe_model_dir(out));
  return 0;
}

namespace {

// log p(response | prompt) under `model`, summed over the response's tokens, for each row.
std::vector<double> response_logps(CausalLMImpl& model, const std::vector<TokenIds>& prompts,
                                   const std::vector<TokenIds>& responses) {
  c10::InferenceMode no_grad;
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) longest = std::max(longest, prompts[i].size() + responses[i].size());
  const auto rows = static_cast<int64_t>(prompts.size());
  at::Tensor ids = at::zeros({rows, static_cast<int64_t>(longest)}, at::kLong);
  at::Tensor mask = at::zeros({rows, static_cast<int64_t>(longest)}, at::kBool);
  auto id = ids.accessor<int64_t, 2>();
  auto scored = mask.accessor<bool, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const TokenIds& p = prompts[static_cast<size_t>(r)];
    const TokenIds& y = responses[static_cast<size_t>(r)];
    for (size_t t = 0; t < p.size(); ++t) id[r][static_cast<int64_t>(t)] = p[t];
    for (size_t t = 0; t < y.size(); ++t) {
      id[r][static_cast<int64_t>(p.size() + t)] = y[t];
      scored[r][static_cast<int64_t>(p.size() + t)] = true;
    }
  }
  const at::Tensor logps = model_sequence_logps(model, ids.to(model.device()), mask.to(model.device())).logps;
  const at::Tensor values = logps.to(at::kCPU, at::kDouble).contiguous();
  return {values.data_ptr<double>(), values.data_ptr<double>() + values.numel()};
}

struct MeanAndError {
  double mean = 0, standard_error = 0;
};

MeanAndError mean_and_error(const std::vector<double>& values) {
  MeanAndError out;
  const auto n = static_cast<double>(values.size());
  if (values.empty()) return out;
  for (const double v : values) out.mean += v / n;
  double squares = 0;
  for (const double v : values) squares += (v - out.mean) * (v - out.mean);
  out.standard_error = values.size() > 1 ? std::sqrt(squares / (n - 1) / n) : 0.0;
  return out;
}

}  // namespace

int cmd_score_synthetic(Session& session, const ParsedArgs& args) {
  auto number = [&](const std::string& name, double fallback) { return numeric_flag(args.flags, name, fallback, 0.0, false); };
  session.use_all_cpus();
  const std::string model_dir = single(args.flags, "--model", "score-synthetic");
  const bool with_reference = args.flags.count("--reference") > 0;
  const double temperature = number("--temperature", 1.0);
  // The estimate E_y~pi[log pi(y) - log ref(y)] holds only for samples of the policy's own distribution.
  if (with_reference && temperature != 1.0)
    fail("score-synthetic: --reference estimates the KL from the policy's own samples, so --temperature must be 1 "
         "(got {})", temperature);
  CausalLM model = load_model(model_dir, at::kFloat);
  model->eval();
  const auto pairs = read_preference_file(single(args.flags, "--data", "score-synthetic"), model->spec().vocab_size);
  std::vector<TokenIds> prompts;
  for (const auto& p : pairs) prompts.push_back(p.prompt);
  const auto new_tokens = static_cast<int64_t>(number("--max-new-tokens", 6));
  const auto responses = sample_responses(*model, prompts, new_tokens, temperature, static_cast<uint64_t>(number("--seed", 0)));
  std::vector<double> rewards;
  double chosen = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    rewards.push_back(synthetic_reward(pairs[i].prompt, responses[i]));
    chosen += synthetic_reward(pairs[i].prompt, pairs[i].chosen);
  }
  const MeanAndError reward = mean_and_error(rewards);
  const double n = static_cast<double>(std::max<size_t>(pairs.size(), 1));
  fmt::print("{}: mean ground-truth reward of sampled responses {:.4f} over {} prompts (the data's chosen: {:.4f})\n",
             model_dir, reward.mean, pairs.size(), chosen / n);
  nlohmann::json out = {{"model", model_dir}, {"prompts", pairs.size()}, {"reward", reward.mean},
                        {"reward_se", reward.standard_error}};
  if (with_reference) {
    const std::string reference_dir = single(args.flags, "--reference", "score-synthetic");
    CausalLM reference = load_model(reference_dir, at::kFloat);
    reference->eval();
    const std::vector<double> policy_logps = response_logps(*model, prompts, responses);
    const std::vector<double> reference_logps = response_logps(*reference, prompts, responses);
    std::vector<double> log_ratios;
    for (size_t i = 0; i < policy_logps.size(); ++i) log_ratios.push_back(policy_logps[i] - reference_logps[i]);
    const MeanAndError kl = mean_and_error(log_ratios);
    fmt::print("{}: sequence-level KL to {} estimated from its samples {:.4f} (standard error {:.4f})\n", model_dir,
               reference_dir, kl.mean, kl.standard_error);
    out["kl"] = kl.mean;
    out["kl_se"] = kl.standard_error;
  }
  if (args.flags.count("--json")) fmt::print("{}\n", out.dump());
  return 0;
}

}  // namespace dpo
