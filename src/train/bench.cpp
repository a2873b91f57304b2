#include "dpo/train/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include "dpo/data/collate.h"
#include "dpo/dist/dist.h"
#include "dpo/dist/grad_buckets.h"
#include "dpo/error.h"
#include "dpo/loss/logps.h"
#include "dpo/loss/loss.h"
#include "dpo/model/model.h"
#include "dpo/model/precision.h"
#include "dpo/model/tiled_attention.h"
#include "dpo/kernels/float_matmul.h"
#include "dpo/runtime/runtime.h"
#include "dpo/train/optimization.h"
#include "dpo/train/throughput.h"

namespace dpo {
namespace {

// `pairs` synthetic pairs, ids in [1, vocab): prompts of `prompt_len` tokens and responses of
// `seq_len - prompt_len`, each length drawn uniformly from [(1 - spread) x, x] when spread > 0 (real
// data's lengths vary, which is what padding costs).
PreferenceDataset synthetic_pairs(int64_t pairs, int64_t seq_len, int64_t prompt_len, double spread, int64_t vocab,
                                  uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto length = [&](int64_t most) {
    const auto least = std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1.0 - spread) * static_cast<double>(most))));
    return least >= most ? most : at::randint(least, most + 1, {1}, generator, at::kLong).item<int64_t>();
  };
  const auto tokens = [&](int64_t count) {
    const at::Tensor ids = at::randint(1, vocab, {count}, generator, at::kLong).contiguous();
    return TokenIds(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + count);
  };
  std::vector<RawPreferencePair> raw;
  for (int64_t i = 0; i < pairs; ++i) {
    RawPreferencePair pair;
    pair.prompt = tokens(length(prompt_len));
    pair.chosen = tokens(length(seq_len - prompt_len));
    pair.rejected = tokens(length(seq_len - prompt_len));
    raw.push_back(std::move(pair));
  }
  TruncationRule keep_all;
  keep_all.max_length = keep_all.max_prompt_length = seq_len;
  return PreferenceDataset::from_pairs("bench", std::move(raw), keep_all, "synthetic", {});
}

std::string architecture_name(const ModelSpec& spec) {
  if (spec.hf_config.contains("model_type") && spec.hf_config["model_type"].is_string())
    return spec.hf_config["model_type"].get<std::string>();
  return spec.arch == Architecture::GPT2 ? "gpt2" : "llama";
}

}  // namespace

