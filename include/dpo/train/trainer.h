// The training loop shared by `dpo train` (DPO) and `dpo sft` (maximum likelihood on
// prompt+chosen with the prompt masked): batch plan, micro-batch accumulation, clipping, the
// optimizer step and schedule, metrics.jsonl and the progress line, periodic eval, checkpoints and
// resume. The objectives differ only in what one micro-batch computes (objective.h).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include <c10/core/Device.h>

#include "dpo/config/config.h"

namespace dpo {

enum class Objective { Dpo, Sft };

struct TrainSummary {
  int64_t steps = 0;            // optimizer steps completed in total
  int64_t resumed_from = 0;     // step of the checkpoint resumed from (0 = fresh start)
  int64_t skipped_steps = 0;    // non-finite steps skipped (train.skip_nonfinite)
  bool preempted = false;       // stopped early on SIGTERM/SIGUSR1 after saving a checkpoint (preemption.h)
  std::string final_model_dir;  // <output_dir>/final: a Hugging Face directory (not written when preempted)
  std::map<std::string, double> last_metrics;
};

class Communicator;

// Called after each micro-batch's backward with the step being computed (1-based) and the
// micro-batch's index in it; for tests (e.g. a stop signal in the middle of a step).
using MicroBatchHook = std::function<void(int64_t step, int64_t micro_batch)>;

// Every rank of `communicator` calls this with the same config: each takes its share of every
// global batch, gradients and metric sums are summed across ranks, rank 0 writes metrics and
// checkpoints. The models live on `device` (the session's: cpu or this rank's cuda:N). The
// overload without a communicator runs alone on model.device. A stop signal (preemption.h) is
// honoured after a step and between the micro-batches of one (that step is then abandoned): every
// rank saves the last completed step and returns with `preempted` set.
TrainSummary run_training(const Config& config, Objective objective, Communicator& communicator, at::Device device,
                          MicroBatchHook after_micro_batch = {});
TrainSummary run_training(const Config& config, Objective objective);

}  // namespace dpo
