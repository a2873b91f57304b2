#include "dpo/train/progress.h"

#include <fmt/format.h>

#include "dpo/runtime/console.h"

namespace dpo {

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
  print_status_line(line, 120);
}

void print_eval_line(int64_t step, const std::map<std::string, double>& means) {
  fmt::print("eval at step {}: loss {:.4f}{}\n", step, means.at("loss"),
             means.count("rewards/accuracies") ? fmt::format(", accuracy {:.3f}", means.at("rewards/accuracies")) : "");
}

}  // namespace dpo