BenchResult run_bench(const Config& config, const BenchOptions& options, at::Device placement) {
  const TrainOptions& train = config.train;
  const int64_t seq_len = options.seq_len > 0 ? options.seq_len : config.data.max_length;
  if (seq_len < 2) fail("bench: sequence length must be at least 2 (a prompt and a response token), got {}", seq_len);
  const int64_t prompt_len = options.prompt_len > 0 ? options.prompt_len : seq_len / 2;
  if (prompt_len >= seq_len) fail("bench: --prompt-len {} leaves no response in rows of {} tokens", prompt_len, seq_len);
  if (options.length_spread < 0 || options.length_spread >= 1)
    fail("bench: --length-spread must be in [0, 1), got {}", options.length_spread);
  if (options.warmup_steps < 0) fail("bench: warm-up steps must be >= 0, got {}", options.warmup_steps);
  if (options.timed_steps < 1) fail("bench: timed steps must be >= 1, got {}", options.timed_steps);
  if (train.micro_batch_size <= 0 || train.global_batch_size % train.micro_batch_size != 0)
    fail("train.global_batch_size ({}) must be a multiple of train.micro_batch_size ({})", train.global_batch_size,
         train.micro_batch_size);

  const std::string& device = config.model.device;
  const Precision precision = precision_of(config);
  require_precision_available(precision, device);
  CausalLM model = load_model(config.model.policy, precision, placement.str());
  model->train();
  model->set_gradient_checkpointing(train.gradient_checkpointing);
  const ModelSpec& spec = model->spec();
  if (spec.max_position_embeddings > 0 && seq_len > spec.max_position_embeddings)
    fail("bench: sequence length {} exceeds the model's max_position_embeddings {} ({})", seq_len,
         spec.max_position_embeddings, config.model.policy);

  const std::vector<at::Tensor> parameters = model->parameters();
  std::unique_ptr<torch::optim::Optimizer> optimizer = make_optimizer(train, parameters);
  const int64_t accumulation = train.global_batch_size / train.micro_batch_size;
  const PreferenceDataset pairs = synthetic_pairs(train.micro_batch_size, seq_len, prompt_len, options.length_spread,
                                                  spec.vocab_size, static_cast<uint64_t>(config.run.seed));
  std::vector<int64_t> indices(static_cast<size_t>(train.micro_batch_size));
  std::iota(indices.begin(), indices.end(), int64_t{0});
  const PairBatch batch = collate_pairs(pairs, indices, pair_layout_of(train));
  // The policy step only, as in training with precomputed reference log-probs: the reference is
  // a constant (zeros here), so no reference forward is timed. The loss's scoring (LD-DPO's
  // weighting, unlikelihood's sums, WPO's weights) and the gradients are the trainer's on one rank.
  const ResponseScoring scoring = response_scoring(config.loss);
  PairLogps reference;
  reference.chosen = reference.rejected = at::zeros({train.micro_batch_size}, at::kFloat);
  BatchTotals totals{static_cast<double>(train.global_batch_size), 0.0};
  for (const int64_t i : indices)
    totals.chosen_tokens += static_cast<double>(accumulation) *
                            static_cast<double>(scored_token_count(pairs[static_cast<size_t>(i)].prompt.size(),
                                                                   pairs[static_cast<size_t>(i)].chosen.size()));
  const auto losses_of = [&](const PairLogps& policy, int64_t first, int64_t count) {
    const PairLogps zeros = pairs_of(reference, first, count);
    return preference_losses(preference_logps(policy, &zeros), config.loss, totals);
  };
  const std::unique_ptr<Communicator> single = make_single_process_communicator();
  GradientBuckets buckets(parameters, BucketLimits{int64_t{1} << 20, config.dist.bucket_mb << 20});

  // A loss that couples the pairs (aot's sorts) reads the micro-batch's at once: no pair chunks.
  const int64_t chunk_logits = couples_pairs(config.loss) ? 0 : kPairChunkLogits;
  bool head_recomputed = false;
  auto step = [&] {
    buckets.zero();
    for (int64_t micro = 0; micro < accumulation; ++micro) {
      // Mean over the global batch, as in training.
      head_recomputed = !pair_loss_backward(*model, batch, scoring, losses_of,
                                            1.0 / static_cast<double>(train.global_batch_size), chunk_logits)
                             .head_gradient_in_forward;
    }
    buckets.all_reduce_sum(*single);
    clip_grad_norm(parameters, train.max_grad_norm);
    optimizer->step();
  };

  for (int64_t i = 0; i < options.warmup_steps; ++i) step();
  synchronize(device);
  reset_peak_memory(device);  // the peak reported is that of the timed steps
  const int64_t primitive_products_before = bfloat16_primitive_products();
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.timed_steps; ++i) step();
  synchronize(device);
  const int64_t primitive_products = bfloat16_primitive_products() - primitive_products_before;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double peak_memory = peak_memory_mib(device);  // before the matmul gauge below allocates
  // One more step with the matmul clock running (CPU only: on CUDA the CPU sees launches).
  double step_seconds = 0, matmul_seconds = -1;
  if (device != "cuda") {
    start_matmul_clock();
    const auto clocked_start = std::chrono::steady_clock::now();
    step();
    step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - clocked_start).count();
    matmul_seconds = matmul_clock_seconds();
  }

  BenchResult result;
  result.device = device;
  result.dtype = precision.describe();
  result.float_matmuls = route_float_matmuls();
  result.bfloat16_into_float32 = device != "cuda" && precision.matmul == at::kBFloat16 &&
                                 precision.weights == at::kFloat && bfloat16_products_in_float32();
  result.bfloat16_primitive = bfloat16_primitive_implementation();
  result.bfloat16_primitive_products =
      primitive_products / std::max<int64_t>(options.timed_steps, 1);
  result.huge_page_heap = heap_on_huge_pages();
  result.model_path = config.model.policy;
  result.architecture = architecture_name(spec);
  for (const at::Tensor& p : parameters) result.parameters += p.numel();
  result.threads = at::get_num_threads();
  result.micro_batch_size = train.micro_batch_size;
  result.accumulation_steps = accumulation;
  result.seq_len = seq_len;
  result.warmup_steps = options.warmup_steps;
  result.timed_steps = options.timed_steps;

  // As peers count them: prompt + chosen and prompt + rejected, no padding (the same micro-batch
  // `accumulation` times).
  int64_t pair_tokens = 0;
  for (size_t i = 0; i < pairs.size(); ++i)
    pair_tokens += static_cast<int64_t>(2 * pairs[i].prompt.size() + pairs[i].chosen.size() + pairs[i].rejected.size());
  result.tokens_per_step = accumulation * pair_tokens;
  result.prompt_len = prompt_len;
  result.length_spread = options.length_spread;
  result.prefix_sharing = train.prefix_sharing;
  result.row_slots = batch.input_ids.numel();
  result.padded_slots = batch.padded_tokens;
  result.step_seconds = elapsed / static_cast<double>(options.timed_steps);
  result.tokens_per_s = static_cast<double>(result.tokens_per_step) / result.step_seconds;
  // Forward + backward ≈ 3x the forward FLOPs (the backward computes gradients with respect to
  // both activations and weights, each as costly as the forward).
  const double mean_sequence = static_cast<double>(pair_tokens) / (2.0 * static_cast<double>(pairs.size()));
  result.achieved_flops = 3.0 * model->forward_flops_per_token(std::lround(mean_sequence)) * result.tokens_per_s;
  // Measured after the steps, in the dtype of the model's matrix products, so that the fraction
  // compares like with like; on CUDA against the bf16 tensor-core peak (an 8192^3 product), as GPU
  // MFU is quoted.
  result.peak_flops = measure_matmul_peak_flops(device, device == "cuda" ? at::kBFloat16 : precision.matmul);
  result.mfu = result.achieved_flops / result.peak_flops;
  // FLOPs the step executes: every row slot (padding included) through the blocks (the last
  // block's MLP on scored tokens only), attention over the scores it computes (tiled attention:
  // the key spans each query tile reads; else whole rows, the scores' full square), the head on
  // scored tokens only, and its recomputation in backward where the step does not form its
  // gradient in forward (plus the blocks' with activation checkpointing).
  const double head = 2.0 * static_cast<double>(spec.hidden_size) * static_cast<double>(spec.vocab_size);
  const double blocks = model->forward_flops_per_token(0) - head;
  const auto rows = batch.input_ids.size(0), width = batch.input_ids.size(1);
  const double scores = takes_tiled_attention(precision.matmul, at::Device(device))
                            ? static_cast<double>(tiled_attention_scores(batch.layout, rows, width))
                            : static_cast<double>(rows * width * width);
  // forward_flops_per_token(n) - forward_flops_per_token(0): one token's attention over n keys.
  const double attention_per_score = model->forward_flops_per_token(1) - model->forward_flops_per_token(0);
  const auto slots = static_cast<double>(batch.input_ids.numel());
  const auto scored = static_cast<double>(batch.scored_source.numel());
  // The last block's MLP runs on the scored positions only (CausalLMImpl::hidden_states' keep).
  const double last_mlp = model->mlp_flops_per_token();
  const double block_pass = slots * blocks - (slots - scored) * last_mlp + scores * attention_per_score;
  // Where the head is recomputed, WPO's weights take one more forward product of it too (formed in
  // forward, they come from the logits at hand).
  const double head_passes = head_recomputed ? (scoring.wpo_weights ? 2.0 : 1.0) : 0.0;
  const double executed = 3.0 * (block_pass + scored * head) + head_passes * scored * head +
                          (train.gradient_checkpointing ? block_pass : 0.0);
  result.executed_flops = static_cast<double>(accumulation) * executed / result.step_seconds;
  result.executed_mfu = result.executed_flops / result.peak_flops;
  if (matmul_seconds >= 0 && step_seconds > 0) result.outside_matmul_share = 1.0 - matmul_seconds / step_seconds;
  result.peak_memory_mib = peak_memory;
  result.gradient_checkpointing = train.gradient_checkpointing;
  return result;
}

