// The GPU path on a machine with a CUDA device (label "cuda": built only against a libtorch with
// CUDA, run by scripts/device_check.sh; scripts/check_cuda_sources.sh compiles it everywhere).
// Each compares the GPU with the CPU on the same inputs, to the rounding of the dtype.
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include "catch2_api.h"
#include <fmt/format.h>

#include "dpo/config/config.h"
#include "dpo/data/collate.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/dist/dist.h"
#include "dpo/dist/session.h"
#include "dpo/loss/logps.h"
#include "dpo/model/model.h"
#include "dpo/train/throughput.h"
#include "dpo/train/trainer.h"
#include "float_rounding.h"
#include "scratch_dir.h"
#include "tiny_llama.h"
#include "toy_run.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

// A tiny model and synthetic pairs on disk, and a training config on them for `device`.
// The toy run (toy_run.h) on `device`: SGD, whose update is linear in the gradient, so that CPU and
// GPU runs stay within the gradients' tolerance; 2 steps of 2 micro-batches; fp32 unless overridden.
struct GpuToy : toy::ToyRun {
  explicit GpuToy(const std::string& name) : toy::ToyRun(name, 16) {}
  dpo::Config config(const std::string& output, const std::string& device, std::vector<std::string> overrides = {}) const {
    overrides.insert(overrides.begin(), {"model.device=" + device, "train.micro_batch_size=4", "train.max_steps=2",
                                         "train.optimizer=sgd", "train.shuffle=false", "train.precision=fp32"});
    return toy::ToyRun::config(output, overrides);
  }
};

std::vector<at::Tensor> parameters_of(const fs::path& model_dir) {
  std::vector<at::Tensor> out;
  for (const auto& p : dpo::load_model(model_dir.string(), at::kFloat)->parameters()) out.push_back(p.detach().clone());
  return out;
}

}  // namespace

TEST_CASE("the session puts a cuda run on cuda:<local rank mod visible devices> and makes it current", "[cuda]") {
  GpuToy toy("cuda-session");
  dpo::Session session;
  session.start_run(toy.config("run", "cuda"), "train");
  const int expected = dpo::cuda_device_index(session.info().local_rank, c10::cuda::device_count());
  CHECK(session.device() == at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(expected)));
  CHECK(c10::cuda::current_device() == expected);
  // One GPU: the single-process communicator, no NCCL needed.
  CHECK(session.tensors().name() == "single");
}

TEST_CASE("a model's log-probs on cuda equal the CPU's to float32 rounding, and bfloat16's to its own", "[cuda]") {
  GpuToy toy("cuda-forward");
  const dpo::PreferenceDataset data =
      dpo::PreferenceDataset::load(toy.train_path.string(), dpo::TruncationRule{32, 16, dpo::TruncationMode::KeepEnd, dpo::ResponseBudget::Remaining}, 32);
  const dpo::PairBatch batch = dpo::collate_pairs(data, {0, 1, 2, 3});
  auto cpu = dpo::load_model(toy.model_dir.string(), at::kFloat, "cpu");
  auto gpu = dpo::load_model(toy.model_dir.string(), at::kFloat, "cuda:0");
  auto gpu_bf16 = dpo::load_model(toy.model_dir.string(), at::kBFloat16, "cuda:0");
  REQUIRE(gpu->device() == at::Device(at::kCUDA, 0));
  const dpo::PairLogps want = dpo::pair_logps(*cpu, batch);
  const dpo::PairLogps got = dpo::pair_logps(*gpu, batch);
  const dpo::PairLogps got_bf16 = dpo::pair_logps(*gpu_bf16, batch);
  CHECK(at::equal(got.chosen_tokens.cpu(), want.chosen_tokens));
  CHECK(at::allclose(got.chosen.cpu(), want.chosen, float_rounding::kForwardRelative, float_rounding::kForwardAbsolute));
  CHECK(at::allclose(got.rejected.cpu(), want.rejected, float_rounding::kForwardRelative,
                     float_rounding::kForwardAbsolute));
  // bfloat16 keeps 8 bits (4e-3 relative) per product; a sum of ~16 token log-probs of ~3.5 each
  // moves by a few 1e-2 at most, a wrongly scored token by ~3.
  CHECK(at::allclose(got_bf16.chosen.cpu(), want.chosen, 2e-2, 1e-1));
}

