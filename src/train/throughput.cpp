#include "dpo/train/throughput.h"

#include <malloc.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <string>

#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>
#ifdef DPO_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "dpo/error.h"

namespace dpo {
void synchronize(const std::string& device) {
  if (device == "cuda") torch::cuda::synchronize();
}

double measure_matmul_peak_flops(const std::string& device, at::ScalarType dtype, double seconds) {
  if (device != "cpu" && device != "cuda") fail("matmul peak: unknown device '{}' (cpu | cuda)", device);
  c10::InferenceMode no_autograd;
  // Large enough to be compute-bound, small enough that one product stays well under a second
  // on a couple of CPU cores.
  const int64_t n = device == "cuda" ? 8192 : 2048;
  const auto options = at::TensorOptions().dtype(dtype).device(device == "cuda" ? at::kCUDA : at::kCPU);
  const at::Tensor a = at::randn({n, n}, options);
  const at::Tensor b = at::randn({n, n}, options);
  at::Tensor c = at::empty({n, n}, options);
  try {
    at::mm_out(c, a, b);  // warm-up: kernel selection, thread pools, lazy initialisation
    synchronize(device);
  } catch (const c10::Error& e) {
    fail("matmul peak: {} matmul is not available on {}: {}", c10::toString(dtype), device,
         e.what_without_backtrace());
  }

  // Launch several products between clock readings on CUDA so that the sync does not dominate.
  const int64_t per_reading = device == "cuda" ? 10 : 1;
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  int64_t reps = 0;
  double elapsed = 0;
  do {
    for (int64_t i = 0; i < per_reading; ++i) at::mm_out(c, a, b);
    synchronize(device);
    reps += per_reading;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  return 2.0 * static_cast<double>(n) * n * n * static_cast<double>(reps) / elapsed;
}

double peak_memory_mib(const std::string& device) {
  if (device == "cuda") {
#ifdef DPO_TORCH_CUDA
    // The caching allocator's peak of bytes allocated to tensors on the current device (the
    // session made it this rank's) since the last reset_peak_memory. Index 0 is
    // StatType::AGGREGATE, whose namespace moved between libtorch 1.13 and 2.x.
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);
#else
    return -1.0;  // a CPU-only libtorch cannot hold CUDA tensors
#endif
  }
  // VmHWM, not getrusage's ru_maxrss: only the former is reset by reset_peak_memory (and the
  // kernel also keeps in the latter the high-water mark it saw whenever a thread exited).
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // "VmHWM:  123 kB"
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports kibibytes
}

bool reset_peak_memory(const std::string& device) {
  if (device == "cuda") {
#ifdef DPO_TORCH_CUDA
    c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
    return true;
#else
    return false;  // a CPU-only libtorch cannot hold CUDA tensors
#endif
  }
#ifdef __GLIBC__
  malloc_trim(0);  // freed blocks still resident in the heap would otherwise count in the new peak
#endif
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";  // 5: reset the peak resident set size (proc(5))
  clear_refs.flush();
  return static_cast<bool>(clear_refs);
}

}  // namespace dpo
