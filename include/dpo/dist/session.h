// The session of one dpo process: MPI's lifetime, the communicators of the job, and the set-up a
// command does before its work (refusing an srun step that started no MPI job, checking that
// every rank runs the same config, choosing the tensor backend, quieting stdout on ranks other
// than 0, writing the resolved config, setting the intra-op threads), and how an error ends the
// process. Every command of the CLI runs inside one; the CLI itself only parses and dispatches.
// It does not own the thread environment (ensure_thread_environment, run first in main) or the
// stop-signal flag (preemption.h).
#pragma once
#include <memory>
#include <string>

#include "dpo/dist/dist.h"
#include "dpo/io/output_lock.h"

namespace dpo {

struct Config;

// Which CUDA device a rank uses: its local rank modulo the devices it sees, so that N ranks per
// node take one GPU each, and a task that sees a single GPU (CUDA_VISIBLE_DEVICES set per task,
// as srun --gpus-per-task does) takes device 0. dpo::Error when no device is visible.
int cuda_device_index(int local_rank, int visible_devices);

// The communicator for tensors, from model.device ("cpu" | "cuda"), the world size and
// dist.backend ("auto" | "mpi" | "nccl"): "host" (the host communicator: MPI, or the single
// process), "single" (one GPU: no collective, so no NCCL needed) or "nccl". Refused with a
// dpo::Error naming dist.backend, before any model is loaded: mpi with cuda (MPI reduces CPU
// tensors), nccl with cpu, and nccl (asked for, or auto with several GPUs) when `nccl_built` is
// false.
std::string choose_tensor_backend(const std::string& device, int world_size, const std::string& backend,
                                  bool nccl_built);

class Session {
 public:
  // Starts MPI when a launcher (mpirun, mpiexec, srun) started this process; else runs alone.
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const ProcessInfo& info() const { return runtime_.info(); }

  // Refuses (dpo::Error "dpo COMMAND: ...") a Slurm step of several tasks that started no MPI
  // job, then opens the host communicator: MPI over the job, or the single-process one.
  Communicator& join_job(const std::string& command);

  // The set-up of a command that runs `config`, in this order: join_job, every rank's resolved
  // config equal to rank 0's, the rank's device and the tensor communicator of dist.backend
  // (choose_tensor_backend), stdout of ranks other than 0 to /dev/null (their errors still reach stderr), the
  // resolved config written by rank 0, the intra-op threads set to the rank's share of its node,
  // and the line "dpo COMMAND: PRECISION precision (DTYPE weights) on DEVICE, N rank(s) (B backend), T threads
  // per rank". With `exclusive` (commands that write checkpoints and metrics), rank 0 first takes
  // run.output_dir's lock (io/output_lock.h), held until the session ends.
  void start_run(const Config& config, const std::string& command, bool exclusive = false);

  // Host values (and CPU tensors) across the job; join_job opens it.
  Communicator& host();
  // Tensors across the job: NCCL when start_run chose it, the single-process one for one GPU,
  // else the host communicator.
  Communicator& tensors();
  // Where this rank's model and tensors live, decided by start_run: cpu, or
  // cuda:<cuda_device_index>, which start_run also makes libtorch's current CUDA device (so that
  // streams, NCCL and a plain "cuda" land there too). The config keeps "cuda": configs are
  // compared across ranks, the index differs between them.
  at::Device device() const { return device_placement_; }

  // Intra-op threads on every CPU of the affinity mask, for a command that ignores the job's rank
  // layout (score-synthetic); returns the count.
  int use_all_cpus();

  // One line "dpo: error: MESSAGE" on stderr, returning the exit code 1. With several ranks the
  // others may be waiting in a collective for this one, so the whole job is aborted instead.
  int report_error(const std::string& message) const;

 private:
  // Destroyed in reverse: the NCCL communicator uses the host one, and both need MPI.
  MpiRuntime runtime_;
  std::unique_ptr<Communicator> host_, device_;
  std::unique_ptr<OutputLock> output_lock_;
  at::Device device_placement_{at::kCPU};
};

}  // namespace dpo
