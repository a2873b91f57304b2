#include "dpo/dist/session.h"

#include <cstdio>

#include <fmt/format.h>
#include <torch/cuda.h>
#ifdef DPO_TORCH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "dpo/config/config.h"
#include "dpo/error.h"
#include "dpo/runtime/runtime.h"

namespace dpo {

#ifdef DPO_WITH_NCCL
constexpr bool kNcclBuilt = true;
#else
constexpr bool kNcclBuilt = false;
#endif

int cuda_device_index(int local_rank, int visible_devices) {
  if (visible_devices < 1) fail("model.device is cuda but this process sees no CUDA device (CUDA_VISIBLE_DEVICES?)");
  if (local_rank < 0) fail("local rank {} is negative", local_rank);
  return local_rank % visible_devices;
}

std::string choose_tensor_backend(const std::string& device, int world_size, const std::string& backend,
                                  bool nccl_built) {
  const bool cuda = device == "cuda";
  if (backend == "mpi" && cuda)
    fail("dist.backend: mpi reduces CPU tensors, but model.device is cuda: use dist.backend nccl or auto");
  if (backend == "nccl" && !cuda) fail("dist.backend: nccl needs model.device cuda (got {})", device);
  if (!cuda) return "host";
  const bool wants_nccl = backend == "nccl" || world_size > 1;
  if (!wants_nccl) return "single";
  if (!nccl_built)
    fail("dist.backend: nccl is not available in this build (building it needs a CUDA libtorch and NCCL: see the "
         "README's section GPUs){}",
         backend == "auto" ? fmt::format("; auto chose it for model.device cuda on {} ranks", world_size) : "");
  return "nccl";
}

namespace {

// cpu, or the rank's GPU made libtorch's current device.
at::Device place_on_device(const std::string& device, int local_rank) {
  if (device != "cuda") return at::Device(at::kCPU);
  const int index = cuda_device_index(local_rank, static_cast<int>(torch::cuda::device_count()));
#ifdef DPO_TORCH_CUDA
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
#endif
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace

Communicator& Session::join_job(const std::string& command) {
  if (const std::string why = srun_without_mpi_reason(info().world_size); !why.empty()) fail("dpo {}: {}", command, why);
  host_ = make_host_communicator(runtime_);
  return *host_;
}

void Session::start_run(const Config& config, const std::string& command, bool exclusive) {
  const ProcessInfo& process = info();
  join_job(command);
  require_same_config(*host_, dump_config(config));
  if (exclusive && process.rank == 0) output_lock_ = std::make_unique<OutputLock>(config.run.output_dir, command);
  const std::string backend =
      choose_tensor_backend(config.model.device, process.world_size, config.dist.backend, kNcclBuilt);
  device_placement_ = place_on_device(config.model.device, process.local_rank);
  if (backend == "single") device_ = make_single_process_communicator();
#ifdef DPO_WITH_NCCL
  if (backend == "nccl") device_ = make_nccl_communicator(*host_, device_placement_.index());
#endif
  if (process.rank != 0 && !std::freopen("/dev/null", "w", stdout)) fail("cannot redirect stdout of rank {}", process.rank);
  if (process.rank == 0) write_resolved_config(config, command);
  const int threads = configure_threads(process.cores);
  fmt::print("dpo {}: {} precision ({} weights) on {}, {} rank(s) ({} backend), {} threads per rank\n", command,
             config.train.precision, config.model.dtype,
             device_placement_.str(), process.world_size, tensors().name(), threads);
}

Communicator& Session::host() {
  if (!host_) fail("session: the host communicator is used before join_job opened it");
  return *host_;
}

Communicator& Session::tensors() { return device_ ? *device_ : host(); }

int Session::use_all_cpus() { return configure_threads(); }

int Session::report_error(const std::string& message) const {
  if (runtime_.active() && info().world_size > 1) abort_job(message);
  fmt::print(stderr, "dpo: error: {}\n", message);
  return 1;
}

}  // namespace dpo
