#include "dpo/train/progress.h"

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "dpo/runtime/runtime.h"

namespace dpo {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

void TrainingProgress::print(int64_t step, const std::map<std::string, double>& m) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done_here = step - first_step_;
  const double eta =
      done_here > 0 ? elapsed / static_cast<double>(done_here) * static_cast<double>(total_steps_ - step) : 0.0;
  std::string line = fmt::format("step {}/{} | loss {:.4f}", step, total_steps_, m.at("loss"));
  if (m.count("rewards/accuracies"))
    line += fmt::format(" | acc {:.3f} | margin {:.4f}", m.at("rewards/accuracies"), m.at("rewards/margins"));
  line += fmt::format(" | grad {:.3g} | lr {:.3g} | {:.0f} tok/s | ETA {}", m.at("grad_norm"), m.at("lr"),
                      m.at("tokens_per_s"), format_duration(eta));
  // A terminal gets one line rewritten in place; a log file gets one line per logged step.
  if (stdout_is_interactive()) fmt::print("\r{:<120}", line);
  else fmt::print("{}\n", line);
  std::fflush(stdout);
}

void TrainingProgress::end_line() {
  if (stdout_is_interactive()) fmt::print("\n");
}

void print_eval_line(int64_t step, const std::map<std::string, double>& means) {
  fmt::print("eval at step {}: loss {:.4f}{}\n", step, means.at("loss"),
             means.count("rewards/accuracies") ? fmt::format(", accuracy {:.3f}", means.at("rewards/accuracies")) : "");
}

}  // namespace dpo