std::string format_bench_comparison(const std::string& key, const std::vector<std::string>& values,
                                    const std::vector<BenchResult>& results) {
  if (values.size() != results.size() || results.empty()) fail("bench: {} values but {} results", values.size(), results.size());
  size_t width = key.size() + 1;
  for (const std::string& value : values) width = std::max(width, key.size() + value.size() + 1);
  std::string out = fmt::format("comparison on the same shapes, in this run (speed-up and memory against {}={})\n",
                                key, values.front());
  out += fmt::format("{:<{}}  {:>12}  {:>10}  {:>8}  {:>7}  {:>8}  {:>8}  {:>12}  {:>8}\n", "variant", width, "tokens/s",
                     "step s", "speed-up", "MFU", "exec MFU", "outside", "peak MiB", "memory");
  const BenchResult& first = results.front();
  for (size_t i = 0; i < results.size(); ++i) {
    const BenchResult& r = results[i];
    const std::string memory =
        r.peak_memory_mib > 0 && first.peak_memory_mib > 0 ? fmt::format("{:.2f}x", r.peak_memory_mib / first.peak_memory_mib) : "-";
    const std::string outside = r.outside_matmul_share >= 0 ? fmt::format("{:.1f}%", 100 * r.outside_matmul_share) : "-";
    out += fmt::format("{:<{}}  {:>12.1f}  {:>10.4f}  {:>7.2f}x  {:>7.3f}  {:>8.3f}  {:>8}  {:>12.1f}  {:>8}\n",
                       key + "=" + values[i], width, r.tokens_per_s, r.step_seconds, r.tokens_per_s / first.tokens_per_s,
                       r.mfu, r.executed_mfu, outside, r.peak_memory_mib, memory);
  }
  return out;
}

