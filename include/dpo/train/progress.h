// What a training run prints while it goes: the progress line with its ETA and the eval line (how
// a status line is printed, and the ETA's format, are runtime/console.h's). Rank 0 prints; the
// others call nothing here.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace dpo {

// "step 8/512 | loss 0.6931 | acc 0.500 | margin 0.0000 | grad 1.23 | lr 1e-06 | 5871 tok/s | ETA 1m02s"
// (acc and margin when the step's metrics have them), with the ETA extrapolated from the steps
// this process has run so far.
class TrainingProgress {
 public:
  TrainingProgress(int64_t first_step, int64_t total_steps)
      : first_step_(first_step), total_steps_(total_steps), start_(std::chrono::steady_clock::now()) {}
  // Prints the line of step `step` with its metrics (loss, grad_norm, lr, tokens_per_s at least):
  // rewritten in place on a terminal, one line per call in a log file.
  void print(int64_t step, const std::map<std::string, double>& metrics) const;

 private:
  int64_t first_step_, total_steps_;
  std::chrono::steady_clock::time_point start_;
};

// "eval at step 256: loss 0.6012, accuracy 0.730" (accuracy when `means` has it).
void print_eval_line(int64_t step, const std::map<std::string, double>& means);

}  // namespace dpo
