// `dpo bench`: times training steps (forward + backward + optimizer step of the DPO objective) on
// synthetic batches of the configured shapes, after warm-up, and reports tokens/s, step time and
// achieved FLOP/s as a fraction of the matmul peak measured on the same device in the same run.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "dpo/config/config.h"

namespace dpo {

struct BenchOptions {
  int64_t warmup_steps = 2;
  int64_t timed_steps = 5;
  int64_t seq_len = 0;          // 0: data.max_length
  int64_t prompt_len = 0;       // 0: half of seq_len
  double length_spread = 0.0;   // each length drawn from [(1 - spread) x, x] of its maximum
};

struct BenchResult {
  double tokens_per_s = 0, step_seconds = 0, achieved_flops = 0, peak_flops = 0, mfu = 0;
  double executed_flops = 0, executed_mfu = 0;  // FLOPs actually run per second, and over the peak
  double outside_matmul_share = -1;             // of one timed step (-1: not measured, e.g. on CUDA)
  int64_t tokens_per_step = 0;
  double peak_memory_mib = 0;  // -1: not known on this device
  std::string device, dtype;
  std::string float_matmuls;  // what float32 products run on (kernels/float_matmul.h)
  bool bfloat16_into_float32 = false;  // bf16-mixed's layers on oneDNN's float32-result GEMM
  std::string bfloat16_primitive;        // and its AMX matmul primitive's implementation, if taken
  int64_t bfloat16_primitive_products = 0;  // per timed step
  bool huge_page_heap = false;  // the heap on transparent huge pages (runtime/runtime.h)
  // What was measured, for the report.
  std::string model_path, architecture;
  int64_t parameters = 0;
  int threads = 0;  // intra-op
  int64_t micro_batch_size = 0, accumulation_steps = 0, seq_len = 0, warmup_steps = 0, timed_steps = 0;
  bool gradient_checkpointing = false;
  int64_t prompt_len = 0;
  double length_spread = 0;
  bool prefix_sharing = false;
  int64_t row_slots = 0, padded_slots = 0;  // of the micro-batch's collated rows  // achieved FLOPs do not count its recomputation (MFU, not HFU)
};

// Model from model.policy (a Hugging Face directory); micro-batches of train.micro_batch_size
// pairs, accumulated as train.global_batch_size says, all rows of length seq_len.
BenchResult run_bench(const Config& config, const BenchOptions& options, at::Device device);
std::string format_bench(const BenchResult& result);
// `dpo bench --compare KEY=V1,V2,...`: one line per value of KEY (each its own run_bench, in
// turn, in this process), with tokens/s, step time, MFU and peak memory, and speed-up and memory
// against the first value.
std::string format_bench_comparison(const std::string& key, const std::vector<std::string>& values,
                                    const std::vector<BenchResult>& results);

}  // namespace dpo