std::string format_bench(const BenchResult& r) {
  std::string out;
  out += "bench: policy training steps on synthetic batches (reference log-probs taken as precomputed,\n"
         "       so no reference forward is timed)\n";
  out += fmt::format("model        {} ({}), {:.3f} M parameters\n", r.model_path, r.architecture,
                     static_cast<double>(r.parameters) / 1e6);
  out += fmt::format("device       {}, {}, {} intra-op threads{}{}{}\n", r.device, r.dtype, r.threads,
                     r.device == "cuda" ? "" : fmt::format(", float32 products on {}", r.float_matmuls),
                     r.bfloat16_into_float32 ? ", bfloat16 products with float32 results on oneDNN" : "",
                     r.bfloat16_primitive.empty() || r.bfloat16_primitive_products == 0
                         ? ""
                         : fmt::format(" ({} of a step's on its matmul primitive {})", r.bfloat16_primitive_products,
                                       r.bfloat16_primitive));
  out += fmt::format("batch        {} pairs x {} micro-steps = {} pairs, prompt {} + response {} tokens{}: {} tokens/step\n",
                     r.micro_batch_size, r.accumulation_steps, r.micro_batch_size * r.accumulation_steps, r.prompt_len,
                     r.seq_len - r.prompt_len,
                     r.length_spread > 0 ? fmt::format(" (each length drawn from [{:.0f}%, 100%] of that)", 100 * (1 - r.length_spread)) : "",
                     r.tokens_per_step);
  out += fmt::format("rows         {}, {} slots of which {:.1f}% padding\n",
                     r.prefix_sharing ? "prompt once, responses after it, pairs packed (train.prefix_sharing)"
                                      : "one right-padded row per response",
                     r.row_slots, r.row_slots > 0 ? 100.0 * static_cast<double>(r.padded_slots) / static_cast<double>(r.row_slots) : 0.0);
  out += fmt::format("step time    {:.4f} s (mean of {} steps after {} warm-up)\n", r.step_seconds, r.timed_steps,
                     r.warmup_steps);
  out += fmt::format("throughput   {:.1f} tokens/s\n", r.tokens_per_s);
  out += fmt::format("compute      {:.2f} GFLOP/s achieved (model FLOPs: 3 x forward of the counted tokens) of {:.2f} GFLOP/s matmul peak: MFU {:.3f}\n",
                     r.achieved_flops / 1e9, r.peak_flops / 1e9, r.mfu);
  out += fmt::format("executed     {:.2f} GFLOP/s (FLOPs actually run: row slots, the attention scores computed, last MLP and head on scored tokens, the head's recomputation and WPO's head pass where a step runs them): {:.3f} of the peak\n",
                     r.executed_flops / 1e9, r.executed_mfu);
  if (r.outside_matmul_share >= 0)
    out += fmt::format("outside      {:.1f}% of one more step is outside matrix products (aten mm/addmm/bmm/baddbmm, timed in their kernels)\n",
                       100.0 * r.outside_matmul_share);
  if (r.device != "cuda")
    out += fmt::format("heap         freed tensors kept in the process{}\n",
                       r.huge_page_heap ? ", on transparent huge pages (GLIBC_TUNABLES glibc.malloc.hugetlb=1)"
                                        : "; 4 KiB pages (no transparent huge pages asked for)");
  if (r.peak_memory_mib >= 0)
    out += fmt::format("peak memory  {:.1f} MiB ({})\n", r.peak_memory_mib,
                       r.device == "cuda" ? "allocated on the device" : "resident set of the process, timed steps");
  else
    out += "peak memory  unknown on this device\n";
  if (r.gradient_checkpointing)
    out += "activations  recomputed in backward, block by block (train.gradient_checkpointing)\n";
  return out;
}

}  // namespace dpo
