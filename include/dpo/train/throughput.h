// Speed gauges: the measured matrix-multiply peak of a device, peak memory, and the FLOPs of
// a training step, so that throughput is reported as tokens/s and as a fraction of that peak.
#pragma once
#include <cstdint>
#include <string>

#include <ATen/ATen.h>

namespace dpo {

// FLOP/s of a large square matmul in `dtype` on `device` ("cpu" | "cuda"), timed over about
// `seconds` after a warm-up.
double measure_matmul_peak_flops(const std::string& device, at::ScalarType dtype, double seconds = 0.5);

// Waits for the device's queued work (CUDA kernels run asynchronously: a clock reading means
// nothing until they finished); nothing to wait for on "cpu".
void synchronize(const std::string& device);

// Peak resident memory of this process (CPU) or peak allocated device memory (CUDA), in MiB.
double peak_memory_mib(const std::string& device);
// Starts a measured phase: on CUDA, peak_memory_mib reports the peak from here on.
void reset_peak_memory(const std::string& device);

}  // namespace dpo
