// A training run's TensorBoard view: rank 0 of train and sft writes an event file into
// `<run.output_dir>/tensorboard/` (watch/event_file.h) with every metric it writes to
// metrics.jsonl, under HF Trainer's grouping: `train/<name>` for a logged step's metrics (and
// `train/epoch`), `eval/<name>` for an evaluation's (metrics.jsonl's `eval_<name>`); and the
// resolved config as the text `config`. Off with run.tensorboard: false.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "dpo/config/config.h"
#include "dpo/watch/event_file.h"

namespace dpo {

class TensorBoardLog {
 public:
  // Writes nothing unless `writer` (rank 0) and run.tensorboard. Opens a new event file; a run
  // resumed from `resumed_step` > 0 first writes a SessionLog START at resumed_step + 1, so that
  // TensorBoard drops the interrupted run's points after the checkpoint, as MetricsLog drops its
  // lines: the curves then equal an uninterrupted run's. Then the config text at `resumed_step`.
  TensorBoardLog(const Config& config, int64_t resumed_step, bool writer);
  void log_step(int64_t step, double epoch, const std::map<std::string, double>& metrics) const;
  void log_eval(int64_t step, const std::map<std::string, double>& means) const;

 private:
  std::optional<EventFileWriter> events_;
};

// `<output_dir>/tensorboard`: what `tensorboard --logdir` is pointed at.
std::string tensorboard_dir(const std::string& output_dir);

}  // namespace dpo
