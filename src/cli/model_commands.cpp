// The commands on models: init-model (a randomly initialised model in Hugging Face layout) and
// score-synthetic (a model's sampled responses scored by the synthetic task's known reward).
#include <algorithm>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/cli/commands.h"
#include "dpo/config/text_distance.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/error.h"
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

int cmd_score_synthetic(Session& session, const ParsedArgs& args) {
  auto number = [&](const std::string& name, double fallback) { return numeric_flag(args.flags, name, fallback, 0.0, false); };
  session.use_all_cpus();
  const std::string model_dir = single(args.flags, "--model", "score-synthetic");
  CausalLM model = load_model(model_dir, at::kFloat);
  model->eval();
  const auto pairs = read_preference_file(single(args.flags, "--data", "score-synthetic"), model->spec().vocab_size);
  std::vector<TokenIds> prompts;
  for (const auto& p : pairs) prompts.push_back(p.prompt);
  const auto new_tokens = static_cast<int64_t>(number("--max-new-tokens", 6));
  const auto responses = sample_responses(*model, prompts, new_tokens, number("--temperature", 1.0),
                                          static_cast<uint64_t>(number("--seed", 0)));
  double total = 0, chosen = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    total += synthetic_reward(pairs[i].prompt, responses[i]);
    chosen += synthetic_reward(pairs[i].prompt, pairs[i].chosen);
  }
  const double n = static_cast<double>(std::max<size_t>(pairs.size(), 1));
  fmt::print("{}: mean ground-truth reward of sampled responses {:.4f} over {} prompts (the data's chosen: {:.4f})\n",
             model_dir, total / n, pairs.size(), chosen / n);
  return 0;
}

}  // namespace dpo
