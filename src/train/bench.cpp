#include "dpo/train/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include "dpo/data/collate.h"
#include "dpo/error.h"
#include "dpo/loss/logps.h"
#include "dpo/loss/loss.h"
#include "dpo/model/model.h"
#include "dpo/model/precision.h"
#include "dpo/train/optimization.h"
#include "dpo/train/throughput.h"

namespace dpo {
namespace {

// `pairs` pairs whose rows are all `seq_len` tokens: a shared prompt of the first half, then a
// chosen (rows 0..B-1) or rejected (rows B..2B-1) response filling the rest. Ids in [1, vocab).
PairBatch synthetic_pair_batch(int64_t pairs, int64_t seq_len, int64_t vocab, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t prompt_len = seq_len / 2;
  PairBatch batch;
  batch.num_pairs = pairs;
  batch.input_ids = at::randint(1, vocab, {2 * pairs, seq_len}, generator, at::kLong);
  batch.input_ids.narrow(0, pairs, pairs).narrow(1, 0, prompt_len)
      .copy_(batch.input_ids.narrow(0, 0, pairs).narrow(1, 0, prompt_len));
  batch.response_mask = at::arange(seq_len).ge(prompt_len).unsqueeze(0).expand({2 * pairs, seq_len}).contiguous();
  for (int64_t i = 0; i < pairs; ++i) batch.example_indices.push_back(i);
  return batch;
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
  const PairBatch batch =
      synthetic_pair_batch(train.micro_batch_size, seq_len, spec.vocab_size, static_cast<uint64_t>(config.run.seed));
  // The policy step only, as in training with precomputed reference log-probs: the reference is
  // a constant (zeros here), so no reference forward is timed.
  const at::Tensor reference = at::zeros({train.micro_batch_size}, at::kFloat);

  auto step = [&] {
    for (int64_t micro = 0; micro < accumulation; ++micro) {
      const PairLogps policy = pair_logps(*model, batch);
      const PreferenceLogps logps{policy.chosen,        policy.rejected,       reference,
                                  reference,            policy.chosen_tokens,  policy.rejected_tokens};
      // Mean over the global batch, as in training.
      const at::Tensor loss = preference_losses(logps, config.loss).sum() / static_cast<double>(train.global_batch_size);
      loss.backward();
    }
    clip_grad_norm(parameters, train.max_grad_norm);
    optimizer->step();
    zero_grad_in_place(*optimizer);
  };

  for (int64_t i = 0; i < options.warmup_steps; ++i) step();
  synchronize(device);
  reset_peak_memory(device);  // the peak reported is that of the timed steps
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.timed_steps; ++i) step();
  synchronize(device);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double peak_memory = peak_memory_mib(device);  // before the matmul gauge below allocates

  BenchResult result;
  result.device = device;
  result.dtype = precision.describe();
  result.model_path = config.model.policy;
  result.architecture = architecture_name(spec);
  for (const at::Tensor& p : parameters) result.parameters += p.numel();
  result.threads = at::get_num_threads();
  result.micro_batch_size = train.micro_batch_size;
  result.accumulation_steps = accumulation;
  result.seq_len = seq_len;
  result.warmup_steps = options.warmup_steps;
  result.timed_steps = options.timed_steps;

  result.tokens_per_step = 2 * train.global_batch_size * seq_len;  // chosen and rejected rows
  result.step_seconds = elapsed / static_cast<double>(options.timed_steps);
  result.tokens_per_s = static_cast<double>(result.tokens_per_step) / result.step_seconds;
  // Forward + backward ≈ 3x the forward FLOPs (the backward computes gradients with respect to
  // both activations and weights, each as costly as the forward).
  result.achieved_flops = 3.0 * model->forward_flops_per_token(seq_len) * result.tokens_per_s;
  // Measured after the steps, in the dtype of the model's matrix products, so that the fraction
  // compares like with like; on CUDA against the bf16 tensor-core peak (an 8192^3 product), as GPU
  // MFU is quoted.
  result.peak_flops = measure_matmul_peak_flops(device, device == "cuda" ? at::kBFloat16 : precision.matmul);
  result.mfu = result.achieved_flops / result.peak_flops;
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
  out += fmt::format("{:<{}}  {:>12}  {:>10}  {:>8}  {:>7}  {:>12}  {:>8}\n", "variant", width, "tokens/s", "step s",
                     "speed-up", "MFU", "peak MiB", "memory");
  const BenchResult& first = results.front();
  for (size_t i = 0; i < results.size(); ++i) {
    const BenchResult& r = results[i];
    const std::string memory =
        r.peak_memory_mib > 0 && first.peak_memory_mib > 0 ? fmt::format("{:.2f}x", r.peak_memory_mib / first.peak_memory_mib) : "-";
    out += fmt::format("{:<{}}  {:>12.1f}  {:>10.4f}  {:>7.2f}x  {:>7.3f}  {:>12.1f}  {:>8}\n", key + "=" + values[i], width,
                       r.tokens_per_s, r.step_seconds, r.tokens_per_s / first.tokens_per_s, r.mfu, r.peak_memory_mib,
                       memory);
  }
  return out;
}

std::string format_bench(const BenchResult& r) {
  std::string out;
  out += "bench: policy training steps on synthetic batches (reference log-probs taken as precomputed,\n"
         "       so no reference forward is timed)\n";
  out += fmt::format("model        {} ({}), {:.3f} M parameters\n", r.model_path, r.architecture,
                     static_cast<double>(r.parameters) / 1e6);
  out += fmt::format("device       {}, {}, {} intra-op threads\n", r.device, r.dtype, r.threads);
  out += fmt::format("batch        {} pairs x {} micro-steps = {} pairs, rows of {} tokens: {} tokens/step\n",
                     r.micro_batch_size, r.accumulation_steps, r.micro_batch_size * r.accumulation_steps, r.seq_len,
                     r.tokens_per_step);
  out += fmt::format("step time    {:.4f} s (mean of {} steps after {} warm-up)\n", r.step_seconds, r.timed_steps,
                     r.warmup_steps);
  out += fmt::format("throughput   {:.1f} tokens/s\n", r.tokens_per_s);
  out += fmt::format("compute      {:.2f} GFLOP/s achieved (3 x forward) of {:.2f} GFLOP/s matmul peak: MFU {:.3f}\n",
                     r.achieved_flops / 1e9, r.peak_flops / 1e9, r.mfu);
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
