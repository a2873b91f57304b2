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
#include "dpo/loss/logps.h"
#include "dpo/model/model.h"
#include "dpo/model/sampling.h"

namespace dpo {

int cmd_init_model(Session&, const ParsedArgs& args) {
  const Architecture arch = parse_architecture(single(args.flags, "--arch", "init-model"));
  nlohmann::json hf = default_hf_config(arch);
  for (const auto& kv : all_of(args.flags, "--set")) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail("--set {}: expected KEY=VALUE", kv);
    const std::string key = kv.substr(0, eq);
    if (!hf.contains(key)) {
      std::vector<std::string> keys;
      for (const auto& item : hf.items()) keys.push_back(item.key());
      const std::string guess = closest_match(key, keys);
      fail("--set {}: unknown config.json key '{}' for this architecture{}", kv, key,
           guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess));
    }
    hf[key] = json_scalar(kv.substr(eq + 1));
  }
  const ModelSpec spec = model_spec_from_hf_config(hf, "--set");
  const auto seed = static_cast<uint64_t>(integer_flag(args.flags, "--seed", 0, 0));
  CausalLM model = build_model(spec, seed);
  const auto dtype_flags = all_of(args.flags, "--dtype");
  if (!dtype_flags.empty()) model->to(parse_dtype(dtype_flags.front()));
  const std::string out = single(args.flags, "--out", "init-model");
  save_model(*model, out);
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
