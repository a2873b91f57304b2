// Where the time of a training step goes: its wall time and the part of it spent in matrix
// products, from libtorch's profiler, for `dpo bench`'s "outside matrix products" share.
#pragma once
#include <functional>

namespace dpo {

struct StepProfile {
  double seconds = 0;         // wall time of the profiled step (profiler overhead included)
  double matmul_seconds = 0;  // in aten mm/addmm/bmm/baddbmm (outermost ones; CPU time of the calling thread)
};

// Runs `step` once under libtorch's CPU profiler. On CUDA the products' CPU time is only their
// launch, so this measures CPU steps only.
StepProfile profile_step(const std::function<void()>& step);

}  // namespace dpo
