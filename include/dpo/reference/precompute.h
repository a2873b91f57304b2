// `dpo precompute-ref`: the reference model's log-probs of every pair, computed once into the
// reference file (reference_store.h), in parallel over the ranks, resumable after a stop or crash.
#pragma once
#include <cstdint>

#include <c10/core/Device.h>

#include "dpo/config/config.h"

namespace dpo {

class Communicator;

// `dpo precompute-ref`: every rank of `comm` scores its share (example i goes to rank i mod W) of
// data.train (and data.eval) with model.reference, rank 0 writes reference.logps_path. Progress
// is saved to `<logps_path>.partial`; a rerun with the same inputs continues from it.
struct PrecomputeSummary {
  int64_t examples = 0, eval_examples = 0;  // pairs in the file
  int64_t computed = 0;                     // pairs scored by this run (all ranks)
  int64_t resumed = 0;                      // pairs taken from a .partial file
  double seconds = 0;                       // scoring time (all ranks in parallel)
  bool preempted = false;                   // stopped on SIGTERM/SIGUSR1; the .partial file holds the progress
};
PrecomputeSummary precompute_reference(const Config& config, Communicator& comm, at::Device device);

}  // namespace dpo
