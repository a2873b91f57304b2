#include "dpo/train/step_profile.h"

#include <chrono>
#include <cstring>
#include <vector>

#include <torch/csrc/autograd/profiler_legacy.h>

namespace dpo {
namespace {

bool is_matrix_product(const char* name) {
  for (const char* product : {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::baddbmm_"})
    if (std::strcmp(name, product) == 0) return true;
  return false;
}

}  // namespace

StepProfile profile_step(const std::function<void()>& step) {
  namespace profiler = torch::autograd::profiler;
  profiler::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
  const auto start = std::chrono::steady_clock::now();
  step();
  StepProfile out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const profiler::thread_event_lists threads = profiler::disableProfilerLegacy();
  // Ranges nest as a stack per thread; a product inside another (matmul's mm) counts once.
  for (const auto& events : threads) {
    std::vector<const profiler::LegacyEvent*> open;
    int64_t products_open = 0;
    for (const profiler::LegacyEvent& event : events) {
      if (event.kind() == profiler::EventKind::PushRange) {
        open.push_back(&event);
        if (is_matrix_product(event.name())) ++products_open;
      } else if (event.kind() == profiler::EventKind::PopRange && !open.empty()) {
        const profiler::LegacyEvent* begin = open.back();
        open.pop_back();
        if (!is_matrix_product(begin->name())) continue;
        if (--products_open == 0) out.matmul_seconds += begin->cpuElapsedUs(event) * 1e-6;
      }
    }
  }
  return out;
}

}  // namespace dpo
