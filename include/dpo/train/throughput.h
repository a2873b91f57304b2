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

// Peak resident memory of this process (CPU) or peak allocated device memory (CUDA), in MiB:
// since the last reset_peak_memory, or since the process started.
double peak_memory_mib(const std::string& device);
// Starts a new peak from what is resident now, so that a phase (bench's timed steps) reports its
// own peak. On CUDA: the caching allocator's peak statistics. On the CPU: free heap pages go back to the kernel first (malloc_trim), then Linux's
// /proc/self/clear_refs resets the high-water mark (VmHWM). False where that is not possible
// (peak_memory_mib then keeps counting from the process start).
bool reset_peak_memory(const std::string& device);

}  // namespace dpo