TEST_CASE("a DPO run on cuda gives the CPU run's parameters to float rounding, and reports its peak memory",
          "[cuda]") {
  GpuToy toy("cuda-train");
  auto alone = dpo::make_single_process_communicator();
  const dpo::Config on_cpu = toy.config("cpu", "cpu");
  const dpo::Config on_gpu = toy.config("gpu", "cuda");
  dpo::run_training(on_cpu, dpo::Objective::Dpo, *alone, at::kCPU);
  dpo::reset_peak_memory("cuda");
  const dpo::TrainSummary summary = dpo::run_training(on_gpu, dpo::Objective::Dpo, *alone, at::Device(at::kCUDA, 0));
  REQUIRE(summary.steps == 2);
  CHECK(summary.last_metrics.at("peak_memory_mib") > 0);
  const auto want = parameters_of(toy.dir.path / "cpu" / "final");
  const auto got = parameters_of(toy.dir.path / "gpu" / "final");
  REQUIRE(want.size() == got.size());
  for (size_t i = 0; i < want.size(); ++i)
    CHECK(float_rounding::normwise_relative_difference(got[i], want[i]) < float_rounding::kGradientRelative);
}

TEST_CASE("bf16-mixed on cuda: float32 master weights, step 1 loss ln 2, and the fp32 CPU run's parameters to "
          "bfloat16 rounding", "[cuda][precision]") {
  GpuToy toy("cuda-mixed");
  auto alone = dpo::make_single_process_communicator();
  dpo::run_training(toy.config("cpu", "cpu"), dpo::Objective::Dpo, *alone, at::kCPU);
  const dpo::TrainSummary summary = dpo::run_training(toy.config("gpu", "cuda", {"train.precision=bf16-mixed"}),
                                                      dpo::Objective::Dpo, *alone, at::Device(at::kCUDA, 0));
  REQUIRE(summary.steps == 2);
  const auto initial = parameters_of(toy.model_dir);
  const auto want = parameters_of(toy.dir.path / "cpu" / "final");
  const auto got = parameters_of(toy.dir.path / "gpu" / "final");
  REQUIRE(want.size() == got.size());
  for (size_t i = 0; i < want.size(); ++i)  // SGD: the update inherits the gradients' bfloat16 rounding
    CHECK(float_rounding::normwise_relative_difference(got[i] - initial[i], want[i] - initial[i]) < 5e-2);
  for (const auto& p : dpo::load_model((toy.dir.path / "gpu" / "final").string(), at::kFloat)->parameters())
    CHECK(p.scalar_type() == at::kFloat);
}

TEST_CASE("the CUDA matmul peak is measured on the current device", "[cuda]") {
  // An H100/H200 does ~800 TFLOP/s in bf16, an A100 ~300: anything above 10 TFLOP/s is a GPU.
  CHECK(dpo::measure_matmul_peak_flops("cuda", at::kBFloat16, 0.2) > 1e13);
}

#ifdef DPO_WITH_NCCL
TEST_CASE("NCCL on one rank sums on libtorch's current stream, after the work queued before it", "[cuda][nccl]") {
  auto bootstrap = dpo::make_single_process_communicator();
  auto nccl = dpo::make_nccl_communicator(*bootstrap, 0);
  CHECK(nccl->supports_overlap());
  for (const auto dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
    const auto options = at::TensorOptions().dtype(dtype).device(at::kCUDA, 0);
    // A long queue of work on the current stream just before: the all-reduce must wait for it.
    // Integers up to 256 are exact in every dtype here, bfloat16 included.
    at::Tensor big = at::ones({4096, 4096}, options.dtype(at::kFloat));
    for (int i = 0; i < 20; ++i) big = big.mm(big) / 4096.0;
    at::Tensor values = (big.sum() / big.numel() * at::arange(1, 257, options.dtype(at::kFloat))).to(dtype);
    auto pending = nccl->start_all_reduce_sum(values);
    pending->wait();
    CHECK(at::equal(values.cpu(), at::arange(1, 257, at::TensorOptions().dtype(dtype))));
    c10::cuda::getCurrentCUDAStream(0).synchronize();
    CHECK(pending->test());
  }
  at::Tensor on_cpu = at::ones({4});
  REQUIRE_THROWS_WITH(nccl->all_reduce_sum(on_cpu), Contains("not a CUDA tensor"));
  at::Tensor flags = at::ones({4}, at::TensorOptions().dtype(at::kBool).device(at::kCUDA, 0));
  REQUIRE_THROWS_WITH(nccl->all_reduce_sum(flags), Contains("unsupported dtype Bool"));
}
#endif
