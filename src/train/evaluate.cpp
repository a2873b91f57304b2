#include "dpo/train/evaluate.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dpo/data/batch_plan.h"
#include "dpo/data/collate.h"
#include "dpo/data/text_tokenization.h"
#include "dpo/dist/dist.h"
#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/loss/logps.h"
#include "dpo/model/precision.h"
#include "dpo/reference/reference_store.h"
#include "dpo/train/gathered_logps.h"

namespace dpo {

namespace {

// Metrics over every pair of `dataset`: each rank scores pairs rank, rank+W, ... (the reference side
// from `reference_logps(batch, policy_logps)`), the per-pair log-probs are gathered onto every rank,
// and the losses are computed over the whole set at once, so that the losses that read more than one
// pair (aot's sorts, the sft term's token mean) do not depend on the batch size or the ranks.
template <typename ReferenceLogps>
MetricSums evaluate_with(CausalLMImpl& policy, const PreferenceDataset& dataset, const LossOptions& loss,
                         EvalBatching batching, Communicator& communicator, EvalPairValues* per_pair,
                         ReferenceLogps&& reference_logps) {
  c10::InferenceMode no_grad;
  const bool with_reference = uses_reference(loss);
  const ResponseScoring scoring = response_scoring(loss);
  std::vector<int64_t> order(dataset.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  GatheredLogps gathered(order, dataset.max_more_rejected());
  for (const auto& indices : rank_eval_batches(static_cast<int64_t>(dataset.size()), batching.pairs, communicator.rank(),
                                               communicator.world_size())) {
    const PairBatch batch = collate_pairs(dataset, indices, batching.layout);
    const PairLogps pol = pair_logps(policy, batch, scoring);
    if (!with_reference) {
      gathered.add(indices, pol, nullptr);
      continue;
    }
    const PairLogps ref = reference_logps(batch, pol);
    gathered.add(indices, pol, &ref);
  }
  const PreferenceLogps all = gathered.all_reduce(communicator, with_reference);
  MetricSums sums;
  if (gathered.size() == 0) return sums;
  const at::Tensor losses = preference_losses(all, loss);
  sums.add(pair_metrics(all, losses, loss));
  if (per_pair) *per_pair = {all, losses};
  return sums;
}

}  // namespace

MetricSums evaluate_pairs(CausalLMImpl& policy, CausalLMImpl& reference, const PreferenceDataset& dataset,
                          const LossOptions& loss, EvalBatching batching, Communicator& communicator,
                          EvalPairValues* per_pair) {
  const bool same_model = &policy == &reference;
  return evaluate_with(policy, dataset, loss, batching, communicator, per_pair, [&](const PairBatch& batch, const PairLogps& pol) {
    // One model serving as both: its log-probs are the reference's exactly, so skip the second pass.
    return same_model ? pol : pair_logps(reference, batch, ResponseScoring{loss.ld_alpha});
  });
}

MetricSums evaluate_pairs(CausalLMImpl& policy, const ReferenceStore& reference, Split split,
                          const PreferenceDataset& dataset, const LossOptions& loss, EvalBatching batching,
                          Communicator& communicator, EvalPairValues* per_pair) {
  return evaluate_with(policy, dataset, loss, batching, communicator, per_pair, [&](const PairBatch& batch, const PairLogps&) {
    return reference.logps(split, batch.example_indices, policy.device(), batch.more_columns());
  });
}

// A ranked example's responses below rejected, best first (its real ones only).
static void ranked_fields(const PreferenceLogps& l, int64_t i, nlohmann::json& line) {
  nlohmann::json policy = nlohmann::json::array(), reference = nlohmann::json::array(), tokens = nlohmann::json::array();
  for (int64_t j = 0; j < l.policy_more.size(1); ++j) {
    const auto count = l.more_tokens[i][j].item<int64_t>();
    if (count == 0) break;
    policy.push_back(l.policy_more[i][j].item<double>());
    reference.push_back(l.reference_more.defined() ? nlohmann::json(l.reference_more[i][j].item<double>()) : nlohmann::json());
    tokens.push_back(count);
  }
  line["policy_more_rejected_logps"] = policy;
  line["reference_more_rejected_logps"] = reference;
  line["more_rejected_tokens"] = tokens;
}

// One JSON line per eval pair: its index, log-probs (the reference's: null when the loss reads
// none), scored token counts and loss, so that another implementation can be fed the same values.
std::string pair_lines(const EvalPairValues& pairs) {
  std::string out;
  if (!pairs.losses.defined()) return out;
  const auto value = [](const at::Tensor& t, int64_t i) -> nlohmann::json {
    if (!t.defined()) return nullptr;
    return t[i].item<double>();
  };
  const PreferenceLogps& l = pairs.logps;
  for (int64_t i = 0; i < pairs.losses.size(0); ++i) {
    nlohmann::json line = {{"index", i},
                                 {"policy_chosen_logps", value(l.policy_chosen, i)},
                                 {"policy_rejected_logps", value(l.policy_rejected, i)},
                                 {"reference_chosen_logps", value(l.reference_chosen, i)},
                                 {"reference_rejected_logps", value(l.reference_rejected, i)},
                                 {"chosen_tokens", l.chosen_tokens[i].item<int64_t>()},
                                 {"rejected_tokens", l.rejected_tokens[i].item<int64_t>()},
                                 {"loss", pairs.losses[i].item<double>()}};
    if (l.policy_more.defined()) ranked_fields(l, i, line);
    out += line.dump() + "\n";
  }
  return out;
}

void require_loss_reads_data(const LossOptions& loss, const char* key, const PreferenceDataset& dataset) {
  const DataSummary& s = dataset.summary();
  if (s.ranked > 0 && !ranks_responses(loss))
    fail("{}: {} has {} ranked records (up to {} responses), but loss.type {} compares a chosen and a rejected "
         "response: set loss.type plackett_luce (the DPO paper's ranking loss), or give pairs", key, dataset.path(),
         s.ranked, s.max_responses, loss.type);
}

void note_reference_unused(const Config& config, Communicator& communicator) {
  if (communicator.rank() != 0) return;
  fmt::print("loss.type {} does not use a reference: the reference model is not loaded{}\n", config.loss.type,
             config.reference.logps_path.empty() ? ""
                                                 : fmt::format(" and {} (reference.logps_path) is not opened",
                                                               config.reference.logps_path));
}

std::map<std::string, double> run_eval(const Config& config, Communicator& communicator, at::Device device) {
  if (config.data.eval.empty()) fail("data.eval: dpo eval needs an evaluation dataset (set data.eval)");
  const Precision precision = precision_of(config);
  require_precision_available(precision, config.model.device);
  const bool with_reference = uses_reference(config.loss);
  if (!with_reference) note_reference_unused(config, communicator);

  const bool precomputed = with_reference && !config.reference.logps_path.empty();
  // With precomputed reference log-probs the reference model is never loaded.
  std::optional<ReferenceStore> store;
  if (precomputed) store = ReferenceStore::open(config, /*check_train=*/false, /*check_eval=*/true, communicator);
  if (store) require_same_reference_on_all_ranks(communicator, *store);
  CausalLM policy = load_model(config.model.policy, precision, device.str());
  policy->eval();
  require_same_weights_on_all_ranks(communicator, "model.policy", config.model.policy, policy->parameters());
  CausalLM reference = policy;
  if (with_reference && !precomputed && !std::filesystem::equivalent(config.model.reference, config.model.policy)) {
    reference = load_model(config.model.reference, precision, device.str());
    reference->eval();
    require_same_weights_on_all_ranks(communicator, "model.reference", config.model.reference, reference->parameters());
  }
  const PreferenceDataset dataset =
      load_preference_data("data.eval", config.data.eval, config, policy->spec().vocab_size);
  fmt::print("{}\n", dataset.summary_line());
  require_same_dataset_on_all_ranks(communicator, "data.eval", dataset);
  require_loss_reads_data(config.loss, "data.eval", dataset);
  if (store) {
    store->require_examples(Split::Eval, dataset);
    fmt::print("reference log-probs from {}\n", store->path());
  }

  // Said once the inputs are known good, so that an input error stays the only line.
  if (with_reference && !precomputed && communicator.rank() == 0 &&
      std::filesystem::equivalent(config.model.reference, config.model.policy))
    fmt::print(stderr, "dpo: warning: model.reference is model.policy itself ({}): every reward is 0, so the loss is "
               "its value at zero margins (ln 2 for sigmoid); set model.reference to the model the policy was trained "
               "from, or reference.logps_path\n", config.model.policy);
  EvalPairValues per_pair;
  const int64_t batch = config.train.micro_batch_size;
  const MetricSums sums =
      store ? evaluate_pairs(*policy, *store, Split::Eval, dataset, config.loss, batch, communicator, &per_pair)
            : evaluate_pairs(*policy, *reference, dataset, config.loss, batch, communicator, &per_pair);
  std::map<std::string, double> means = sums.means();

  means["pairs"] = static_cast<double>(sums.pairs());
  if (communicator.rank() != 0) return means;
  nlohmann::json out = nlohmann::json::object();
  for (const auto& name : MetricSums::metric_names(config.loss)) out[name] = means.at(name);
  make_directories(config.run.output_dir);
  write_file_durably((std::filesystem::path(config.run.output_dir) / "eval_metrics.json").string(), out.dump(2) + "\n");
  write_file_durably((std::filesystem::path(config.run.output_dir) / "eval_pairs.jsonl").string(), pair_lines(per_pair));
  return means;
}

}  // namespace dpo
